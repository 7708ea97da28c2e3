"""Starting from BLIP-2, as the paper does (arXiv 2305.06500 §3: "we initialize the model from pre-trained BLIP-2
checkpoints"), read from transformers' BLIP-2 folders.

* Stage 2, `Blip2ForConditionalGeneration` (``Salesforce/blip2-opt-2.7b``, ``Salesforce/blip2-flan-t5-xl``, ...):
  vision tower (ViT-g and its output LayerNorm), Q-Former, query tokens, projection, LLM.
* Stage 1, `Blip2ForImageTextRetrieval` (``Salesforce/blip2-itm-vit-g``): vision tower, Q-Former *with* its text
  parts, query tokens; no projection, no LLM.

Stage 2 never feeds text to the Q-Former, so LAVIS deletes its word/position embeddings and text FFN there
(`blip2_opt.py`, `blip2_t5.py`: ``layer.output = None; layer.intermediate = None``) and transformers' stage-2
checkpoints lack them (``use_qformer_text_input=False``). InstructBLIP feeds the instruction through them, so they
come from stage 1, where they were trained, or failing that from a BERT (the BLIP-2 recipe, `qformer_init`).

Names: transformers' ``Blip2QFormerModel`` holds the embeddings LayerNorm (applied to queries and text alike) as
``qformer.layernorm``, and stage 1 keeps the text embeddings outside the Q-Former as ``embeddings.*``; ours follow
transformers' InstructBLIP: ``qformer.embeddings.{word_embeddings,position_embeddings,layernorm}``. Layer names match.
Only the tensors a part needs are read (a vision tower or a Q-Former out of a 7B checkpoint never loads its LLM).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    Blip2Config,
    PreTrainedConfig,
    PreTrainedModel,
)
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel

from .checkpoint_files import CheckpointFiles, saved_model_type
from .configuration_instructblip import InstructBlipQFormerConfig
from .provenance import Provenance, TensorSource, new_sources
from .qformer_init import QFormerInit, load_qformer_tokenizer, qformer_from_bert, text_part_names, with_token_rows

__all__ = ["BLIP2_MODEL_TYPE", "blip2_qformer_name", "load_blip2_llm", "load_blip2_vision", "qformer_from_blip2"]

#: ``model_type`` of transformers' BLIP-2 configs (stage 1 and stage 2 alike).
BLIP2_MODEL_TYPE = "blip-2"
_WORD = "qformer.embeddings.word_embeddings.weight"
_POSITION = "qformer.embeddings.position_embeddings.weight"
_STAGE1_WORD_KEY = "embeddings.word_embeddings.weight"
_SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size")
_CONFIG_FIELDS = (
    *_SHAPE_FIELDS,
    "vocab_size",
    "num_attention_heads",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "cross_attention_frequency",
)


def _sub_config(folder: Path, name: str) -> PreTrainedConfig:
    """``vision_config``, ``qformer_config`` or ``text_config`` of the BLIP-2 in ``folder``."""
    return cast(PreTrainedConfig, getattr(Blip2Config.from_pretrained(folder), name))  # dicts become configs


def blip2_qformer_name(key: str) -> str | None:
    """Our name for a BLIP-2 checkpoint tensor of the Q-Former side (queries, Q-Former, projection); else None."""
    if key == "query_tokens" or key.startswith(("qformer.encoder.", "language_projection.")):
        return key
    if key.startswith("qformer.layernorm."):
        return "qformer.embeddings.layernorm." + key.removeprefix("qformer.layernorm.")
    if key in (_STAGE1_WORD_KEY, "embeddings.position_embeddings.weight"):  # stage 1 only
        return "qformer." + key
    return None  # vision_model.*, language_model.*, the stage-1 heads (itm_head, vision/text_projection)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


# ----- vision tower and LLM: transformers' own classes, only their tensors read ---------------------------------
def _load_prefixed(cls: type, folder: Path, config: PreTrainedConfig, prefix: str, argument: str) -> PreTrainedModel:
    """``cls.from_pretrained`` of the tensors under ``prefix`` in a BLIP-2 folder (renamed on load, nothing else read)."""
    logger = logging.getLogger("transformers.modeling_utils")
    # its load report would list every other tensor of the BLIP-2 as unexpected (missing ones are checked below)
    report = _DropLoadReport()
    logger.addFilter(report)
    try:
        model, info = cls.from_pretrained(  # type: ignore[attr-defined]
            folder,
            config=config,
            dtype=torch.float32,
            use_safetensors=True,
            key_mapping={f"^{re.escape(prefix)}": ""},
            output_loading_info=True,
        )
    finally:
        logger.removeFilter(report)
    if info["missing_keys"]:
        raise ValueError(
            f"{argument}: {folder} lacks tensors of its {prefix[:-1]}: {sorted(info['missing_keys'])[:5]}"
        )
    return model


def load_blip2_vision(folder: Path) -> PreTrainedModel:
    """The BLIP-2 vision tower (``Blip2VisionModel``, its output LayerNorm = LAVIS' ``ln_vision``) of ``folder``."""
    config = _sub_config(folder, "vision_config")
    return _load_prefixed(Blip2VisionModel, folder, config, "vision_model.", "build_model(vision=...)")


def load_blip2_llm(folder: Path) -> PreTrainedModel:
    """The LLM of a BLIP-2 stage-2 folder, as its own class (``OPTForCausalLM``, ``T5ForConditionalGeneration``)."""
    files = CheckpointFiles(folder, "build_model(llm=...)")
    if not any(key.startswith("language_model.") for key in files):
        raise ValueError(
            f"build_model(llm=...): {folder} holds no LLM (`language_model.*`), e.g. a BLIP-2 stage-1 checkpoint "
            "(Blip2ForImageTextRetrieval); pass a BLIP-2 stage-2 folder or the LLM's own folder."
        )
    config = _sub_config(folder, "text_config")
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return _load_prefixed(cls, folder, config, "language_model.", "build_model(llm=...)")


# ----- Q-Former ------------------------------------------------------------------------------------------------------
def _read_qformer_side(files: CheckpointFiles, names: set[str] | None = None) -> tuple[dict, Provenance]:
    """The Q-Former-side tensors of a BLIP-2 checkpoint under our names (only ``names`` when given)."""
    keys = {}
    for key in files:
        name = blip2_qformer_name(key)
        if name is not None and (names is None or name in names):
            keys[name] = key
    tensors = files.read(keys.values())
    state = {name: tensors[key] for name, key in keys.items()}
    return state, {name: TensorSource("copied", files.path_of(key), key) for name, key in keys.items()}


def _qformer_config(blip2_config: PreTrainedConfig) -> InstructBlipQFormerConfig:
    return InstructBlipQFormerConfig(**{field: getattr(blip2_config, field) for field in _CONFIG_FIELDS})


def _check_same_shape(config: InstructBlipQFormerConfig, other: PreTrainedConfig, argument: str, folder: Path) -> None:
    ours = {field: getattr(config, field) for field in _SHAPE_FIELDS}
    theirs = {field: getattr(other, field) for field in _SHAPE_FIELDS}
    if ours != theirs:
        raise ValueError(f"{argument}: {folder} has a Q-Former of shape {theirs}; the BLIP-2 Q-Former's is {ours}.")


def _text_parts(
    folder: Path, names: list[str], config: InstructBlipQFormerConfig, tokenizer
) -> tuple[dict, Provenance]:
    """The text parts ``names`` (our names) from a BLIP-2 stage-1 checkpoint or, failing that, a BERT."""
    argument = "build_model(qformer_text=...)"
    model_type = saved_model_type(folder, argument)
    if model_type == BLIP2_MODEL_TYPE:
        files = CheckpointFiles(folder, argument)
        if _STAGE1_WORD_KEY not in files:
            raise ValueError(
                f"{argument}: {folder} holds no Q-Former text embeddings (a stage-2 checkpoint?); pass a BLIP-2 "
                "stage-1 checkpoint (Blip2ForImageTextRetrieval, e.g. Salesforce/blip2-itm-vit-g) or a BERT."
            )
        _check_same_shape(config, _sub_config(folder, "qformer_config"), argument, folder)
        return _read_qformer_side(files, set(names))
    if model_type == "bert":  # the BLIP-2 recipe's start: word/position embeddings and text FFN of BERT
        init = qformer_from_bert(folder, tokenizer, config.cross_attention_frequency)
        _check_same_shape(config, init.config, argument, folder)
        return {n: init.state[n] for n in names}, {n: init.sources[n] for n in names}
    raise ValueError(
        f"{argument}: {folder} is a {model_type!r} checkpoint; expected a BLIP-2 stage-1 checkpoint "
        "(Blip2ForImageTextRetrieval) or a BERT."
    )


def _tokenizer_source(given: Path | None, stage1: Path | None, text: Path | None) -> Path:
    """The Q-Former tokenizer: the one given, else the stage-1 / BERT folder's (never a stage 2's: the LLM's)."""
    for folder in (given, stage1, text):
        if folder is not None and any((folder / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
            return folder
    raise ValueError(
        "build_model: a BLIP-2 stage-2 checkpoint holds the LLM's tokenizer only; pass `qformer_tokenizer` (a BERT "
        "tokenizer folder), or a `qformer_text` folder that holds one."
    )


def qformer_from_blip2(
    folder: Path,
    *,
    text: Path | None,
    tokenizer: Path | None,
    with_projection: bool,
    need_text: bool,
) -> QFormerInit:
    """Q-Former, query tokens and (``with_projection``) projection of a BLIP-2 folder; missing text parts from ``text``.

    Args:
        folder: A BLIP-2 folder: stage 2 (``Blip2ForConditionalGeneration``) or stage 1 (with text parts).
        text: Where the text parts the checkpoint lacks come from: a stage-1 BLIP-2 folder or a BERT folder.
        tokenizer: The Q-Former tokenizer's folder; default: the stage-1 or ``text`` folder's.
        with_projection: Copy the projection (the LLM is this checkpoint's own); else it starts new.
        need_text: The Q-Former reads the instruction, so missing text parts without ``text`` are an error (with
            False, the BLIP-2-style ablation, they start new and stay unused).
    """
    files = CheckpointFiles(folder, "build_model(qformer=...)")
    state, sources = _read_qformer_side(files)
    if "query_tokens" not in state:
        raise ValueError(f"build_model(qformer=...): {folder} holds no `query_tokens`; not a BLIP-2 checkpoint.")
    projection = [name for name in state if name.startswith("language_projection.")]
    if not with_projection:
        for name in projection:
            del state[name]
        sources.update(new_sources(projection, "the LLM is not this BLIP-2's: a new projection, as LAVIS' llm_proj"))
    config = _qformer_config(_sub_config(folder, "qformer_config"))
    missing = [f"qformer.{n}" for n in text_part_names(config.num_hidden_layers) if f"qformer.{n}" not in state]
    if missing and text is None and need_text:
        raise ValueError(
            f"build_model: {folder} is a BLIP-2 stage-2 checkpoint: its Q-Former lacks the text embeddings and text "
            "FFN that read the instruction. Pass `qformer_text`: a BLIP-2 stage-1 checkpoint (Blip2ForImageText"
            "Retrieval, e.g. Salesforce/blip2-itm-vit-g) or a BERT (bert-base-uncased); or qformer_text_input=False."
        )
    q_tokenizer = load_qformer_tokenizer(_tokenizer_source(tokenizer, folder if _WORD in state else None, text))
    if missing and text is not None:
        parts, part_sources = _text_parts(text, missing, config, q_tokenizer)
        state.update(parts)
        sources.update(part_sources)
    elif missing:
        sources.update(new_sources(missing, "BLIP-2 stage 2 has no text parts; unused with qformer_text_input=False"))

    if _WORD in state:
        state[_WORD], sources[_WORD] = with_token_rows(state[_WORD], len(q_tokenizer), sources[_WORD])
        config.vocab_size = state[_WORD].shape[0]
        config.max_position_embeddings = state[_POSITION].shape[0]
    else:
        config.vocab_size = max(config.vocab_size, len(q_tokenizer))
    return QFormerInit(state, config, q_tokenizer, sources)
