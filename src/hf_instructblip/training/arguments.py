"""Training arguments with the paper's recipe as defaults (arXiv 2305.06500 §2.6).

AdamW (0.9, 0.999), weight decay 0.05, lr 1e-5 with a 1000-step linear warm-up then cosine decay to 0. (The paper
warms up from 1e-8; transformers' linear warm-up starts from 0, a difference of 1e-8 in the first step.) Batch
size, the number of steps (at most 60K in the paper), evaluation every 3K steps and keeping the single best
checkpoint (`load_best_model_at_end=True, save_total_limit=1`) are yours to set for your data and hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["InstructBlipTrainingArguments"]


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
