"""The vision tower's side of InstructBLIP: which class a vision config builds, its output LayerNorm, its tokens.

Any transformers vision model can be the tower. A token tower (the InstructBLIP/BLIP-2 ViT, CLIP, SigLIP, ViT,
DINOv2) gives hidden states ``(B, N, D)`` and ends in a LayerNorm, which InstructBLIP applies to the chosen hidden
state and trains (LAVIS ``ln_vision``; the released checkpoints keep it in the tower as ``post_layernorm``). A
feature-map tower (EfficientNet, ConvNeXt, ResNet, ...) gives ``(B, C, H, W)``: its ``H * W`` positions become the
visual tokens, and the composite model owns the LayerNorm over their ``C`` channels, as BLIP-2 puts one on any tower
(LAVIS `blip2.py` `init_vision_encoder`: ``ln_vision = LayerNorm(visual_encoder.num_features)``).

Pushed next to the weights for ``trust_remote_code``: it imports nothing from the ``hf_instructblip`` package outside
its sibling files.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel
from transformers.modeling_utils import PreTrainedModel
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel
from transformers.models.instructblip.modeling_instructblip import InstructBlipVisionModel

__all__ = ["find_vision_norm", "tower_dtype", "vision_model_from_config", "vision_tokens"]

# Vision towers that transformers' AutoModel does not map from their config's model_type.
_VISION_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "instructblip_vision_model": InstructBlipVisionModel,
    "blip_2_vision_model": Blip2VisionModel,
}
# Names of a vision tower's final LayerNorm, in order of preference (BLIP/CLIP/SigLIP, then ViT/DINOv2, ...).
_VISION_NORM_NAMES = ("post_layernorm", "layernorm", "norm", "ln_post")


def vision_model_from_config(config) -> PreTrainedModel:
    """Instantiate (randomly initialised) the vision tower described by ``config``."""
    cls = _VISION_MODEL_CLASSES.get(config.model_type)
    if cls is not None:
        return cls._from_config(config)
    return AutoModel.from_config(config)


def find_vision_norm(vision_model: nn.Module) -> str | None:
    """Dotted name of a token tower's output LayerNorm (LAVIS ``ln_vision``), or None where it has none."""
    norms = {
        name: module
        for name, module in vision_model.named_modules()
        if isinstance(module, nn.LayerNorm) and ".head." not in f".{name}."
    }
    for wanted in _VISION_NORM_NAMES:
        matches = sorted((n for n in norms if n.rsplit(".", 1)[-1] == wanted), key=len)
        if matches:
            return matches[0]
    return None


def tower_dtype(vision_model: nn.Module) -> torch.dtype:
    """The dtype the tower computes in: its first floating parameter's (its output LayerNorm may be held in fp32)."""
    return next(p.dtype for p in vision_model.parameters() if p.is_floating_point())


def vision_tokens(
    vision_model: nn.Module,
    pixel_values: torch.Tensor,
    vision_feature_layer: int,
    feature_map: bool,
    interpolate_pos_encoding: bool = False,
) -> torch.Tensor:
    """The tower's features as tokens, ``(N_img, C, H, W)`` pixels -> ``(N_img, N, D)``, before the output LayerNorm.

    Token towers: hidden state ``vision_feature_layer``. Feature-map towers (``feature_map``): map
    ``vision_feature_layer`` of ``(*hidden_states, last_hidden_state)``, the last only where it is one more layer
    (EfficientNet's top convolution), flattened to ``H * W`` tokens of width ``C`` in row-major order. A feature
    map has no position embeddings to interpolate: any image size works, ``interpolate_pos_encoding`` is ignored.
    The pixels enter the tower in its dtype (a tower held in half precision, `modeling_precision`, gets them so).
    """
    pixel_values = pixel_values.to(tower_dtype(vision_model))
    if not feature_map:
        kwargs = {"interpolate_pos_encoding": True} if interpolate_pos_encoding else {}
        outputs = vision_model(pixel_values=pixel_values, output_hidden_states=True, return_dict=True, **kwargs)
        return outputs.hidden_states[vision_feature_layer]
    hidden = vision_feature_layer != -1  # -1 is the output: the other maps need not be kept
    outputs = vision_model(pixel_values=pixel_values, output_hidden_states=hidden, return_dict=True)
    maps = outputs.last_hidden_state
    if hidden:
        stages = tuple(outputs.hidden_states)
        last = outputs.last_hidden_state
        if not (stages[-1] is last or (stages[-1].shape == last.shape and torch.equal(stages[-1], last))):
            stages = (*stages, last)
        maps = stages[vision_feature_layer]
    if maps.ndim != 4:
        raise ValueError(
            f"The {type(vision_model).__name__} vision tower gave features of shape {tuple(maps.shape)}; its config "
            "says feature maps (B, C, H, W)."
        )
    # contiguous: a feature cache stores each image's rows, and a strided view cannot be saved
    return maps.flatten(2).transpose(1, 2).contiguous()  # (N_img, C, H, W) -> (N_img, H*W, C)
