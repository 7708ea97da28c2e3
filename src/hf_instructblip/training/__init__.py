"""Instruction tuning: the paper's recipe as `TrainingArguments` defaults and a `Trainer` subclass."""

from .arguments import InstructBlipTrainingArguments
from .feature_cache import MissingFeaturesError, VisionFeatureCache
from .lora import LORA_TARGETS, InstructBlipPeftModel, apply_lora, load_adapter, lora_config, lora_target_modules
from .trainer import InstructBlipTrainer

__all__ = [
    "LORA_TARGETS",
    "InstructBlipPeftModel",
    "InstructBlipTrainer",
    "InstructBlipTrainingArguments",
    "MissingFeaturesError",
    "VisionFeatureCache",
    "apply_lora",
    "load_adapter",
    "lora_config",
    "lora_target_modules",
]
