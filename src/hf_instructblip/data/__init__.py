"""Instruction data: the unified schema, templates, the 26-dataset registry, mixtures, the collator, synthetic tasks."""

from .schema import (
    INSTRUCTION_FEATURES,
    TASK_FAMILIES,
    BadSampleError,
    BadSampleReport,
    make_sample,
    validate_sample,
)

__all__ = [
    "INSTRUCTION_FEATURES",
    "TASK_FAMILIES",
    "BadSampleError",
    "BadSampleReport",
    "make_sample",
    "validate_sample",
]
