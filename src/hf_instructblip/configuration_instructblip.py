"""Configurations of InstructBLIP (Dai et al. 2023, arXiv 2305.06500).

One config per trained tower we own (the Q-Former) plus a composite config whose ``vision_config`` and
``text_config`` are *any* transformers vision model / language model config, resolved through ``AutoConfig``.

This file is also pushed next to the weights for ``trust_remote_code=True`` loading, so it imports nothing from
the ``hf_instructblip`` package.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

if TYPE_CHECKING:
    from transformers import EfficientNetConfig

__all__ = ["InstructBlipConfig", "InstructBlipQFormerConfig", "is_feature_map_tower", "vision_feature_width"]

#: model_type of transformers' own InstructBLIP config, whose checkpoints this package loads unchanged.
TRANSFORMERS_MODEL_TYPE = "instructblip"


# ----- vision towers: token towers (B, N, D) and feature-map towers (B, C, H, W) -------------------------------------
def _feature_map_widths(vision_config: PreTrainedConfig) -> tuple[int, ...] | None:
    """Channels of each feature map of a convolutional tower, in `vision_feature_layer` order; None: a token tower.

    The maps are the tower's ``hidden_states`` (the stem's output, then each block or stage), followed by its
    ``last_hidden_state`` where that is one more layer (EfficientNet's top convolution); so ``-1`` is always the
    tower's output. A CNN family not listed here (no ``hidden_size``, but ``hidden_sizes``) is known by its output
    alone.
    """
    kind = vision_config.model_type
    if kind == "efficientnet":
        from transformers.models.efficientnet.modeling_efficientnet import round_filters

        config = cast("EfficientNetConfig", vision_config)
        blocks = [
            round_filters(config, channels)
            for channels, repeats in zip(config.out_channels, config.num_block_repeats)
            for _ in range(math.ceil(config.depth_coefficient * repeats))  # EfficientNetEncoder's rounding
        ]
        return (round_filters(config, 32), *blocks, config.hidden_dim)
    if kind in ("convnext", "convnextv2"):
        return (vision_config.hidden_sizes[0], *vision_config.hidden_sizes)
    if kind == "resnet":
        return (vision_config.embedding_size, *vision_config.hidden_sizes)
    if getattr(vision_config, "hidden_size", None) is None and getattr(vision_config, "hidden_sizes", None):
        return (vision_config.hidden_sizes[-1],)
    return None


def is_feature_map_tower(vision_config: PreTrainedConfig) -> bool:
    """Whether the tower's features are ``(B, C, H, W)`` maps (EfficientNet, ConvNeXt, ResNet, ...), not tokens."""
    return _feature_map_widths(vision_config) is not None


def vision_feature_width(vision_config: PreTrainedConfig, vision_feature_layer: int = -1) -> int:
    """Width of the features the Q-Former cross-attends to: a token tower's ``hidden_size``, a map's channels.

    Raises:
        ValueError: ``vision_feature_layer`` does not name one of a feature-map tower's maps.
    """
    widths = _feature_map_widths(vision_config)
    if widths is None:
        return vision_config.hidden_size
    if not -len(widths) <= vision_feature_layer < len(widths):
        raise ValueError(
            f"vision_feature_layer={vision_feature_layer} does not name a feature map of the "
            f"{vision_config.model_type!r} vision tower: it has {len(widths)}, indexed {-len(widths)}..-1 "
            "(-1: its output)."
        )
    return widths[vision_feature_layer]


class InstructBlipQFormerConfig(PreTrainedConfig):
    r"""Configuration of the instruction-aware Q-Former (a BERT encoder with cross-attention to the image).

    Defaults describe the Q-Former of the released InstructBLIP models: BERT-base, 12 layers of width 768,
    cross-attention to the image every 2nd layer, and the bert-base-uncased vocabulary plus ``[DEC]`` (30523).

    Args:
        vocab_size: Size of the Q-Former tokenizer's vocabulary.
        hidden_size: Width of the Q-Former (and of the query tokens).
        num_hidden_layers: Number of Q-Former layers.
        num_attention_heads: Attention heads per layer (self- and cross-attention).
        intermediate_size: Width of the feed-forward blocks (query and text blocks alike).
        hidden_act: Activation of the feed-forward blocks.
        hidden_dropout_prob: Dropout after embeddings, attention outputs and feed-forward outputs.
        attention_probs_dropout_prob: Dropout on attention probabilities.
        max_position_embeddings: Longest instruction the Q-Former can embed.
        initializer_range: Standard deviation of the normal initialiser.
        layer_norm_eps: Epsilon of every LayerNorm.
        pad_token_id: Id of the Q-Former tokenizer's padding token.
        cross_attention_frequency: Layer ``i`` cross-attends to the image when ``i % cross_attention_frequency == 0``.
        encoder_hidden_size: Width of the image features; set from ``vision_config`` by [`InstructBlipConfig`].

    Example:

    ```python
    >>> from hf_instructblip import InstructBlipQFormerConfig
    >>> config = InstructBlipQFormerConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12)
    >>> config.cross_attention_frequency
    2
    ```
    """

    model_type = "hf_instructblip_qformer"
    base_config_key = "qformer_config"

    vocab_size: int = 30523
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    cross_attention_frequency: int = 2
    encoder_hidden_size: int = 1408

    def __post_init__(self, **kwargs):
        # Configs written by transformers' port carry their own model_type; the class decides ours.
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"qformer_config: hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})."
            )
        if self.cross_attention_frequency < 1:
            raise ValueError(
                f"qformer_config: cross_attention_frequency must be >= 1, got {self.cross_attention_frequency}."
            )


class InstructBlipConfig(PreTrainedConfig):
    r"""Composite configuration: vision tower -> Q-Former -> projection -> language model.

    Args:
        vision_config: Config of any transformers vision model (``model_type`` picks the class through
            ``AutoConfig``): the InstructBLIP/BLIP-2 ViT (the default), CLIP or SigLIP vision towers, ViT, DINOv2,
            or a CNN whose output is a feature map (EfficientNet, ConvNeXt, ResNet, ...).
        qformer_config: [`InstructBlipQFormerConfig`] or a dict of its fields.
        text_config: Config of any causal or sequence-to-sequence language model (default: a T5 config, the
            FlanT5 family of the paper).
        num_query_tokens: Number of learned query tokens, i.e. visual tokens the LLM receives per image/frame.
        image_token_index: Id of the image placeholder token in the LLM vocabulary. Each image (or frame) needs
            exactly ``num_query_tokens`` of them in ``input_ids``.
        vision_feature_layer: Which hidden state of the vision tower feeds the Q-Former (``-1``: the last
            layer, ``-2``: the penultimate, ...). The tower's output LayerNorm is applied to it (LAVIS
            ``ln_vision``), so ``-1`` reproduces the released checkpoints. A tower whose output is a feature map
            ``(B, C, H, W)`` (EfficientNet, ConvNeXt, ResNet, ...) gives ``H * W`` tokens of width ``C``, normalised
            by a LayerNorm the model owns (``vision_layernorm``); its maps are its ``hidden_states`` (the stem's
            output, then each block or stage) followed by ``last_hidden_state`` where that is one more layer, so
            ``-1`` is the tower's output: EfficientNet-Lite0's top convolution, 1280 x 7 x 7 at 224 px; ``-7`` its
            last 14 x 14 block, 112 channels; ConvNeXt and ResNet: ``-1`` the last stage, ``-2`` the one before.
        qformer_text_input: ``True`` (InstructBLIP): the instruction is fed to the Q-Former next to the queries.
            ``False`` (BLIP-2, the paper's "w/o instruction-aware visual features" ablation): the Q-Former never
            sees the instruction.
        initializer_factor: Kept for compatibility with transformers' InstructBLIP configs.
        initializer_range: Standard deviation of the normal initialiser of the query tokens and the projection.

    Example:

    ```python
    >>> from hf_instructblip import InstructBlipConfig
    >>> config = InstructBlipConfig(
    ...     vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 2,
    ...                    "num_attention_heads": 4, "intermediate_size": 64, "image_size": 30, "patch_size": 2},
    ...     qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64},
    ...     text_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    ...                  "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 100},
    ...     num_query_tokens=4, image_token_index=99,
    ... )
    >>> config.qformer_config.encoder_hidden_size, config.use_decoder_only_language_model
    (32, True)
    ```
    """

    model_type = "hf_instructblip"
    attribute_map = {"image_token_id": "image_token_index"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="instructblip_vision_model"),
        "qformer_config": SubConfigSpec(config_class=InstructBlipQFormerConfig),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="t5"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    image_token_index: int | None = None
    vision_feature_layer: int = -1
    qformer_text_input: bool = True
    initializer_factor: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        # A config written by transformers' InstructBLIP says model_type "instructblip"; this class decides ours.
        kwargs.pop("model_type", None)
        kwargs.pop("use_decoder_only_language_model", None)  # derived below, never trusted from disk
        if isinstance(self.qformer_config, PreTrainedConfig) and not isinstance(
            self.qformer_config, InstructBlipQFormerConfig
        ):
            self.qformer_config = self.qformer_config.to_dict()
        super().__post_init__(**kwargs)
        if self.num_query_tokens < 1:
            raise ValueError(f"num_query_tokens must be >= 1, got {self.num_query_tokens}.")
        # Derived fields, set in this one place.
        self.qformer_config.encoder_hidden_size = vision_feature_width(self.vision_config, self.vision_feature_layer)
        self.use_decoder_only_language_model = not self.text_config.is_encoder_decoder

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        # transformers' InstructBLIP layout (the official Salesforce checkpoints) is ours with other names.
        if config_dict.get("model_type") == TRANSFORMERS_MODEL_TYPE:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @property
    def vision_features_are_maps(self) -> bool:
        """Whether the vision tower gives feature maps ``(B, C, H, W)`` (a CNN) rather than tokens ``(B, N, D)``."""
        return is_feature_map_tower(self.vision_config)  # type: ignore[arg-type]  # a config after __post_init__

    @property
    def num_visual_tokens_per_image(self) -> int:
        """Visual tokens the LLM receives for one image or video frame."""
        return self.num_query_tokens
