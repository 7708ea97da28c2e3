"""Instruction data: the unified schema, templates, the 26-dataset registry, mixtures, the collator, synthetic tasks,
and the cache of frozen vision features."""

from .collator import IGNORE_INDEX, InstructBlipDataCollator
from .custom import to_instruction_dataset
from .feature_cache import MissingFeaturesError, VisionFeatureCache
from .mixture import BalancedMixtureSampler, concatenate_mixture, interleave_mixture, mixture_weights
from .registry import HELD_IN, HELD_OUT, REGISTRY, DatasetSpec, convert_dataset, get_spec, load_instruction_dataset
from .schema import (
    INSTRUCTION_FEATURES,
    TASK_FAMILIES,
    BadSampleError,
    BadSampleReport,
    make_sample,
    validate_sample,
)
from .synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_dataset, synthetic_iterable, synthetic_mixture
from .templates import TEMPLATES, render_instruction, sample_template

__all__ = [
    "HELD_IN",
    "HELD_OUT",
    "IGNORE_INDEX",
    "INSTRUCTION_FEATURES",
    "REGISTRY",
    "SYNTHETIC_HELD_IN",
    "SYNTHETIC_HELD_OUT",
    "TASK_FAMILIES",
    "TEMPLATES",
    "BadSampleError",
    "BadSampleReport",
    "BalancedMixtureSampler",
    "DatasetSpec",
    "InstructBlipDataCollator",
    "MissingFeaturesError",
    "VisionFeatureCache",
    "concatenate_mixture",
    "convert_dataset",
    "get_spec",
    "interleave_mixture",
    "load_instruction_dataset",
    "make_sample",
    "mixture_weights",
    "render_instruction",
    "sample_template",
    "synthetic_dataset",
    "synthetic_iterable",
    "synthetic_mixture",
    "to_instruction_dataset",
    "validate_sample",
]
