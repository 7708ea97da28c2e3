"""Instruction tuning: the paper's recipe as `TrainingArguments` defaults and a `Trainer` subclass."""

from .arguments import InstructBlipTrainingArguments
from .feature_cache import MissingFeaturesError, VisionFeatureCache
from .trainer import InstructBlipTrainer

__all__ = ["InstructBlipTrainer", "InstructBlipTrainingArguments", "MissingFeaturesError", "VisionFeatureCache"]
