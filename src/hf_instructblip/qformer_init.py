"""What a new Q-Former starts from: its tensors, config and tokenizer, and where each tensor came from.

* From a BERT checkpoint by the BLIP-2 recipe (arXiv 2301.12597 §3.1; LAVIS `blip2.py` ``init_Qformer``): embeddings,
  self-attention and the text FFN from BERT, the query FFN a copy of the text FFN, cross-attention random.
* From a saved InstructBLIP (ours or transformers' layout): its Q-Former and query tokens, read alone from its files.

BLIP-2 checkpoints are read by `blip2_init`, which takes the text parts BLIP-2's stage 2 lacks from here (BERT) or
from stage 1. Tensor names here are the Q-Former's own (``embeddings.word_embeddings.weight``); an `QFormerInit`'s
are the built model's (``qformer.embeddings.word_embeddings.weight``, ``query_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedTokenizerBase

from .checkpoint_files import CheckpointFiles
from .configuration_instructblip import InstructBlipConfig, InstructBlipQFormerConfig
from .provenance import Provenance, TensorSource

__all__ = [
    "QFormerInit",
    "bert_qformer_key_map",
    "load_qformer_tokenizer",
    "qformer_config_from_bert",
    "qformer_from_bert",
    "qformer_from_instructblip",
    "qformer_state_dict_from_bert",
    "text_part_names",
    "with_token_rows",
]

#: The Q-Former's text-only tensors: what reads the instruction and nothing else (BLIP-2's stage 2 lacks them).
_TEXT_EMBEDDINGS = ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight")
_TEXT_FFN = ("intermediate.dense.weight", "intermediate.dense.bias", "output.dense.weight", "output.dense.bias")
_TEXT_FFN_NORM = ("output.LayerNorm.weight", "output.LayerNorm.bias")


@dataclass
class QFormerInit:
    """A Q-Former initialiser: tensors under the built model's names, the config, the tokenizer, the sources.

    Args:
        state: ``qformer.*`` tensors, maybe ``query_tokens`` and ``language_projection.*``; the rest starts new.
        config: The Q-Former's config.
        tokenizer: The Q-Former tokenizer (``[DEC]`` as BOS, left truncation).
        sources: Where each tensor of ``state`` came from (same keys); may also name new tensors with a reason.
    """

    state: dict[str, torch.Tensor]
    config: InstructBlipQFormerConfig
    tokenizer: PreTrainedTokenizerBase
    sources: Provenance


def text_part_names(num_layers: int) -> list[str]:
    """The Q-Former's text-only tensors (its own names): word/position embeddings and every layer's text FFN."""
    names = list(_TEXT_EMBEDDINGS)
    for i in range(num_layers):
        names += [f"encoder.layer.{i}.{rest}" for rest in (*_TEXT_FFN, *_TEXT_FFN_NORM)]
    return names


def load_qformer_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    """The Q-Former tokenizer: ``[DEC]`` as BOS, left truncation (LAVIS `blip2.py`, `blip2_t5_instruct.py`)."""
    tokenizer = AutoTokenizer.from_pretrained(source, truncation_side="left")
    if tokenizer.bos_token != "[DEC]":
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def with_token_rows(word: torch.Tensor, num_tokens: int, source: TensorSource) -> tuple[torch.Tensor, TensorSource]:
    """Word embeddings with a row for each of ``num_tokens`` tokens: rows for added tokens ([DEC]) are the mean row."""
    if num_tokens <= word.shape[0]:
        return word, source
    extra = word.mean(0, keepdim=True).expand(num_tokens - word.shape[0], -1)
    note = f"rows {word.shape[0]}..{num_tokens - 1} (tokens added to the tokenizer) are the mean row"
    return torch.cat([word, extra]), TensorSource("derived", source.file, source.key, note)


# ----- BERT (BLIP-2 recipe, arXiv 2301.12597 §3.1; LAVIS `blip2.py`) ------------------------------------------------
def qformer_config_from_bert(
    bert_config: PreTrainedConfig, vocab_size: int, **overrides: Any
) -> InstructBlipQFormerConfig:
    """Q-Former config with the shape of a BERT checkpoint (width, depth, heads, FFN, activation, positions)."""
    fields = {
        "vocab_size": vocab_size,
        "hidden_size": bert_config.hidden_size,
        "num_hidden_layers": bert_config.num_hidden_layers,
        "num_attention_heads": bert_config.num_attention_heads,
        "intermediate_size": bert_config.intermediate_size,
        "hidden_act": bert_config.hidden_act,
        "hidden_dropout_prob": bert_config.hidden_dropout_prob,
        "attention_probs_dropout_prob": bert_config.attention_probs_dropout_prob,
        "max_position_embeddings": bert_config.max_position_embeddings,
        "layer_norm_eps": bert_config.layer_norm_eps,
        "pad_token_id": bert_config.pad_token_id,
    }
    return InstructBlipQFormerConfig(**{**fields, **overrides})


_BERT_LAYER_RENAMES = {
    "attention.self.": "attention.attention.",
    "attention.output.": "attention.output.",
    "intermediate.": "intermediate.",
    "output.": "output.",
}


def bert_qformer_key_map(bert_keys: Iterable[str], num_layers: int) -> dict[str, str]:
    """Q-Former name -> the ``BertModel`` name it starts from (BLIP-2 recipe); the query FFN maps to the text FFN.

    Cross-attention has no BERT counterpart and is not in the result. ``embeddings.position_embeddings.weight`` maps
    to BERT's position embeddings, to which [`qformer_state_dict_from_bert`] adds ``token_type_embeddings[0]``.
    """
    out = {
        "embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
        "embeddings.layernorm.weight": "embeddings.LayerNorm.weight",
        "embeddings.layernorm.bias": "embeddings.LayerNorm.bias",
    }
    for key in bert_keys:
        parts = key.split(".", 3)  # encoder, layer, i, rest
        if len(parts) < 4 or parts[:2] != ["encoder", "layer"] or not parts[2].isdigit():
            continue
        if int(parts[2]) >= num_layers:
            continue
        prefix, rest = f"encoder.layer.{parts[2]}.", parts[3]
        for old, new in _BERT_LAYER_RENAMES.items():
            if rest.startswith(old):
                out[prefix + new + rest[len(old) :]] = key
                if old in ("intermediate.", "output."):  # query FFN = copy of the text FFN
                    out[prefix + old.rstrip(".") + "_query." + rest[len(old) :]] = key
                break
    return out


def qformer_state_dict_from_bert(bert_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map a ``BertModel`` state dict to Q-Former names (BLIP-2 recipe).

    Embeddings, self-attention and the text FFN come from BERT; the query FFN is a copy of the text FFN;
    cross-attention is not in the result (it starts random). BERT adds ``token_type_embeddings[0]`` to every
    token; it is folded into the position embeddings, so the Q-Former's text path computes exactly BERT's
    function (queries get no position embedding and are unaffected).
    """
    state = {k.removeprefix("bert."): v for k, v in bert_state.items()}
    out = {}
    for name, key in bert_qformer_key_map(state, num_layers).items():
        out[name] = state[key].clone() if "_query." in name else state[key]
    out["embeddings.position_embeddings.weight"] = (
        state["embeddings.position_embeddings.weight"] + state["embeddings.token_type_embeddings.weight"][0]
    )
    return out


def _bert_sources(folder: Path, key_map: dict[str, str]) -> Provenance:
    """Where each BERT-initialised tensor (Q-Former names) came from, found by name in the BERT's files."""
    files = CheckpointFiles(folder, "build_model(qformer=...)")
    sources: Provenance = {}
    for name, key in key_map.items():
        file_key = next((k for k in (key, f"bert.{key}") if k in files), None)
        if file_key is None:  # a legacy name (LayerNorm.gamma) transformers renamed on load
            sources[name] = TensorSource("loaded", str(folder), key, "read by transformers' from_pretrained")
            continue
        note = "the query FFN starts as a copy of BERT's text FFN" if "_query." in name else ""
        sources[name] = TensorSource("copied", files.path_of(file_key), file_key, note)
    position = sources["embeddings.position_embeddings.weight"]
    sources["embeddings.position_embeddings.weight"] = TensorSource(
        "derived", position.file, position.key, "plus token_type_embeddings[0], folded in (BERT adds it to each token)"
    )
    return sources


def qformer_from_bert(folder: Path, tokenizer: PreTrainedTokenizerBase, cross_attention_frequency: int) -> QFormerInit:
    """The BLIP-2 recipe's Q-Former from the BERT in ``folder``; rows for added tokens ([DEC]) are the mean row."""
    bert = AutoModel.from_pretrained(folder, dtype=torch.float32)
    num_layers = bert.config.num_hidden_layers
    bert_state = bert.state_dict()
    mapped = qformer_state_dict_from_bert(bert_state, num_layers)
    sources = _bert_sources(folder, bert_qformer_key_map(bert_state, num_layers))
    word = "embeddings.word_embeddings.weight"
    mapped[word], sources[word] = with_token_rows(mapped[word], len(tokenizer), sources[word])
    config = qformer_config_from_bert(
        bert.config, vocab_size=mapped[word].shape[0], cross_attention_frequency=cross_attention_frequency
    )
    return QFormerInit(
        state={f"qformer.{k}": v for k, v in mapped.items()},
        config=config,
        tokenizer=tokenizer,
        sources={f"qformer.{k}": v for k, v in sources.items()},
    )


# ----- a saved InstructBLIP ------------------------------------------------------------------------------------------
def qformer_from_instructblip(folder: Path, tokenizer: PreTrainedTokenizerBase) -> QFormerInit:
    """Q-Former and query tokens of a saved InstructBLIP, read alone from its safetensors (its LLM is not loaded)."""
    files = CheckpointFiles(folder, "build_model(qformer=...)")
    state = files.read_where(lambda key: key == "query_tokens" or key.startswith("qformer."))
    if "query_tokens" not in state:
        raise ValueError(
            f"build_model(qformer=...): {folder} holds no `query_tokens`; not an InstructBLIP checkpoint."
        )
    config = InstructBlipConfig.from_pretrained(folder).qformer_config
    sources = {key: TensorSource("copied", files.path_of(key), key) for key in state}
    return QFormerInit(state, config, tokenizer, sources)  # type: ignore[arg-type]  # an InstructBlipQFormerConfig
