"""InstructBLIP (Dai et al. 2023, arXiv 2305.06500): vision tower -> instruction-aware Q-Former -> projection -> LLM.

The forward pass, as in the paper (arXiv 2305.06500 §2.3, Figure 3):

1. the (frozen) vision tower encodes each image or video frame; the tower's output LayerNorm (``ln_vision``,
   trained) is applied to the chosen hidden state (a feature map ``(C, H, W)`` gives ``H * W`` tokens and a
   LayerNorm of the model's own: see `modeling_vision.py`);
2. the Q-Former reads ``[learned queries ; instruction]`` and cross-attends to the image: *difference with BLIP-2
   here*, the instruction reaches the Q-Former, so the visual features depend on the task;
3. a linear projection maps the query outputs to the LLM width; they replace the image placeholder tokens in the
   LLM input (``num_query_tokens`` per image/frame);
4. the (frozen) LLM, causal or encoder-decoder, produces the answer.

Module and parameter names follow transformers' ``InstructBlipForConditionalGeneration`` so the released
checkpoints load with no missing or unexpected keys. This file is pushed next to the weights for
``trust_remote_code``; it imports nothing from the ``hf_instructblip`` package outside its sibling files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, ModelOutput
from transformers.modeling_utils import PreTrainedModel

from .configuration_instructblip import InstructBlipConfig
from .generation_instructblip import fit_causal_prompts, llm_window, merged_generation_config
from .modeling_precision import hold_frozen_in
from .modeling_qformer import InstructBlipQFormerModel, InstructBlipQFormerModelOutput
from .modeling_vision import _VISION_MODEL_CLASSES as _VISION_MODEL_CLASSES  # re-exported for building/conversion
from .modeling_vision import find_vision_norm, vision_model_from_config, vision_tokens

__all__ = [
    "InstructBlipForConditionalGeneration",
    "InstructBlipForConditionalGenerationModelOutput",
    "InstructBlipImageFeatures",
    "InstructBlipLanguageBackbone",
    "InstructBlipPreTrainedModel",
]

# Causal LLM families whose logits are exactly `get_output_embeddings()(base_model(...).last_hidden_state)`: no
# logit scaling, soft-capping or auxiliary loss. For these, training computes the head only at the target positions.
_PLAIN_HEAD_FAMILIES = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "smollm3", "gemma", "phi3", "olmo2", "gpt2", "opt", "gpt_neox"}
)


@dataclass
class InstructBlipImageFeatures(ModelOutput):
    """What the LLM receives for the images of a batch.

    Args:
        pooler_output: ``(B, T * Q, D_llm)`` projected query outputs, ``T`` images/frames of ``Q`` tokens each.
        image_embeds: ``(B, T, N, D_vision)`` vision-tower features before the output LayerNorm (what
            ``image_embeds=`` accepts and a feature cache stores).
        qformer_outputs: The Q-Former's output, ``last_hidden_state`` of shape ``(B * T, Q, D_qformer)``.
    """

    pooler_output: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    qformer_outputs: InstructBlipQFormerModelOutput | None = None


@dataclass
class InstructBlipForConditionalGenerationModelOutput(ModelOutput):
    """Output of [`InstructBlipForConditionalGeneration`].

    Args:
        loss: Language-modelling loss on the ``labels`` positions (returned when ``labels`` is given).
        logits: The LLM's prediction scores.
        image_features: ``(B, T * Q, D_llm)`` visual tokens given to the LLM.
        language_model_outputs: The LLM's full output (past key values, hidden states, ...).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    language_model_outputs: ModelOutput | None = None


def _unsharded_class(cls: type) -> type:
    """``cls`` itself, or for a module FSDP2 sharded (an instance of ``FSDP<Name>(FSDPModule, <Name>)``) ``<Name>``."""
    if not torch.distributed.is_available():
        return cls
    from torch.distributed.fsdp import FSDPModule

    return next(base for base in cls.__mro__ if not issubclass(base, FSDPModule))


class InstructBlipPreTrainedModel(PreTrainedModel):
    config: InstructBlipConfig
    config_class = InstructBlipConfig
    base_model_prefix = "instructblip"
    main_input_name = "pixel_values"
    input_modalities = ["image", "text"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _keep_in_fp32_modules = ["query_tokens"]
    _no_split_modules = ["QFormerLayer", "QFormerEmbeddings"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, InstructBlipForConditionalGeneration):
            # LAVIS `blip2.py` `init_Qformer`: query tokens start as normal(0, 0.02).
            nn.init.normal_(module.query_tokens, mean=0.0, std=self.config.initializer_range)


class InstructBlipLanguageBackbone(nn.Module):
    """``model.base_model``: InstructBLIP without the LLM's output head (images + text -> last hidden states).

    Trainers that apply the output head themselves, such as TRL's fused LM head (``SFTTrainer`` calls
    ``model.base_model(**inputs).last_hidden_state`` and projects it with ``model.get_output_embeddings()``),
    then train InstructBLIP like any causal LM. A view: it holds no weights and is not a submodule, so parameter
    names and checkpoints are unchanged.
    """

    _tp_plan = None  # read through `base_model` by PreTrainedModel.supports_tp_plan / supports_pp_plan
    _pp_plan = None

    def __init__(self, model: InstructBlipForConditionalGeneration):
        super().__init__()
        self._owner = (model,)  # a tuple, so nn.Module does not register the model as a submodule of its view

    def forward(self, *args, **kwargs) -> BaseModelOutputWithPast:
        return self._owner[0].language_model_hidden_states(*args, **kwargs)


class InstructBlipForConditionalGeneration(InstructBlipPreTrainedModel, GenerationMixin):
    """InstructBLIP for instruction-following generation: any vision tower, the Q-Former, any LLM.

    Example:

    ```python
    >>> from hf_instructblip import InstructBlipForConditionalGeneration
    >>> model = InstructBlipForConditionalGeneration.from_pretrained("Salesforce/instructblip-flan-t5-xl")  # doctest: +SKIP
    >>> out = model.generate(**inputs, max_new_tokens=20)  # doctest: +SKIP
    ```
    """

    #: Trained by default (arXiv 2305.06500 §2.6): everything else, i.e. the vision tower and the LLM, is frozen.
    #: The vision tower's output LayerNorm is added per tower (see `trainable_module_names`).
    _trainable_modules: tuple[str, ...] = ("query_tokens", "qformer", "language_projection")
    #: `forward` divides the summed loss by ``num_items_in_batch`` when given, on every path (see
    #: `_loss_per_item`): transformers' `Trainer` then passes it and does not divide by the accumulation steps again.
    accepts_loss_kwargs = True

    def __init__(self, config: InstructBlipConfig):
        super().__init__(config)
        self.vision_model = vision_model_from_config(config.vision_config)
        tower_norm = None if config.vision_features_are_maps else find_vision_norm(self.vision_model)
        if tower_norm is None:
            # LAVIS `blip2.py` `ln_vision`, for a tower without a final LayerNorm (a feature map: over its channels)
            self.vision_layernorm = nn.LayerNorm(config.qformer_config.encoder_hidden_size)
        #: Dotted name of the LayerNorm applied to the vision features (trained, unlike the rest of the tower).
        self.vision_norm_name = "vision_layernorm" if tower_norm is None else f"vision_model.{tower_norm}"
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = InstructBlipQFormerModel._from_config(config.qformer_config)
        self.language_projection = nn.Linear(config.qformer_config.hidden_size, config.text_config.hidden_size)
        lm_class = AutoModelForCausalLM if config.use_decoder_only_language_model else AutoModelForSeq2SeqLM
        self.language_model = lm_class.from_config(config.text_config)
        # Tells transformers' Trainer how to count `num_items_in_batch`: a causal LLM's labels are shifted (label 0 is
        # never predicted: count `labels[..., 1:]`), an encoder-decoder's decoder predicts every label, unshifted, as
        # `ForMaskedLMLoss` does (count them all; with the class-name default, "ForConditionalGeneration" -> causal,
        # Trainer would drop each sample's first target token from the count).
        self.loss_type = "ForCausalLM" if config.use_decoder_only_language_model else "ForMaskedLM"
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As `PreTrainedModel.from_pretrained`, but safetensors only: pickled weights are refused."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False is not supported: hf_instructblip loads safetensors weights only.")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As `PreTrainedModel.save_pretrained`; with remote code, `AutoModel` is mapped too (next to the auto class)."""
        sharded_class, plain_class = type(self), _unsharded_class(type(self))
        if plain_class is not sharded_class:
            # FSDP2's fully_shard made this an instance of torch's subclass FSDP<Name>: the remote code written next
            # to the weights would be torch's FSDP files, and auto_map would name that class.
            self.__class__ = plain_class
            try:
                return self.save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.__class__ = sharded_class
        if self._auto_class is not None:
            entry = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModel": entry}
        return super().save_pretrained(save_directory, *args, **kwargs)

    # ----- plumbing expected of a transformers model -------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.language_model.set_output_embeddings(new_embeddings)

    def get_encoder(self, modality: str | None = None):
        return self.language_model.get_encoder() if modality is None else super().get_encoder(modality=modality)

    def get_decoder(self):
        return self.language_model.get_decoder()

    @property
    def base_model(self) -> nn.Module:
        """The model without the LLM's output head: see [`InstructBlipLanguageBackbone`]."""
        return InstructBlipLanguageBackbone(self)

    # ----- trainable-parameter policy --------------------------------------------------------------------------
    def trainable_module_names(self) -> tuple[str, ...]:
        """Names of the modules/parameters trained by default: Q-Former, queries, projection, vision LayerNorm."""
        return (*self._trainable_modules, self.vision_norm_name)

    def unused_qformer_modules(self) -> tuple[str, ...]:
        """Q-Former parts that cannot reach the output, so they get no gradient and stay frozen.

        The last layer's text feed-forward block (its text outputs are dropped; the layer does not compute it) and,
        for a BLIP-2-style Q-Former that never reads the instruction, the text embeddings and every text FFN.
        Frozen, they do not trip DDP's unused-parameter check and weight decay does not move them.
        """
        last = self.config.qformer_config.num_hidden_layers - 1
        layers = range(last + 1) if not self.config.qformer_text_input else [last]
        unused = [f"qformer.encoder.layer.{i}.{block}" for i in layers for block in ("intermediate", "output")]
        if not self.config.qformer_text_input:
            unused += ["qformer.embeddings.word_embeddings", "qformer.embeddings.position_embeddings"]
        return tuple(unused)

    def is_trainable_by_default(self, parameter_name: str) -> bool:
        """Whether ``parameter_name`` (as in ``named_parameters()``) is trained by the paper's recipe."""

        def within(modules: tuple[str, ...]) -> bool:
            return any(parameter_name == m or parameter_name.startswith(m + ".") for m in modules)

        return within(self.trainable_module_names()) and not within(self.unused_qformer_modules())

    def apply_trainable_policy(self) -> list[str]:
        """Freeze the vision tower and the LLM, train the rest (arXiv 2305.06500 §2.6); return the trainable names."""
        trainable = []
        for name, param in self.named_parameters():
            param.requires_grad_(self.is_trainable_by_default(name))
            if param.requires_grad:
                trainable.append(name)
        return trainable

    def train(self, mode: bool = True):
        """As `nn.Module.train`, but a frozen vision tower (no parameter requiring grad) stays in eval mode.

        LAVIS `blip2.py` (``disabled_train``) does the same: a frozen tower's BatchNorm keeps its running statistics
        (a CNN's would otherwise normalise by each batch and overwrite them) and its dropout stays off, so training
        sees the features `get_vision_features` gives at inference and a feature cache stores.
        """
        super().train(mode)
        if mode and not any(param.requires_grad for param in self.vision_model.parameters()):
            self.vision_model.eval()
        return self

    def hold_frozen_in(self, dtype: str | torch.dtype) -> torch.dtype:
        """Store the frozen vision tower and LLM in ``dtype``, the trained parts in fp32, as LAVIS runs the paper.

        ``dtype``: ``"auto"`` (bf16 where the hardware runs it natively, see `modeling_precision`), ``"bfloat16"``,
        ``"float16"`` (refused for T5) or ``"float32"``, or a torch dtype. Returns the dtype used.
        """
        return hold_frozen_in(self, dtype)

    # ----- step 1-3: images -> visual tokens for the LLM ----------------------------------------------------------
    def get_vision_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """Frozen part of the vision path: ``(N_img, C, H, W)`` -> ``(N_img, N, D_vision)``.

        Returns hidden state ``config.vision_feature_layer`` of the tower, *before* the output LayerNorm (which
        is trained); a feature-map tower's map ``(N_img, D_vision, h, w)`` as ``N = h * w`` tokens (see
        `modeling_vision.vision_tokens`). This is what ``image_embeds=`` accepts, so frozen features can be
        computed once and cached.
        """
        maps, layer = self.config.vision_features_are_maps, self.config.vision_feature_layer
        return vision_tokens(self.vision_model, pixel_values, layer, maps, interpolate_pos_encoding)

    def get_image_features(
        self,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> InstructBlipImageFeatures:
        r"""Images (or precomputed vision features) + instruction -> visual tokens for the LLM.

        Args:
            pixel_values: ``(B, C, H, W)``, or ``(B, T, C, H, W)`` for ``T`` images/frames per sample.
            qformer_input_ids: ``(B, L)`` instruction in the Q-Former tokenizer (ignored when
                ``config.qformer_text_input`` is False).
            qformer_attention_mask: ``(B, L)`` padding mask of ``qformer_input_ids``.
            image_embeds: Instead of ``pixel_values``: ``(B, N, D_vision)`` or ``(B, T, N, D_vision)`` from
                [`get_vision_features`]. Gives exactly the same result.
            interpolate_pos_encoding: Let the vision tower interpolate its position embeddings for other sizes.
        """
        if (pixel_values is None) == (image_embeds is None):
            raise ValueError("Pass exactly one of `pixel_values` and `image_embeds`.")
        if pixel_values is not None:
            if pixel_values.ndim not in (4, 5):
                raise ValueError(
                    f"pixel_values must have shape (B, C, H, W) or (B, T, C, H, W), got {tuple(pixel_values.shape)}."
                )
            frames = pixel_values if pixel_values.ndim == 5 else pixel_values[:, None]  # (B, T, C, H, W)
            batch_size, num_frames = frames.shape[:2]
            # step 1: frozen vision tower
            image_embeds = self.get_vision_features(frames.flatten(0, 1), interpolate_pos_encoding)
            image_embeds = image_embeds.unflatten(0, (batch_size, num_frames))  # (B, T, N, Dv)
        elif image_embeds is not None:
            if image_embeds.ndim not in (3, 4):
                raise ValueError(
                    "image_embeds must have shape (B, N, D_vision) or (B, T, N, D_vision), got "
                    f"{tuple(image_embeds.shape)}."
                )
            image_embeds = image_embeds if image_embeds.ndim == 4 else image_embeds[:, None]  # (B, T, N, Dv)
            batch_size, num_frames = image_embeds.shape[:2]

        vision_norm = self.get_submodule(self.vision_norm_name)
        norm_dtype = next(vision_norm.parameters()).dtype
        image_states = vision_norm(image_embeds.flatten(0, 1).to(norm_dtype))  # (B*T, N, Dv)

        # step 2: the Q-Former. Difference with BLIP-2 here: the instruction is fed to the Q-Former too.
        query_tokens = self.query_tokens.expand(batch_size * num_frames, -1, -1)  # (B*T, Q, Dq)
        text_ids = text_mask = None
        if self.config.qformer_text_input:
            if qformer_input_ids is None:
                raise ValueError(
                    "qformer_input_ids is required: the instruction tokenised with the Q-Former tokenizer. "
                    "(A BLIP-2-style model that ignores the instruction has config.qformer_text_input=False.)"
                )
            if qformer_input_ids.shape[0] != batch_size:
                raise ValueError(
                    f"qformer_input_ids has {qformer_input_ids.shape[0]} rows but there are {batch_size} samples "
                    "of images."
                )
            text_ids = qformer_input_ids.repeat_interleave(num_frames, dim=0)  # each frame sees the instruction
            if qformer_attention_mask is not None:
                text_mask = qformer_attention_mask.repeat_interleave(num_frames, dim=0)
        qformer_outputs = self.qformer(
            query_embeds=query_tokens,
            encoder_hidden_states=image_states,
            input_ids=text_ids,
            attention_mask=text_mask,
        )
        # step 3: project the query outputs to the LLM width; T frames -> T x Q visual tokens
        features = self.language_projection(qformer_outputs.last_hidden_state)  # (B*T, Q, D_llm)
        features = features.reshape(batch_size, num_frames * self.config.num_query_tokens, -1)  # (B, T*Q, D_llm)
        return InstructBlipImageFeatures(
            pooler_output=features, image_embeds=image_embeds, qformer_outputs=qformer_outputs
        )

    def merge_image_features(
        self, input_ids: torch.Tensor, image_features: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """LLM input embeddings with the image placeholder tokens of ``input_ids`` replaced by ``image_features``.

        Every sample must hold exactly as many placeholders as it has visual tokens (transformers' port silently
        misaligns the features otherwise), and no placeholder position may carry a label.
        """
        image_token = self.config.image_token_index
        if image_token is None:
            raise ValueError(
                "config.image_token_index is not set: the model cannot tell where the images go in input_ids."
            )
        if input_ids.shape[0] != image_features.shape[0]:
            raise ValueError(
                f"input_ids has {input_ids.shape[0]} samples but the images give features for "
                f"{image_features.shape[0]} samples."
            )
        placeholder = input_ids == image_token  # (B, S)
        counts = placeholder.sum(dim=-1)
        expected = image_features.shape[1]
        wrong = (counts != expected).nonzero()
        if wrong.numel():
            i = int(wrong[0, 0])
            raise ValueError(
                f"input_ids sample {i} holds {int(counts[i])} image placeholder tokens (id {image_token}) but its "
                f"images give {expected} visual tokens ({expected // self.config.num_query_tokens} image(s)/frame(s) "
                f"x {self.config.num_query_tokens} query tokens). Insert exactly {expected} placeholders (the "
                "processor does)."
            )
        if labels is not None and labels.shape == input_ids.shape and bool((labels[placeholder] != -100).any()):
            raise ValueError("labels must be -100 at image placeholder positions: the model cannot predict images.")
        inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, S, D_llm)
        return inputs_embeds.masked_scatter(placeholder[..., None], image_features.to(inputs_embeds.dtype))

    def _llm_inputs(
        self,
        pixel_values: torch.Tensor | None,
        qformer_input_ids: torch.Tensor | None,
        qformer_attention_mask: torch.Tensor | None,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        image_embeds: torch.Tensor | None,
        interpolate_pos_encoding: bool,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Steps 1-3 and the merge: (visual tokens, LLM input embeddings, checked attention mask)."""
        if input_ids is None:
            raise ValueError("input_ids is required: it says where the image tokens and the instruction go.")
        image = self.get_image_features(
            pixel_values, qformer_input_ids, qformer_attention_mask, image_embeds, interpolate_pos_encoding
        )
        features: torch.Tensor = image.pooler_output  # type: ignore[assignment]  # always set
        inputs_embeds = self.merge_image_features(input_ids, features, labels)
        return features, inputs_embeds, self._checked_attention_mask(input_ids, attention_mask)

    @staticmethod
    def _checked_attention_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is None:
            return torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must match."
            )
        return attention_mask

    # ----- step 4: the LLM ---------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_logits: bool | None = None,
        **kwargs,
    ) -> InstructBlipForConditionalGenerationModelOutput:
        r"""Images + instruction (+ target) -> LLM logits (and loss).

        Args:
            pixel_values: ``(B, C, H, W)`` or ``(B, T, C, H, W)``; or give ``image_embeds`` instead.
            qformer_input_ids: ``(B, L)`` instruction in the Q-Former tokenizer.
            qformer_attention_mask: ``(B, L)`` its padding mask.
            input_ids: ``(B, S)`` LLM input with ``T x num_query_tokens`` image placeholders per sample.
            attention_mask: ``(B, S)`` LLM padding mask.
            decoder_input_ids: Encoder-decoder LLMs only; derived from ``labels`` when omitted.
            decoder_attention_mask: Encoder-decoder LLMs only.
            labels: Causal LLMs: ``(B, S)`` aligned with ``input_ids``, -100 on image, prompt and padding positions.
                Encoder-decoder LLMs: ``(B, S_dec)`` target tokens.
            image_embeds: Precomputed [`get_vision_features`] output, ``(B, N, D)`` or ``(B, T, N, D)``.
            interpolate_pos_encoding: Let the vision tower interpolate its position embeddings.
            return_logits: Whether to return the logits when ``labels`` are given. Default: not in training mode.
                Without them a causal LLM of a plain-head family (Llama, Mistral, Qwen, SmolLM, Gemma, Phi-3,
                OLMo-2, GPT-2, OPT, GPT-NeoX) computes its output head and the loss at the target positions only,
                skipping the full-vocabulary logits of the image and prompt positions (same loss and gradients,
                less time and memory); ``logits`` is then None.
            kwargs: Passed on to the LLM (``use_cache``, ``past_key_values``, ``logits_to_keep``, ...), except
                ``num_items_in_batch``: the number of target tokens in the whole batch, over every micro-batch of a
                gradient-accumulation step and every process (transformers' `Trainer` passes it). The loss is then
                this call's summed token loss divided by it, for every LLM family, so the micro-batches' losses add
                up to the token mean of the whole batch however it is split. Without it: the mean over this call's
                target tokens.
        """
        decoder_only = self.config.use_decoder_only_language_model
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        features, inputs_embeds, attention_mask = self._llm_inputs(
            pixel_values,
            qformer_input_ids,
            qformer_attention_mask,
            input_ids,
            attention_mask,
            image_embeds,
            interpolate_pos_encoding,
            labels if decoder_only else None,
        )
        kwargs["return_dict"] = True
        if decoder_only:
            self._set_left_padding_positions(attention_mask, kwargs)
            if return_logits is None:
                return_logits = not self.training
            if labels is not None and not return_logits and self._has_plain_head(kwargs):
                loss = self._target_only_loss(inputs_embeds, attention_mask, labels, num_items_in_batch, **kwargs)
                return InstructBlipForConditionalGenerationModelOutput(loss=loss, image_features=features)
            outputs = self.language_model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
            )
        else:
            outputs = self.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                decoder_attention_mask=decoder_attention_mask,
                labels=labels,
                **kwargs,
            )
        loss = outputs.loss
        if loss is not None and labels is not None and not decoder_only and loss.dtype != torch.float32:
            # T5 computes its loss in the logits' dtype (bf16 with `hold_frozen_in`): ours is fp32
            loss = nn.functional.cross_entropy(outputs.logits.flatten(0, 1).float(), labels.flatten().to(loss.device))
        if loss is not None and labels is not None and num_items_in_batch is not None:
            loss = self._loss_per_item(loss, labels, num_items_in_batch)
        return InstructBlipForConditionalGenerationModelOutput(
            loss=loss,
            logits=outputs.logits,
            image_features=features,
            language_model_outputs=outputs,
        )

    @staticmethod
    def _set_left_padding_positions(attention_mask: torch.Tensor, kwargs: dict) -> None:
        cached = kwargs.get("past_key_values") is not None or kwargs.get("cache") is not None
        if "position_ids" not in kwargs and not cached and not bool(attention_mask[:, 0].all()):
            # Left padding: positions count real tokens only, so a padded sample sees what it sees alone.
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def language_model_hidden_states(
        self,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""Steps 1-4 without the output head: the causal LLM's ``last_hidden_state``, ``(B, S, D_llm)``.

        Takes [`forward`]'s inputs without labels; ``kwargs`` go to the LLM's body. Position ``t`` predicts token
        ``t + 1`` through ``get_output_embeddings()``, as in [`forward`].
        """
        if not self.config.use_decoder_only_language_model:
            raise ValueError(
                f"This model's LLM ({self.config.text_config.model_type}) is encoder-decoder: it has no causal hidden "
                "states to apply an output head to, so trainers with a fused LM head (TRL's SFTTrainer, ...) cannot "
                "train it. Use hf_instructblip's InstructBlipTrainer with InstructBlipDataCollator."
            )
        _, inputs_embeds, attention_mask = self._llm_inputs(
            pixel_values,
            qformer_input_ids,
            qformer_attention_mask,
            input_ids,
            attention_mask,
            image_embeds,
            interpolate_pos_encoding,
        )
        self._set_left_padding_positions(attention_mask, kwargs)
        kwargs["return_dict"] = True
        return self.language_model.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    def _has_plain_head(self, kwargs: dict) -> bool:
        if kwargs.get("logits_to_keep") or kwargs.get("use_cache") or kwargs.get("past_key_values") is not None:
            return False
        return self.config.text_config.model_type in _PLAIN_HEAD_FAMILIES

    def _loss_per_item(
        self, mean_loss: torch.Tensor, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int
    ) -> torch.Tensor:
        """The LLM's own loss, a mean over this call's ``n`` target tokens, as their sum over ``num_items_in_batch``.

        LAVIS (``tasks/base_task.py``) divides each micro-batch's mean loss by ``accum_grad_iters`` and DDP
        averages over the processes: the token mean of the whole batch only when every micro-batch holds as many
        target tokens. With targets of different lengths (captions, free-form answers) that weighs the tokens of
        short micro-batches more. Summing each token's loss and dividing by the whole batch's token count is the
        token-level generalisation: the same update and logged loss for any split into micro-batches and processes.
        ``mean * n / num_items`` is that sum (every transformers LLM's own loss is such a mean, including LLMs that
        ignore ``num_items_in_batch``, like T5); a call without targets adds 0 (its mean would be 0 / 0).
        """
        targets = labels[:, 1:] if self.config.use_decoder_only_language_model else labels  # causal: shifted
        count = (targets != -100).sum().to(mean_loss.device)
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(mean_loss.device)
        per_item = mean_loss.float() * count / num_items_in_batch
        return torch.where(count > 0, per_item, torch.zeros_like(per_item))

    def _target_only_loss(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """The causal LLM's loss, with its output head applied only where a label is predicted.

        Same value and gradients as the LLM's own loss (transformers' ``ForCausalLMLoss``: next-token cross-entropy
        in fp32, averaged over the label tokens, or summed and divided by ``num_items_in_batch`` as in
        `_loss_per_item`), without the ``(B, S, vocab)`` logits of the image and prompt positions.
        """
        for handled in ("return_dict", "use_cache"):
            kwargs.pop(handled, None)
        hidden = self.language_model.base_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, return_dict=True, **kwargs
        ).last_hidden_state  # (B, S, D)
        targets = labels[:, 1:].to(hidden.device)  # token t predicts label t + 1
        predicting = targets != -100  # (B, S - 1)
        logits = self.language_model.get_output_embeddings()(hidden[:, :-1][predicting])  # (N_targets, vocab)
        if num_items_in_batch is None:
            return nn.functional.cross_entropy(logits.float(), targets[predicting])
        loss = nn.functional.cross_entropy(logits.float(), targets[predicting], reduction="sum")
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        return loss / num_items_in_batch

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None = None,
        qformer_input_ids: torch.Tensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_embeds: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        penalize_prompt: bool = True,
        **generate_kwargs,
    ) -> torch.Tensor:
        r"""Generate the answer with the LLM's own `generate` (all its decoding strategies and options).

        Takes the same image/text inputs as [`forward`]. Without ``input_ids`` the prompt is just the image
        tokens (plus BOS for causal LLMs). Returns token ids: for causal LLMs the caller's ``input_ids`` come first,
        as with transformers' port, so ``processor.decode_generated`` cuts them off.

        Settings: this model's ``generation_config`` (``generation_config.json``; this package's folders carry the
        paper's), then the LLM's own for what it leaves unset; explicit arguments win over both. Causal LLMs: a
        right-padded batch is moved to left padding (each sample gets what it gets alone), and a prompt longer than
        the LLM's window (minus ``max_new_tokens``) loses the beginning of its text, with a warning
        (`generation_instructblip`).

        Args:
            penalize_prompt: Causal LLMs only: whether penalties that look at the tokens so far
                (``repetition_penalty``, ``no_repeat_ngram_size``, ...) count the prompt's tokens. ``True`` (the
                default, transformers' behaviour and its InstructBLIP port): the prompt's ``input_ids`` go to the
                LLM's ``generate`` with the embeddings. ``False`` (LAVIS, ``blip2_vicuna_instruct.py``, used by the
                zero-shot evaluation): only ``inputs_embeds`` and the attention mask go in, so only generated tokens
                are penalised. Encoder-decoder LLMs never see the prompt's ids in their decoder: no change for them.
            generate_kwargs: Passed to the LLM's ``generate``.
        """
        image = self.get_image_features(
            pixel_values, qformer_input_ids, qformer_attention_mask, image_embeds, interpolate_pos_encoding
        )
        features: torch.Tensor = image.pooler_output  # type: ignore[assignment]  # (B, T*Q, D_llm), always set
        decoder_only = self.config.use_decoder_only_language_model
        if input_ids is None:
            start = [self.config.image_token_index] * features.shape[1]
            bos = getattr(self.config.text_config, "bos_token_id", None)
            if decoder_only and bos is not None:
                start.append(bos)
            input_ids = torch.tensor([start], dtype=torch.long, device=features.device).repeat(features.shape[0], 1)
        prompt = input_ids  # what the caller passed: returned in front of the answer
        attention_mask = self._checked_attention_mask(input_ids, attention_mask)
        generation_config, model_kwargs = merged_generation_config(self.generation_config, generate_kwargs)
        if decoder_only:
            input_ids, attention_mask = fit_causal_prompts(
                input_ids,
                attention_mask,
                image_token_index=self.config.image_token_index,
                window=llm_window(self.config.text_config),
                max_new_tokens=generation_config.max_new_tokens,
                pad_token_id=getattr(self.config.text_config, "pad_token_id", None),
            )
        inputs = {
            "inputs_embeds": self.merge_image_features(input_ids, features),
            "attention_mask": attention_mask,
            "generation_config": generation_config,
            **model_kwargs,
        }
        if not decoder_only:
            return self.language_model.generate(**inputs)
        if penalize_prompt:
            # pads are not the prompt's tokens: they become a placeholder, which every prompt holds (a penalty
            # counts each id once), so the pad id (often eos) is not penalised in a padded batch but not alone
            llm_ids = input_ids.masked_fill(~attention_mask.bool(), int(self.config.image_token_index or 0))
            output = self.language_model.generate(input_ids=llm_ids, **inputs)
        else:
            with warnings.catch_warnings():  # transformers warns of exactly what penalize_prompt=False asks for
                warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
                output = self.language_model.generate(**inputs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        new = sequences[:, input_ids.shape[1] :] if penalize_prompt else sequences  # the LLM's new tokens
        # num_return_sequences > 1: each prompt's sequences are consecutive rows
        prompt = prompt.to(new.device).repeat_interleave(new.shape[0] // prompt.shape[0], dim=0)
        if isinstance(output, torch.Tensor):
            return torch.cat([prompt, new], dim=1)
        output.sequences = torch.cat([prompt, new], dim=1)
        return output
