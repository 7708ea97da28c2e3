"""Instruction tuning: the paper's recipe as `TrainingArguments` defaults and a `Trainer` subclass."""

from ..data.feature_cache import MissingFeaturesError, VisionFeatureCache  # cached features are data; kept here too
from .arguments import DataArguments, InstructBlipTrainingArguments, ModelArguments
from .config import parse_config
from .lora import (
    LORA_TARGETS,
    InstructBlipPeftModel,
    apply_lora,
    llm_linear_layers,
    load_adapter,
    lora_config,
    lora_target_modules,
)
from .run import TrainRunOutput, run_from_config, train
from .trainer import InstructBlipTrainer

__all__ = [
    "LORA_TARGETS",
    "DataArguments",
    "InstructBlipPeftModel",
    "InstructBlipTrainer",
    "InstructBlipTrainingArguments",
    "MissingFeaturesError",
    "ModelArguments",
    "TrainRunOutput",
    "VisionFeatureCache",
    "apply_lora",
    "llm_linear_layers",
    "load_adapter",
    "lora_config",
    "lora_target_modules",
    "parse_config",
    "run_from_config",
    "train",
]
