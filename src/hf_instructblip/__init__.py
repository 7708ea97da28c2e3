"""hf_instructblip: InstructBLIP (Dai et al. 2023) as a first-class citizen of the Hugging Face stack."""

from transformers import AutoConfig

from .configuration_instructblip import InstructBlipConfig, InstructBlipQFormerConfig
from .modeling_instructblip import (
    InstructBlipForConditionalGeneration,
    InstructBlipForConditionalGenerationModelOutput,
    InstructBlipImageFeatures,
    InstructBlipPreTrainedModel,
)
from .modeling_qformer import InstructBlipQFormerModel

__version__ = "0.1.0"

# The one place that registers this package with transformers' Auto classes.
AutoConfig.register(InstructBlipConfig.model_type, InstructBlipConfig)
AutoConfig.register(InstructBlipQFormerConfig.model_type, InstructBlipQFormerConfig)

__all__ = [
    "InstructBlipConfig",
    "InstructBlipForConditionalGeneration",
    "InstructBlipForConditionalGenerationModelOutput",
    "InstructBlipImageFeatures",
    "InstructBlipPreTrainedModel",
    "InstructBlipQFormerConfig",
    "InstructBlipQFormerModel",
]
