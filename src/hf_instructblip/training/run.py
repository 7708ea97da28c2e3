"""`hf-instructblip train CONFIG.yaml`: instruction-tune InstructBLIP from one YAML or JSON file.

The file's ``model:``, ``data:`` and ``training:`` sections (`training.config`, `training.arguments`) name the model
(saved, or built from parts with `building.build_model`), the datasets and transformers' training arguments:

    hf-instructblip train examples/configs/tiny.yaml
    hf-instructblip train examples/configs/tiny.yaml --training.output_dir /tmp/run --training.max_steps 10
    torchrun --nproc_per_node 2 -m hf_instructblip.cli train examples/configs/tiny.yaml   # DDP, same file

``output_dir`` receives the model and processor (with LoRA: the adapter and processor), ``loss_curve.png``,
``train_results.json`` / ``all_results.json`` (`Trainer.save_metrics`), ``trainer_state.json``, the
``checkpoint-*`` folders and, with ``data.on_bad_sample: skip``, ``bad_samples.txt``. A run killed at any point
resumes with ``--training.resume_from_checkpoint true`` from its last complete checkpoint.

Precision: the command holds the frozen vision tower and LLM in ``training.frozen_dtype``, ``auto`` unless the file
sets it (bf16 where the hardware runs it natively, else fp32; see `InstructBlipTrainingArguments`), and trains the
Q-Former side in fp32, as LAVIS does. ``model.dtype`` other than float32 casts the whole model instead.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput

from ..data.schema import BadSampleReport
from ..loading import ADAPTER_BASE_FOLDER, ModelLoadError, check_model_folder
from .arguments import SYNTHETIC_GROUPS, DataArguments, InstructBlipTrainingArguments, ModelArguments
from .config import parse_config
from .loss_curve import plot_loss_curve

__all__ = [
    "TrainRunOutput",
    "last_complete_checkpoint",
    "load_datasets",
    "load_model_and_processor",
    "plot_loss_curve",
    "run_from_config",
    "train",
]

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
LOSS_CURVE_FILE = "loss_curve.png"
BAD_SAMPLES_FILE = "bad_samples.txt"


# ----- model ------------------------------------------------------------------------------------------------------
def load_model_and_processor(
    model_args: ModelArguments, save_base_to: str | os.PathLike | None = None
) -> tuple[Any, Any]:
    """The model (in ``model_args.dtype``, LoRA applied when asked) and its processor.

    With LoRA on a model built from parts, the adapter's base exists nowhere else: it is saved to ``save_base_to``
    (the main process passes ``output_dir/base_model``) and the adapter config names it relatively, so the run's
    folder loads (`loading.load_for_inference`, ``hf-instructblip generate``).
    """
    from ..building import build_model, resolve_part
    from ..modeling_instructblip import InstructBlipForConditionalGeneration
    from ..processing_instructblip import HfInstructBlipProcessor

    dtype = getattr(torch, model_args.dtype)
    if model_args.model_name_or_path is not None:
        path = resolve_part(model_args.model_name_or_path)
        try:
            check_model_folder(path)
        except ModelLoadError as error:
            raise ModelLoadError(f"model.model_name_or_path: {error}") from error
        model = InstructBlipForConditionalGeneration.from_pretrained(path, dtype=dtype)
        processor = HfInstructBlipProcessor.from_pretrained(path)
    else:
        built = build_model(
            model_args.vision,  # type: ignore[arg-type]  # __post_init__: all three parts are set
            model_args.qformer,  # type: ignore[arg-type]
            model_args.llm,  # type: ignore[arg-type]
            llm_tokenizer=model_args.llm_tokenizer,
            llm_gguf_file=model_args.llm_gguf_file,
            qformer_tokenizer=model_args.qformer_tokenizer,
            qformer_text=model_args.qformer_text,
            num_query_tokens=model_args.num_query_tokens,
            cross_attention_frequency=model_args.cross_attention_frequency,
            vision_feature_layer=model_args.vision_feature_layer,
            seed=model_args.build_seed,
        )
        model, processor = built.model.to(dtype), built.processor
        if model_args.lora_target is not None and save_base_to is not None:
            model.save_pretrained(save_base_to)
            processor.save_pretrained(save_base_to)
    if model_args.lora_target is not None:
        from .lora import apply_lora

        model = apply_lora(
            model,
            target=model_args.lora_target,
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
        )
        if model_args.model_name_or_path is None:
            for config in model.peft_config.values():
                config.base_model_name_or_path = ADAPTER_BASE_FOLDER  # relative to the adapter folder
    return model, processor


def _choose_frozen_dtype(model_args: ModelArguments, training_args: InstructBlipTrainingArguments) -> None:
    """The train command's ``training.frozen_dtype``: ``auto`` unless set, or unless ``model.dtype`` casts the whole
    model (the two do not combine)."""
    if training_args.frozen_dtype is None and model_args.dtype == "float32":
        training_args.frozen_dtype = "auto"
    elif training_args.frozen_dtype is not None and model_args.dtype != "float32":
        raise ValueError(
            f"model.dtype={model_args.dtype} casts the whole model, training.frozen_dtype={training_args.frozen_dtype} "
            "only the frozen vision tower and LLM (the trained parts stay fp32): set one of them."
        )


def _hold_frozen_parts(model: Any, training_args: InstructBlipTrainingArguments) -> None:
    """Hold the frozen parts in ``training.frozen_dtype`` now (the feature cache stores features in it); the trainer
    then sees the dtype chosen, which the run's records (``training_args``, the model card) show."""
    from .trainer import hold_frozen_parts

    if training_args.frozen_dtype is not None:
        dtype = hold_frozen_parts(model, training_args.frozen_dtype)
        training_args.frozen_dtype = str(dtype).removeprefix("torch.")


# ----- data -------------------------------------------------------------------------------------------------------
def _expand(names: Sequence[str]) -> list[str]:
    from ..data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT

    groups = dict(zip(SYNTHETIC_GROUPS, (SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT)))
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


def _finished_run(training_args: InstructBlipTrainingArguments, checkpoint: Path) -> TrainOutput | None:
    """The run's result if it already reached its last step (its checkpoint's or final ``trainer_state.json``):
    resuming it would train past its end and overwrite the saved model."""
    for path in (Path(str(training_args.output_dir)) / TRAINER_STATE_FILE, checkpoint / TRAINER_STATE_FILE):
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        target = training_args.max_steps if training_args.max_steps > 0 else state.get("max_steps", 0)
        if target and state.get("global_step", 0) >= target:
            losses = [entry["train_loss"] for entry in state.get("log_history", []) if "train_loss" in entry]
            return TrainOutput(state["global_step"], losses[-1] if losses else math.nan, {})
    return None


@dataclass
class TrainRunOutput:
    """What `train` returns: the Trainer's `TrainOutput` and where the run's outputs are."""

    train_output: TrainOutput
    output_dir: Path
    loss_curve: Path | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    bad_samples: BadSampleReport | None = None
    already_finished: bool = False

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
    _choose_frozen_dtype(model_args, training_args)
    if checkpoint is not None and (finished := _finished_run(training_args, Path(checkpoint))) is not None:
        logger.info("%s already finished its %d steps; nothing to train.", output_dir, finished.global_step)
        return TrainRunOutput(finished, output_dir, already_finished=True)
    report = BadSampleReport() if data_args.on_bad_sample == "skip" else None
    with training_args.main_process_first(desc="loading datasets"):  # user data is checked before the model build
        parts, evals = load_datasets(data_args, seed=data_args.synthetic_seed, report=report)
    if report is not None:
        _report_bad_samples(report, output_dir, training_args.should_save)
    base_dir = output_dir / ADAPTER_BASE_FOLDER if training_args.should_save else None
    model, processor = load_model_and_processor(model_args, save_base_to=base_dir)
    _hold_frozen_parts(model, training_args)  # before the feature cache: it stores features in that dtype

    collator_kwargs: dict[str, Any] = {
        "max_instruction_length": data_args.max_instruction_length,
        "max_target_length": data_args.max_target_length,
        "max_length": data_args.max_length,
        "augment_images": data_args.augment_images,
        "crop_scale": tuple(data_args.crop_scale),
        "hflip": data_args.hflip,
        "seed": training_args.seed,
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
        model = trainer.accelerator.unwrap_model(trainer.model)
        model = model.get_base_model() if hasattr(model, "get_base_model") else model  # LoRA: the PeftModel's base
        vocab_size = model.config.text_config.vocab_size  # the chance level is ln(vocab_size)
        loss_curve = plot_loss_curve(trainer.state.log_history, output_dir / LOSS_CURVE_FILE, vocab_size)
        logger.info("Saved the trained model, processor and loss curve to %s", output_dir)
    return TrainRunOutput(result, output_dir, loss_curve, eval_metrics, report)


def run_from_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), callbacks: Sequence[TrainerCallback] | None = None
) -> TrainRunOutput:
    """`parse_config` then `train`: what ``hf-instructblip train CONFIG [--section.key value ...]`` runs."""
    model_args, data_args, training_args = parse_config(path, overrides)
    return train(model_args, data_args, training_args, callbacks=callbacks)
