"""The instruction-aware Q-Former of InstructBLIP (arXiv 2305.06500 §2.3, Figure 3), the part this project owns.

A BERT encoder whose input is ``[query embeddings ; instruction tokens]``:

* one bidirectional self-attention over the whole sequence (padding masked only), so queries read the instruction;
* every ``cross_attention_frequency``-th layer, the *query slice only* cross-attends to the image features;
* separate feed-forward blocks for queries (``intermediate_query``/``output_query``) and text
  (``intermediate``/``output``);
* only the query outputs go on to the LLM.

Parameter names follow transformers' ``InstructBlipQFormerModel`` so the released checkpoints load unchanged.
With no queries the module is a plain BERT text encoder (used to check a BERT initialisation landed correctly).

This file is pushed next to the weights for ``trust_remote_code``; it imports nothing from ``hf_instructblip``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_instructblip import InstructBlipQFormerConfig

__all__ = ["InstructBlipQFormerModel", "InstructBlipQFormerModelOutput"]


@dataclass
class InstructBlipQFormerModelOutput(ModelOutput):
    """Output of [`InstructBlipQFormerModel`].

    Args:
        last_hidden_state: ``(B, Q, D)`` outputs of the query tokens; ``(B, L, D)`` text outputs when the
            Q-Former is run without queries.
        hidden_states: With ``output_hidden_states=True``: the embedding output and each layer's input to the
            next layer, ``(B, Q + L, D)`` (the last one is ``last_hidden_state``).
        attentions: With ``output_attentions=True`` and eager attention: each layer's self-attention probabilities.
        cross_attentions: Likewise for the cross-attention layers.
    """

    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention; ``attention_mask`` is additive, broadcastable to ``(B, H, S_q, S_k)``."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (B, H, S_q, S_k)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()  # (B, S_q, H, Dh)
    return attn_output, attn_weights


class QFormerMultiHeadAttention(nn.Module):
    """Multi-head attention; keys/values come from the image features when ``is_cross_attention``."""

    def __init__(self, config: InstructBlipQFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.attention_dropout = config.attention_probs_dropout_prob
        kv_width = config.encoder_hidden_size if is_cross_attention else config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(kv_width, config.hidden_size)
        self.value = nn.Linear(kv_width, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states`` (B, S_q, D) attend to ``key_value_states`` (B, S_k, D_kv)."""
        q = self.query(hidden_states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, H, S_q, Dh)
        k = (
            self.key(key_value_states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        )  # (B, H, S_k, Dh)
        v = self.value(key_value_states).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
        attention_interface: Callable = eager_attention_forward
        if self.config._attn_implementation not in (None, "eager") and not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        attn_output, attn_weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return attn_output.flatten(-2), attn_weights  # (B, S_q, D)


class QFormerSelfOutput(nn.Module):
    """Attention output projection + dropout + residual LayerNorm (BERT's ``BertSelfOutput``)."""

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class QFormerAttention(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig, is_cross_attention: bool = False):
        super().__init__()
        self.attention = QFormerMultiHeadAttention(config, is_cross_attention)
        self.output = QFormerSelfOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn_output, attn_weights = self.attention(hidden_states, key_value_states, attention_mask, output_attentions)
        return self.output(attn_output, hidden_states), attn_weights


class QFormerIntermediate(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.intermediate_act_fn(self.dense(hidden_states))


class QFormerOutput(nn.Module):
    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + residual)


class QFormerLayer(GradientCheckpointingLayer):
    """Self-attention over ``[queries ; text]``, cross-attention for the queries, separate feed-forward blocks."""

    def __init__(self, config: InstructBlipQFormerConfig, layer_idx: int):
        super().__init__()
        self.attention = QFormerAttention(config)
        self.has_cross_attention = layer_idx % config.cross_attention_frequency == 0
        if self.has_cross_attention:
            self.crossattention = QFormerAttention(config, is_cross_attention=True)
        self.intermediate = QFormerIntermediate(config)
        self.output = QFormerOutput(config)
        self.intermediate_query = QFormerIntermediate(config)
        self.output_query = QFormerOutput(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        query_length: int,
        queries_only: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``hidden_states`` (B, Q + L, D) -> (B, Q + L, D), or (B, Q, D) when ``queries_only``.

        ``queries_only`` is for the last layer: the text outputs of the last layer are dropped anyway, so neither
        their attention rows nor their feed-forward block are computed.
        """
        attn_input = hidden_states[:, :query_length] if queries_only else hidden_states
        attention_output, self_attn = self.attention(attn_input, hidden_states, attention_mask, output_attentions)
        query_output = attention_output[:, :query_length]  # (B, Q, D)
        text_output = attention_output[:, query_length:]  # (B, L, D) or empty

        cross_attn = None
        if query_length > 0 and self.has_cross_attention:
            if encoder_hidden_states is None:
                raise ValueError("The Q-Former's cross-attention layers need image features (encoder_hidden_states).")
            query_output, cross_attn = self.crossattention(
                query_output, encoder_hidden_states, None, output_attentions
            )

        outputs = []
        if query_length > 0:
            outputs.append(self.output_query(self.intermediate_query(query_output), query_output))
        if text_output.shape[1] > 0:
            outputs.append(self.output(self.intermediate(text_output), text_output))
        layer_output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)
        return layer_output, self_attn, cross_attn


class QFormerEmbeddings(nn.Module):
    """Word + absolute position embeddings for the instruction (positions from 0); queries get none."""

    position_ids: torch.Tensor

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings).expand((1, -1)), persistent=False
        )

    def forward(self, input_ids: torch.Tensor | None, query_embeds: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if query_embeds is not None:
            parts.append(query_embeds)  # (B, Q, D)
        if input_ids is not None:
            seq_length = input_ids.shape[1]
            if seq_length > self.position_embeddings.num_embeddings:
                raise ValueError(
                    f"qformer_input_ids has {seq_length} tokens but the Q-Former embeds at most "
                    f"{self.position_embeddings.num_embeddings} (max_position_embeddings); truncate the instruction."
                )
            text = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :seq_length])
            parts.append(text.to(parts[0].dtype) if parts else text)  # (B, L, D)
        embeddings = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, Q + L, D)
        embeddings = embeddings.to(self.layernorm.weight.dtype)
        return self.dropout(self.layernorm(embeddings))


def _additive_padding_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) 1/0 mask -> (B, 1, 1, S) additive mask, or None when nothing is masked (lets SDPA pick its fast path)."""
    if bool(mask.all()):
        return None
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class QFormerEncoder(nn.Module):
    """Holds the layers (a module of its own so parameter names match the released checkpoints)."""

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(QFormerLayer(config, i) for i in range(config.num_hidden_layers))


class InstructBlipQFormerPreTrainedModel(PreTrainedModel):
    config: InstructBlipQFormerConfig
    config_class = InstructBlipQFormerConfig
    base_model_prefix = "qformer"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["QFormerLayer", "QFormerEmbeddings"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, QFormerEmbeddings):
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))


class InstructBlipQFormerModel(InstructBlipQFormerPreTrainedModel):
    """The instruction-aware Q-Former. See the module docstring."""

    def __init__(self, config: InstructBlipQFormerConfig):
        super().__init__(config)
        self.embeddings = QFormerEmbeddings(config)
        self.encoder = QFormerEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Module) -> None:
        if not isinstance(value, nn.Embedding):
            raise TypeError(f"The Q-Former's input embeddings must be an nn.Embedding, got {type(value).__name__}.")
        self.embeddings.word_embeddings = value

    def forward(
        self,
        query_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> InstructBlipQFormerModelOutput:
        r"""Run the Q-Former.

        Args:
            query_embeds: ``(B, Q, D)`` learned query tokens (expanded to the batch).
            encoder_hidden_states: ``(B, N, D_vision)`` image features the queries cross-attend to.
            input_ids: ``(B, L)`` instruction tokens (Q-Former tokenizer); ``None`` for a BLIP-2-style Q-Former.
            attention_mask: ``(B, L)`` padding mask of ``input_ids`` (1 = token, 0 = padding).
            output_attentions: Return attention probabilities (computed with eager attention).
            output_hidden_states: Return every layer's hidden states.

        Returns:
            [`InstructBlipQFormerModelOutput`] whose ``last_hidden_state`` holds the query outputs ``(B, Q, D)``
            (the text outputs ``(B, L, D)`` when there are no queries).
        """
        if query_embeds is None and input_ids is None:
            raise ValueError("The Q-Former needs query_embeds, input_ids or both.")
        query_length = 0 if query_embeds is None else query_embeds.shape[1]
        hidden_states = self.embeddings(input_ids, query_embeds)  # (B, Q + L, D)

        mask = None
        if input_ids is not None and attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"qformer_attention_mask has shape {tuple(attention_mask.shape)} but qformer_input_ids has "
                    f"shape {tuple(input_ids.shape)}; they must match."
                )
            query_mask = attention_mask.new_ones(attention_mask.shape[0], query_length)
            mask = _additive_padding_mask(torch.cat([query_mask, attention_mask], dim=1), hidden_states.dtype)
        if encoder_hidden_states is not None:
            encoder_hidden_states = encoder_hidden_states.to(hidden_states.dtype)

        all_hidden = [hidden_states] if output_hidden_states else None
        all_self, all_cross = [], []
        num_layers = len(self.encoder.layer)
        for i, layer in enumerate(self.encoder.layer):
            # The text outputs of the last layer are never used when there are queries: skip them.
            queries_only = query_length > 0 and i == num_layers - 1 and not output_hidden_states
            hidden_states, self_attn, cross_attn = layer(
                hidden_states, encoder_hidden_states, mask, query_length, queries_only, output_attentions
            )
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_self.append(self_attn)
                if cross_attn is not None:
                    all_cross.append(cross_attn)

        last = hidden_states[:, :query_length] if query_length > 0 else hidden_states
        return InstructBlipQFormerModelOutput(
            last_hidden_state=last,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
            attentions=tuple(all_self) if output_attentions else None,
            cross_attentions=tuple(all_cross) if output_attentions else None,
        )
