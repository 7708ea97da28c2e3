"""Official checkpoints <-> ours, and building a new InstructBLIP from parts.

* Loading transformers' / Salesforce's InstructBLIP needs no conversion: ``from_pretrained`` reads that layout
  directly (same tensor names). [`export_to_transformers`] writes ours back in a form stock transformers loads.
* [`build_model`] composes a new model from any vision tower, a Q-Former initialiser (a BERT checkpoint, by the
  BLIP-2 recipe, or an existing InstructBLIP Q-Former) and any causal or seq2seq LLM.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
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
from .image_processing_instructblip import InstructBlipImageProcessor
from .modeling_instructblip import _VISION_MODEL_CLASSES, InstructBlipForConditionalGeneration
from .processing_instructblip import HfInstructBlipProcessor

__all__ = [
    "DEFAULT_IMAGE_TOKEN",
    "QFORMER_TOKENIZER_SUBFOLDER",
    "BuiltModel",
    "build_model",
    "convert_checkpoint",
    "export_to_transformers",
    "qformer_state_dict_from_bert",
]

DEFAULT_IMAGE_TOKEN = "<image>"
#: Where the Q-Former tokenizer lives inside a saved model folder (the official InstructBLIP layout).
QFORMER_TOKENIZER_SUBFOLDER = "qformer_tokenizer"
_WEIGHT_AND_CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


# ----- export to transformers' own InstructBLIP --------------------------------------------------------------------
def export_to_transformers(model: InstructBlipForConditionalGeneration, save_directory: str | os.PathLike) -> None:
    """Save ``model`` as a folder that stock ``transformers.InstructBlipForConditionalGeneration`` loads.

    Possible when the model has the architecture transformers' port implements: the InstructBLIP/BLIP-2 ViT,
    its last hidden state feeding the Q-Former, and the instruction fed to the Q-Former.
    """
    config = model.config
    problems = []
    if config.vision_config.model_type not in _VISION_MODEL_CLASSES:
        problems.append(
            f"vision tower {config.vision_config.model_type!r} (transformers' port only has the InstructBLIP ViT)"
        )
    if config.vision_feature_layer != -1:
        problems.append(f"vision_feature_layer={config.vision_feature_layer} (transformers' port uses -1)")
    if not config.qformer_text_input:
        problems.append("qformer_text_input=False (transformers' port always feeds the instruction)")
    if config.image_token_index is None:
        problems.append("no image_token_index")
    if problems:
        raise ValueError("Cannot export to transformers' InstructBLIP: " + "; ".join(problems) + ".")

    vision = {**config.vision_config.to_dict(), "model_type": "instructblip_vision_model"}
    qformer = {**config.qformer_config.to_dict(), "model_type": "instructblip_qformer"}
    hf_config = transformers.InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=config.text_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_token_index=config.image_token_index,
    )
    with torch.device("meta"):  # no second copy of the weights: they are assigned from `model` below
        hf_model = transformers.InstructBlipForConditionalGeneration(hf_config)
    hf_model.load_state_dict(model.state_dict(), strict=True, assign=True)
    ours = dict(model.named_buffers())
    for name, buffer in list(
        hf_model.named_buffers()
    ):  # non-persistent buffers (position ids) are not in a state dict
        if buffer.is_meta:
            module_name, _, buffer_name = name.rpartition(".")
            hf_model.get_submodule(module_name)._buffers[buffer_name] = ours[name].clone()
    hf_model.generation_config = model.generation_config
    hf_model.save_pretrained(save_directory)


def _copy_side_files(source: Path, destination: Path) -> None:
    """Copy tokenizer/processor files (anything that is not weights or model config) next to converted weights."""
    for item in source.iterdir():
        if item.name in _WEIGHT_AND_CONFIG_FILES or item.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            continue
        target = destination / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def _saved_model_type(folder: Path, argument: str) -> str | None:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{argument}: {config_file} does not exist; expected a saved model folder.")
    return json.loads(config_file.read_text()).get("model_type")


def convert_checkpoint(source: str | os.PathLike, destination: str | os.PathLike, to: str | None = None) -> str:
    """Convert a saved folder between transformers' InstructBLIP layout and ours.

    Args:
        source: A folder with ``config.json`` + safetensors weights.
        destination: Output folder (created). Tokenizer and processor files are copied along.
        to: ``"hf_instructblip"`` or ``"transformers"``; by default the other format than ``source``'s.

    Returns:
        The format written.
    """
    source, destination = Path(source), Path(destination)
    model_type = _saved_model_type(source, "convert")
    known = {TRANSFORMERS_MODEL_TYPE: "transformers", InstructBlipConfig.model_type: "hf_instructblip"}
    if model_type not in known:
        raise ValueError(
            f"convert: {source / 'config.json'} has model_type {model_type!r}; expected one of {sorted(known)} "
            "(transformers' InstructBLIP or hf_instructblip)."
        )
    target = to or ("hf_instructblip" if known[model_type] == "transformers" else "transformers")
    if target not in ("hf_instructblip", "transformers"):
        raise ValueError(f"convert: `to` must be 'hf_instructblip' or 'transformers', got {target!r}.")
    if source.resolve() == destination.resolve():
        raise ValueError("convert: destination must differ from source (nothing the user saved is overwritten).")
    model = InstructBlipForConditionalGeneration.from_pretrained(source)
    destination.mkdir(parents=True, exist_ok=True)
    _copy_side_files(source, destination)
    if target == "transformers":
        export_to_transformers(model, destination)
    else:
        model.save_pretrained(destination)
    return target


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


def _load_vision(
    vision: str | os.PathLike | PreTrainedConfig | dict,
) -> tuple[PreTrainedConfig, PreTrainedModel | None]:
    if isinstance(vision, dict):
        if "model_type" not in vision:
            raise ValueError("build_model: a `vision` dict needs a 'model_type' (e.g. 'vit', 'clip_vision_model').")
        vision = AutoConfig.for_model(**vision)
    if isinstance(vision, PreTrainedConfig):
        return vision, None
    config = AutoConfig.from_pretrained(vision)
    cls = _VISION_MODEL_CLASSES.get(config.model_type, AutoModel)
    tower = cls.from_pretrained(vision, dtype=torch.float32)
    return tower.config, tower


def _load_llm(llm: str | os.PathLike, gguf_file: str | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if gguf_file is not None:
        # Dequantised at load: a quantised GGUF model can be neither saved nor trained.
        kwargs.update(gguf_file=gguf_file, quantization_config=GgufConfig(dequantize=True))
    config = AutoConfig.from_pretrained(llm, **({"gguf_file": gguf_file} if gguf_file else {}))
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = cls.from_pretrained(llm, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(llm, **({"gguf_file": gguf_file} if gguf_file else {}))
    return model, tokenizer


def _qformer_from_instructblip(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], InstructBlipQFormerConfig]:
    source = InstructBlipForConditionalGeneration.from_pretrained(path)
    state = {f"qformer.{k}": v for k, v in source.qformer.state_dict().items()}
    state["query_tokens"] = source.query_tokens.data
    return state, source.config.qformer_config


def build_model(
    vision: str | os.PathLike | PreTrainedConfig | dict,
    qformer: str | os.PathLike | InstructBlipQFormerConfig | dict,
    llm: str | os.PathLike,
    *,
    llm_gguf_file: str | None = None,
    qformer_tokenizer: str | os.PathLike | None = None,
    num_query_tokens: int = 32,
    cross_attention_frequency: int = 2,
    vision_feature_layer: int = -1,
    qformer_text_input: bool = True,
    image_token: str = DEFAULT_IMAGE_TOKEN,
    seed: int | None = 0,
) -> BuiltModel:
    r"""Compose a new InstructBLIP from a vision tower, a Q-Former initialiser and an LLM.

    Args:
        vision: A saved vision model (path; its weights are loaded) or a config / dict with ``model_type`` (random
            weights): InstructBLIP/BLIP-2 ViT, CLIP/SigLIP vision towers, ViT, DINOv2, ...
        qformer: A BERT checkpoint (path): BLIP-2 recipe, see [`qformer_state_dict_from_bert`]; the Q-Former has
            the BERT's width, which may differ from the vision width. Or a saved InstructBLIP (ours or
            transformers'): its Q-Former and query tokens are copied. Or a Q-Former config / dict: random weights.
        llm: A causal or seq2seq LLM (path or Hub-style folder).
        llm_gguf_file: File name of a GGUF checkpoint inside ``llm`` (dequantised to float32 at load).
        qformer_tokenizer: Where the Q-Former tokenizer comes from; defaults to ``qformer`` when it is a path.
            ``[DEC]`` is added as BOS and truncation is from the left (LAVIS `blip2.py` / `blip2_t5_instruct.py`).
        num_query_tokens: Visual tokens per image.
        cross_attention_frequency: Q-Former layers with cross-attention (BERT init only; others keep theirs).
        vision_feature_layer: Vision hidden state that feeds the Q-Former.
        qformer_text_input: False builds the BLIP-2-style ablation whose Q-Former never sees the instruction.
        image_token: Placeholder token added to the LLM tokenizer; the LLM embeddings are resized for it.
        seed: Seeds the random parts (cross-attention, queries, projection, a random vision tower).

    Returns:
        [`BuiltModel`]; call ``.save_pretrained(folder)`` on it.
    """
    if seed is not None:
        torch.manual_seed(seed)
    vision_config, vision_model = _load_vision(vision)
    language_model, tokenizer = _load_llm(llm, llm_gguf_file)
    tokenizer.add_tokens([image_token], special_tokens=True)
    image_token_index = int(tokenizer.convert_tokens_to_ids(image_token))  # type: ignore[arg-type]
    if len(tokenizer) > language_model.get_input_embeddings().weight.shape[0]:  # type: ignore[operator,index]
        language_model.resize_token_embeddings(len(tokenizer))

    qformer_state: dict[str, torch.Tensor] = {}
    qformer_source = None
    if isinstance(qformer, dict):
        qformer_config = InstructBlipQFormerConfig(
            **{"cross_attention_frequency": cross_attention_frequency, **qformer}
        )
    elif isinstance(qformer, InstructBlipQFormerConfig):
        qformer_config = qformer
    else:
        qformer_source = Path(qformer)
        source_type = _saved_model_type(qformer_source, "build_model(qformer=...)")
        if source_type == "bert":
            qformer_tokenizer = qformer_tokenizer or qformer_source
        elif source_type in (TRANSFORMERS_MODEL_TYPE, InstructBlipConfig.model_type):
            sub = qformer_source / QFORMER_TOKENIZER_SUBFOLDER
            qformer_tokenizer = qformer_tokenizer or (sub if sub.is_dir() else None)
        else:
            raise ValueError(
                f"build_model: qformer={str(qformer)!r} is a {source_type!r} checkpoint; expected a BERT checkpoint "
                "or a saved InstructBLIP (BLIP-2 Q-Formers lack the text embeddings the instruction needs)."
            )
    if qformer_tokenizer is None:
        raise ValueError(
            "build_model: pass `qformer_tokenizer` (a BERT tokenizer path) for a randomly initialised Q-Former."
        )
    q_tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer, truncation_side="left")
    if q_tokenizer.bos_token != "[DEC]":
        q_tokenizer.add_special_tokens({"bos_token": "[DEC]"})

    if qformer_source is not None:
        if source_type == "bert":
            bert = AutoModel.from_pretrained(qformer_source, dtype=torch.float32)
            qformer_config = qformer_config_from_bert(
                bert.config, vocab_size=len(q_tokenizer), cross_attention_frequency=cross_attention_frequency
            )
            bert_state = bert.state_dict()
            word = bert_state["embeddings.word_embeddings.weight"]
            if len(q_tokenizer) > word.shape[0]:  # rows for the added tokens ([DEC]): the mean embedding
                extra = word.mean(0, keepdim=True).expand(len(q_tokenizer) - word.shape[0], -1)
                bert_state["embeddings.word_embeddings.weight"] = torch.cat([word, extra])
            mapped = qformer_state_dict_from_bert(bert_state, bert.config.num_hidden_layers)
            qformer_state = {f"qformer.{k}": v for k, v in mapped.items()}
        else:
            qformer_state, qformer_config = _qformer_from_instructblip(qformer_source)
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
    model = InstructBlipForConditionalGeneration(config)
    if vision_model is not None:
        model.vision_model.load_state_dict(vision_model.state_dict())
    model.language_model.load_state_dict(language_model.state_dict())
    _, unexpected = model.load_state_dict(qformer_state, strict=False)
    if unexpected:
        raise ValueError(f"build_model: Q-Former initialiser has tensors the Q-Former lacks: {unexpected[:5]}")
    model.tie_weights()
    model.generation_config = copy.deepcopy(language_model.generation_config)
    image_size = getattr(vision_config, "image_size", 224)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    processor = HfInstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": height, "width": width}),
        tokenizer,
        q_tokenizer,
        num_query_tokens=config.num_query_tokens,
        image_token=image_token,
    )
    return BuiltModel(model=model.eval(), processor=processor)
