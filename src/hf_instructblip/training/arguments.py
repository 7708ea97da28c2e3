"""Argument classes of the `train` command's three config sections (`training.config` reads the file).

* ``training:`` `InstructBlipTrainingArguments`: transformers' `TrainingArguments` with the paper's recipe as
  defaults (arXiv 2305.06500 §2.6), below.
* ``model:`` `ModelArguments`: a saved model, or the parts to build one from (`building.build_model`); LoRA; dtype.
* ``data:`` `DataArguments`: training and evaluation datasets, sample counts, sequence lengths, feature cache.

The recipe: AdamW (0.9, 0.999), weight decay 0.05, lr 1e-5 with a 1000-step linear warm-up then cosine decay to 0.
(The paper warms up from 1e-8; transformers' linear warm-up starts from 0, a difference of 1e-8 in the first step.)
Batch size, the number of steps (at most 60K in the paper), evaluation every 3K steps and keeping the single best
checkpoint (`load_best_model_at_end=True, save_total_limit=1`) are yours to set for your data and hardware.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..data.schema import OnBadSample
from ..modeling_precision import FROZEN_DTYPES
from .lora import LORA_TARGETS

__all__ = ["DTYPES", "SYNTHETIC_GROUPS", "DataArguments", "InstructBlipTrainingArguments", "ModelArguments"]

#: Dataset names that stand for a whole synthetic split.
SYNTHETIC_GROUPS = ("synthetic_held_in", "synthetic_held_out")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class InstructBlipTrainingArguments(TrainingArguments):
    """`TrainingArguments` with InstructBLIP's defaults and the balanced-mixture options.

    Args:
        same_dataset_per_batch: With a mixture: every batch from one dataset (LAVIS) or mixed within a batch.
        mixture_multipliers: Manual per-dataset factors on top of the sqrt(size) weights (arXiv 2305.06500 §2.4).
        apply_trainable_policy: Freeze the vision tower and the LLM, train Q-Former, queries, projection and the
            vision LayerNorm (`InstructBlipForConditionalGeneration.apply_trainable_policy`).
        max_grad_norm: 0, i.e. no gradient clipping (transformers clips only when it is above 0; its default is 1.0):
            LAVIS' runner (``runners/runner_base.py``, ``tasks/base_task.py``) steps the optimizer on the unclipped
            gradients.
        frozen_dtype: Store the frozen vision tower and LLM in this dtype and the trained parts in fp32, as LAVIS
            does (`InstructBlipForConditionalGeneration.hold_frozen_in`), before the optimizer is created: ``auto``
            (bfloat16 where the hardware runs it natively: CUDA with bf16, x86 CPUs with AVX-512 BF16 or AMX, ARM
            CPUs with BF16; float16 on other CUDA GPUs, except T5 LLMs: float32; float32 elsewhere), ``bfloat16``,
            ``float16`` (refused for T5) or ``float32``. Default ``None``: the model is trained in the dtypes it
            has, so a Python script's results do not depend on the machine; the ``train`` command and the demo
            default to ``auto``. Unlike ``bf16=True`` (autocast, which casts the frozen weights anew at every step
            and keeps fp32 copies), the frozen parts are stored once in half precision: half their memory. With
            ``float16`` `InstructBlipTrainer` scales the loss (a ``GradScaler``, as LAVIS trains under AMP), so that
            the gradients flowing back through the LLM do not underflow.
        train_sampling_strategy: ``group_by_length`` (default here; transformers' is ``random``): batches of samples
            of similar LLM text length (`data.length_grouping`; lengths from a ``length_column_name`` column or
            counted once with `InstructBlipDataCollator.sample_lengths`), within the balanced mixture's batches too,
            so little padding is computed. Seeded and resumable. Without a way to measure the samples (another data
            collator and no length column) training falls back to ``random``, with a warning.
    """

    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (paper: 1e-5)."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (paper: 0.05)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1 (paper: 0.9)."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (paper: 0.999)."})
    warmup_steps: float = field(default=1000, metadata={"help": "Linear warm-up steps (paper: 1000)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Decay after warm-up (paper: cosine to 0)."})
    max_grad_norm: float = field(
        default=0.0,
        metadata={
            "help": "Gradient clipping norm; 0 turns clipping off (LAVIS: its runner and `tasks/base_task.py` do not "
            "clip). transformers' default is 1.0."
        },
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the unified-schema columns: the collator reads them."}
    )
    same_dataset_per_batch: bool = field(
        default=True, metadata={"help": "Mixture: whole batches from one dataset (LAVIS) instead of mixed."}
    )
    mixture_multipliers: dict[str, float] | None = field(
        default=None, metadata={"help": "Mixture: dataset name -> factor on top of the sqrt(size) weight."}
    )
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "With push_to_hub: push the final model once, in one commit (transformers' per-save pushes would "
            "upload pickled training_args.bin and optimizer states)."
        },
    )
    apply_trainable_policy: bool = field(
        default=True, metadata={"help": "Freeze vision tower and LLM; train Q-Former, queries, projection, ln_vision."}
    )
    frozen_dtype: str | None = field(
        default=None,
        metadata={
            "help": f"Vision tower and LLM stored in this dtype, trained parts in fp32; one of {FROZEN_DTYPES} (auto: "
            "bf16 where the hardware has it). Default: the train command and the demo use auto; the Python API "
            "(null) leaves the model's dtypes alone."
        },
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "group_by_length (default): batches of similar length, little padding; random, sequential, "
            "batch_rebalance: transformers' samplers (plain training only).",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )

    def __post_init__(self) -> None:
        _check_hyperparameters(self)  # before TrainingArguments' own set-up, and long before a model is built
        if self.frozen_dtype is not None and self.frozen_dtype not in FROZEN_DTYPES:
            raise ValueError(
                f"training.frozen_dtype must be one of {FROZEN_DTYPES} or null, got {self.frozen_dtype!r}."
            )
        super().__post_init__()


#: (key, test, what the value must be): values `TrainingArguments` accepts but that cannot train.
_HYPERPARAMETER_RULES: tuple[tuple[str, Any, str], ...] = (
    ("learning_rate", lambda v: v > 0, "> 0"),
    ("per_device_train_batch_size", lambda v: v >= 1, ">= 1"),
    ("per_device_eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("gradient_accumulation_steps", lambda v: v >= 1, ">= 1"),
    ("max_steps", lambda v: v > 0 or v == -1, "> 0 (or -1: train num_train_epochs epochs)"),
    ("weight_decay", lambda v: v >= 0, ">= 0"),
    ("warmup_steps", lambda v: v >= 0, ">= 0"),
    ("adam_beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("adam_beta2", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("adam_epsilon", lambda v: v > 0, "> 0"),
    ("max_grad_norm", lambda v: v >= 0, ">= 0 (0: no clipping)"),
    ("logging_steps", lambda v: v > 0, "> 0"),
    ("save_steps", lambda v: v > 0, "> 0"),
)


def _check_hyperparameters(args: TrainingArguments) -> None:
    """Refuse values that cannot train, naming the config key (``training.<key>``)."""
    for key, valid, requirement in _HYPERPARAMETER_RULES:
        value = getattr(args, key)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not valid(value):
            raise ValueError(f"training.{key} must be {requirement}, got {value!r}.")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"training.num_train_epochs must be > 0 (or set max_steps), got {args.num_train_epochs!r}.")


@dataclass
class ModelArguments:
    """The ``model:`` section: a saved model, or the parts to build one from (`building.build_model`).

    Args:
        model_name_or_path: A saved InstructBLIP folder (ours or transformers' layout) with its processor.
        vision: Build from parts: a vision model folder, a BLIP-2 folder (its ViT), or a config dict with
            ``model_type`` (random weights).
        qformer: Build from parts: a BERT folder, a saved InstructBLIP (its Q-Former is copied), a BLIP-2 folder (its
            Q-Former and query tokens, as the paper starts), or a Q-Former config dict (random weights;
            ``vocab_size`` defaults to the Q-Former tokenizer's size).
        qformer_text: For a BLIP-2 stage-2 ``qformer``: the stage-1 (``Blip2ForImageTextRetrieval``) or BERT folder
            its missing text parts (word/position embeddings, text FFN) come from.
        qformer_tokenizer: Q-Former tokenizer folder (default: the ``qformer`` folder; BLIP-2: ``qformer_text``'s).
        llm: Build from parts: an LLM folder, a BLIP-2 stage-2 folder (its LLM, and its projection is kept), or a
            config dict with ``model_type`` (random weights, tokenizer from ``llm_tokenizer``; ``vocab_size`` and
            the special token ids default to the tokenizer's).
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
    qformer: dict | str | None = field(
        default=None, metadata={"help": "BERT / BLIP-2 / InstructBLIP folder or config dict."}
    )
    qformer_text: str | None = field(default=None, metadata={"help": "BLIP-2 stage-1 / BERT folder: text parts."})
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
        if self.model_name_or_path is not None and self.qformer_text is not None:
            raise ValueError("model: `qformer_text` completes a BLIP-2 `qformer` when building from parts.")
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
        max_instruction_length: Longest instruction in LLM tokens, BOS included; longer ones lose their beginning
            (LAVIS ``max_txt_len``: 128; `InstructBlipDataCollator`).
        max_target_length: Longest target, eos included (LAVIS ``max_output_txt_len``: 256).
        max_length: Optional bound on the whole LLM input, image tokens included (default: none).
        augment_images: LAVIS' training image transform (random resized crop + horizontal flip). Default: on, but
            off with ``feature_cache_dir`` (the cache holds features of the evaluation transform: the fast path;
            random crops are the faithful one); ``true`` with a cache is refused, ``false`` trains on plain resizes.
        crop_scale: Area range of the random crop (LAVIS: [0.5, 1.0]).
        hflip: Horizontal flip probability (LAVIS: 0.5, for all data; flips mirror text and swap left/right).
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
    max_instruction_length: int | None = field(default=128, metadata={"help": "Longest instruction (LLM tokens)."})
    max_target_length: int | None = field(default=256, metadata={"help": "Longest target, eos included."})
    max_length: int | None = field(default=None, metadata={"help": "Longest LLM input, image tokens included."})
    augment_images: bool | None = field(default=None, metadata={"help": "Random resized crop + flip (LAVIS)."})
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0], metadata={"help": "Random crop area range."})
    hflip: float = field(default=0.5, metadata={"help": "Horizontal flip probability."})
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
