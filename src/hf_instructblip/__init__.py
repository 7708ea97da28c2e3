"""hf_instructblip: InstructBLIP (Dai et al. 2023) as a first-class citizen of the Hugging Face stack."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from .configuration_instructblip import InstructBlipConfig, InstructBlipQFormerConfig
from .image_processing_instructblip import InstructBlipImageProcessor, to_rgb_image
from .modeling_instructblip import (
    InstructBlipForConditionalGeneration,
    InstructBlipForConditionalGenerationModelOutput,
    InstructBlipImageFeatures,
    InstructBlipPreTrainedModel,
)
from .modeling_qformer import InstructBlipQFormerModel
from .processing_instructblip import HfInstructBlipProcessor, InstructBlipProcessor

__version__ = "0.1.0"

# The one place that registers this package with transformers' Auto classes. transformers' mappings also match
# config classes by name, and ours shares its name with transformers' InstructBlipConfig: `exist_ok=True` puts
# our classes first for our config (registered entries take precedence over name matches).
AutoConfig.register(InstructBlipConfig.model_type, InstructBlipConfig)
AutoConfig.register(InstructBlipQFormerConfig.model_type, InstructBlipQFormerConfig)
AutoModel.register(InstructBlipConfig, InstructBlipForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(InstructBlipConfig, InstructBlipForConditionalGeneration, exist_ok=True)
# Straight into the mapping: `AutoImageProcessor.register` would merge in the name-matched transformers entry (BLIP's
# torchvision image processor) as the "torchvision" backend of our config.
IMAGE_PROCESSOR_MAPPING.register(
    InstructBlipConfig,
    {"pil": InstructBlipImageProcessor, "torchvision": InstructBlipImageProcessor},  # type: ignore[arg-type]  # v5 maps backends
    exist_ok=True,
)
AutoProcessor.register(InstructBlipConfig, HfInstructBlipProcessor, exist_ok=True)
# ... and marks the classes so that saved folders carry their code (`trust_remote_code=True` without this package).
InstructBlipConfig.register_for_auto_class()
InstructBlipForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
InstructBlipImageProcessor.register_for_auto_class("AutoImageProcessor")
HfInstructBlipProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "HfInstructBlipProcessor",
    "InstructBlipConfig",
    "InstructBlipForConditionalGeneration",
    "InstructBlipForConditionalGenerationModelOutput",
    "InstructBlipImageFeatures",
    "InstructBlipImageProcessor",
    "InstructBlipPreTrainedModel",
    "InstructBlipProcessor",
    "InstructBlipQFormerConfig",
    "InstructBlipQFormerModel",
    "to_rgb_image",
]
