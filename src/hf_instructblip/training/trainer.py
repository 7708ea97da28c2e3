"""`InstructBlipTrainer`: transformers' `Trainer` with the paper's freezing policy, the frozen parts held in half
precision (``frozen_dtype``) with loss scaling where that is fp16, the balanced mixture as the train sampler, batches
grouped by length, refusal of fp16 with T5 LLMs, a stop at the first non-finite loss, and the collator's training
image transform for training batches only.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from torch.utils.data import RandomSampler, SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import has_length
from transformers.utils import is_peft_available

from ..data.collator import InstructBlipDataCollator
from ..data.length_grouping import LengthGroupedSampler
from ..data.mixture import BalancedMixtureSampler
from .arguments import InstructBlipTrainingArguments

__all__ = ["InstructBlipTrainer", "hold_frozen_parts"]

logger = logging.getLogger(__name__)


def _is_peft_model(model: Any) -> bool:
    """A PeftModel's trainable set is PEFT's (`training.lora.apply_lora`): the full-model policy would freeze its LoRA."""
    if not is_peft_available():
        return False
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _base_model(model: Any) -> Any:
    return model.get_base_model() if _is_peft_model(model) else model


def _llm_held_in_float16(model: Any) -> bool:
    """Whether the model's LLM computes in fp16 (``frozen_dtype: float16``, or cast so before the trainer)."""
    llm = getattr(_base_model(model), "language_model", None)
    return llm is not None and any(param.dtype == torch.float16 for param in llm.parameters())


def hold_frozen_parts(model: Any, frozen_dtype: str | torch.dtype) -> torch.dtype:
    """`InstructBlipForConditionalGeneration.hold_frozen_in` for a model or a `PeftModel` around one.

    A PeftModel's adapters inside the LLM (trained, so fp32) keep their exact fp32 values; PEFT casts the LLM's
    half-precision activations to them and back.
    """
    base = _base_model(model)
    trained = {n: p.data for n, p in model.named_parameters() if p.requires_grad} if base is not model else {}
    dtype = base.hold_frozen_in(frozen_dtype)
    for name, param in model.named_parameters():
        if name in trained:  # a copy: the original may view the mapped checkpoint (see modeling_precision)
            param.data = trained[name] if dtype == torch.float32 else trained[name].clone()
    return dtype


class _CollatorEpoch(TrainerCallback):
    """Tells the collator each epoch (`InstructBlipDataCollator.set_epoch`), so its random crops change per epoch."""

    def __init__(self, collator: InstructBlipDataCollator):
        self.collator = collator

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.collator.train_transform is not None and args.dataloader_persistent_workers:
            raise ValueError(
                "dataloader_persistent_workers keeps copies of the data collator made before the first epoch, so its "
                "random crops could not change per epoch (and a resumed run would crop differently). Turn persistent "
                "workers off, or train without random crops (data collator augment_images=False)."
            )

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.collator.set_epoch(int(state.epoch or 0))  # a resumed run's epoch is fractional: floor it


class InstructBlipTrainer(Trainer):
    """A `transformers.Trainer` for instruction tuning InstructBLIP.

    The loss is the token mean of the whole batch, however it is split: `Trainer` counts the target tokens of all
    the micro-batches of a step (and, with ``average_tokens_across_devices``, on by default, of all the processes) and
    passes the count as ``num_items_in_batch``; the model divides its summed token loss by it, on every LLM path
    (`InstructBlipForConditionalGeneration.forward`). Gradient accumulation and the number of processes change
    neither the update nor the logged loss, as with a plain `Trainer`.

    An LLM held in fp16 (``frozen_dtype: float16``, ``auto`` on CUDA GPUs without bf16) trains with loss scaling, as
    LAVIS trains under AMP with a ``GradScaler``: the small gradients that flow back through it to the Q-Former would
    otherwise underflow fp16, the more so the more target tokens a batch averages over (the demo's model after 120
    steps, batches of 8: the trained parts' gradient up to 2.5% off fp32's in norm without scaling, within 0.6% with
    it; benchmarks/README.md). Where ``fp16=True`` gives accelerate's ``GradScaler`` (with autocast of the trained
    parts, LAVIS' recipe) that one scales; otherwise the trainer installs a ``torch.amp.GradScaler`` without autocast
    (the trained parts compute in fp32), on any device. Either way the loss is scaled for the backward, the gradients
    are unscaled before they are clipped or measured, a step whose gradients overflowed is skipped (weights, optimizer
    state and learning-rate schedule untouched) and the scale is lowered, and the scaler's state is saved with the
    checkpoints.

    Args:
        model: An `InstructBlipForConditionalGeneration`.
        args: [`InstructBlipTrainingArguments`].
        mixture_sizes: Dataset name -> size, in the order the datasets were concatenated into ``train_dataset``
            (`data.concatenate_mixture`); with it the train sampler is the balanced mixture (arXiv 2305.06500 §2.4).
        zero_shot_datasets: Evaluated with the paper's protocol (`evaluation.evaluate_zero_shot`: generation or
            ranking, and each dataset's metric) at every evaluation: names, or ``{name: dataset}`` in the unified
            schema. Metrics are logged as ``eval_<dataset>_<metric>`` plus ``eval_zero_shot_average``, so
            ``metric_for_best_model="zero_shot_average"`` with ``load_best_model_at_end=True`` keeps the best
            checkpoint. Needs ``processing_class=processor``. Datasets given as a mapping are also the
            ``eval_dataset`` when there is none (their eval loss is logged too).
        zero_shot_generation: Overrides of the paper's generation settings for them (e.g. ``{"num_beams": 1}``).
        **kwargs: Everything `Trainer` takes (``train_dataset``, ``data_collator``, ``eval_dataset``, callbacks, ...).
    """

    def __init__(
        self,
        model: Any = None,
        args: InstructBlipTrainingArguments | None = None,
        mixture_sizes: Mapping[str, int] | None = None,
        zero_shot_datasets: Mapping[str, Any] | Sequence[str] | None = None,
        zero_shot_generation: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        args = args if args is not None else InstructBlipTrainingArguments(output_dir="outputs/instructblip")
        if model is not None:
            self._check_precision(model, args)
            if getattr(args, "apply_trainable_policy", False) and not _is_peft_model(model):
                model.apply_trainable_policy()
            frozen_dtype = getattr(args, "frozen_dtype", None)
            if frozen_dtype is not None:  # before Trainer creates the optimizer
                self._hold_frozen_parts(model, frozen_dtype)
        self._scales_fp16_llm = model is not None and _llm_held_in_float16(model)
        self._train_lengths: tuple[int, list[int] | None] | None = None  # (id of the dataset, its lengths)
        self.mixture_sizes = dict(mixture_sizes) if mixture_sizes else None
        if zero_shot_datasets and kwargs.get("processing_class") is None:
            raise ValueError("zero_shot_datasets needs processing_class=<the model's processor> to build the prompts.")
        if isinstance(zero_shot_datasets, Mapping) and kwargs.get("eval_dataset") is None:
            kwargs["eval_dataset"] = dict(zero_shot_datasets)  # their eval loss too (and Trainer wants an eval set)
        self.zero_shot_datasets = zero_shot_datasets
        self.zero_shot_generation = dict(zero_shot_generation or {})
        super().__init__(model=model, args=args, **kwargs)
        self._check_engine_enabled()
        if self.label_smoother is not None and self.compute_loss_func is None:
            # Trainer shifts the labels for its smoother only for classes in its causal-LM mapping, which ours is not
            # in: each position would be scored on its own input token. Our loss function shifts for causal LLMs.
            self.compute_loss_func = self._label_smoothed_loss
        if isinstance(self.data_collator, InstructBlipDataCollator):
            self.add_callback(_CollatorEpoch(self.data_collator))

    def create_accelerator_and_postprocess(self) -> None:
        """`Trainer`'s, plus a ``GradScaler`` for an fp16 LLM where accelerate gives none (see the class docstring)."""
        super().create_accelerator_and_postprocess()
        self._own_scaler = False  # whether accelerator.scaler is the one this trainer installed
        if not self._scales_fp16_llm or self.accelerator.scaler is not None:
            return
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            logger.warning(
                "The LLM is held in float16 and %s scales fp16 gradients only with fp16=True: without it gradients "
                "that flow back through the LLM can underflow. Set fp16=True, or frozen_dtype bfloat16/float32.",
                "DeepSpeed" if self.is_deepspeed_enabled else "FSDP",
            )
            return
        self.accelerator.scaler = torch.amp.GradScaler(self.accelerator.device.type)
        self._own_scaler = True

    def _unscale_gradients(self) -> None:
        """Unscale the installed scaler's gradients before they are clipped or measured (accelerate does the same
        for its own scaler in ``clip_grad_norm_``); its ``step`` then skips a step whose gradients overflowed."""
        if self._own_scaler:
            optimizer = self.optimizer
            while isinstance(optimizer, AcceleratedOptimizer):
                optimizer = optimizer.optimizer
            self.accelerator.scaler.unscale_(optimizer)

    def _clip_grad_norm(self, model: Any) -> Any:
        self._unscale_gradients()
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        if grad_norm is None:  # not clipped (max_grad_norm 0): not unscaled yet
            self._unscale_gradients()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    @contextmanager
    def _evaluation_collator(self) -> Iterator[None]:
        """Evaluation batches use the collator's evaluation image transform (its random crops are for training)."""
        collator = self.data_collator
        if isinstance(collator, InstructBlipDataCollator):
            self.data_collator = collator.for_evaluation()
        try:
            yield
        finally:
            self.data_collator = collator

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        with self._evaluation_collator():
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        with self._evaluation_collator():
            return super().get_test_dataloader(test_dataset)

    def _check_engine_enabled(self) -> None:
        """accelerate drops an FSDP config on CPU processes (``AcceleratorState.__init__`` enables FSDP on accelerators
        only) and `Trainer` then trains with plain DDP: refuse, rather than train unsharded without a word."""
        if self.args.fsdp_plugin_args is not None and not (self.is_fsdp_enabled or self.is_fsdp_xla_enabled):
            raise ValueError(
                f"fsdp is set, but accelerate did not enable FSDP ({self.accelerator.distributed_type}): it does so "
                "only on accelerators (CUDA, XPU, NPU, ...), and this run would train with plain DDP, unsharded. "
                "Run on GPUs, or drop training.fsdp / fsdp_config to train with DDP on CPU."
            )

    @staticmethod
    def _check_precision(model: Any, args: InstructBlipTrainingArguments) -> None:
        text_config = model.config.text_config
        if args.fp16 and text_config.model_type in ("t5", "mt5", "umt5"):
            raise ValueError(
                f"fp16 with a {text_config.model_type} LLM overflows (NaN losses; LAVIS `blip2_t5_instruct.py` runs "
                "T5 in bf16). Use bf16=True, or fp32."
            )

    @staticmethod
    def _hold_frozen_parts(model: Any, frozen_dtype: str) -> None:
        dtype = hold_frozen_parts(model, frozen_dtype)
        half = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
        if half:
            raise ValueError(
                f"training.frozen_dtype={frozen_dtype} holds the vision tower and the LLM in {dtype}, but {len(half)} "
                f"of their parameters are trained ({half[0]}, ...): trained weights need fp32 (AdamW updates would "
                "round away in half precision). Train them with LoRA (model.lora_target), or set frozen_dtype float32."
            )
        logger.info("Frozen vision tower and LLM held in %s, trained parts in float32.", dtype)

    def _sample_lengths(self, dataset: Any) -> list[int] | None:
        """Each training sample's length (computed once), or None where they cannot be measured (with a warning)."""
        if self._train_lengths is not None and self._train_lengths[0] == id(dataset):
            return self._train_lengths[1]
        column = self.args.length_column_name
        lengths: list[int] | None = None
        if column in (getattr(dataset, "column_names", None) or ()):
            lengths = [int(length) for length in dataset[column]]
        elif isinstance(self.data_collator, InstructBlipDataCollator):
            logger.info("Counting the text tokens of %d training samples, to batch them by length.", len(dataset))
            lengths = self.data_collator.sample_lengths(dataset)
        else:
            logger.warning(
                "train_sampling_strategy=group_by_length needs the samples' lengths: a %r column, or "
                "InstructBlipDataCollator to count their tokens; this %s is neither, so batches are drawn at random.",
                column,
                type(self.data_collator).__name__,
            )
        self._train_lengths = (id(dataset), lengths)
        return lengths

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        dataset: Any = train_dataset if train_dataset is not None else self.train_dataset
        args: InstructBlipTrainingArguments = self.args  # type: ignore[assignment]
        grouping = args.train_sampling_strategy == "group_by_length" and dataset is not None and has_length(dataset)
        lengths = self._sample_lengths(dataset) if grouping else None
        # the samples of one optimizer step over all processes: grouped together, however the step is split
        step_samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
        if self.mixture_sizes is None:
            if lengths is None:
                return super()._get_train_sampler(train_dataset) if not grouping else RandomSampler(dataset)
            return LengthGroupedSampler(lengths, batch_size=step_samples, seed=args.seed)
        total = sum(self.mixture_sizes.values())
        if dataset is not None and len(dataset) != total:
            raise ValueError(
                f"mixture_sizes add up to {total} samples but train_dataset has {len(dataset)}; pass the sizes of "
                "the datasets concatenated into train_dataset, in order."
            )
        return BalancedMixtureSampler(
            self.mixture_sizes,
            batch_size=args.per_device_train_batch_size,
            multipliers=args.mixture_multipliers,
            same_dataset_per_batch=args.same_dataset_per_batch,
            seed=args.seed,
            lengths=lengths,
            group_size=step_samples,
        )

    def _get_eval_sampler(self, eval_dataset: Any) -> torch.utils.data.Sampler | None:
        """Evaluation batches keep the dataset's order: length grouping is for training (transformers would group
        evaluation batches too, by an ``input_ids`` column unified samples do not have)."""
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_eval_sampler(eval_dataset)
        if eval_dataset is None or not has_length(eval_dataset) or self.args.world_size > 1:
            return None
        return SequentialSampler(eval_dataset)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """`Trainer.evaluate` (the loss on ``eval_dataset``), plus the zero-shot metrics of ``zero_shot_datasets``."""
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None or not self.zero_shot_datasets:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.zero_shot_datasets and eval_dataset is None:
            zero_shot = self._zero_shot_metrics(metric_key_prefix)
            self.log(zero_shot)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, zero_shot)
            metrics.update(zero_shot)
        return metrics

    def _zero_shot_metrics(self, prefix: str) -> dict[str, float]:
        """Every process runs the whole protocol, so that all agree on the best checkpoint."""
        from ..evaluation.harness import evaluate_zero_shot

        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        results = evaluate_zero_shot(
            model,
            self.processing_class,
            self.zero_shot_datasets,  # type: ignore[arg-type]
            batch_size=self.args.per_device_eval_batch_size,
            generation=self.zero_shot_generation,
            progress=False,
        )
        model.train(was_training)
        metrics = {f"{prefix}_{name}_{result.metric}": result.score for name, result in results.items()}
        metrics[f"{prefix}_zero_shot_average"] = sum(r.score for r in results.values()) / len(results)
        return metrics

    def _decoder_only(self) -> bool:
        return bool(self.accelerator.unwrap_model(self.model).config.use_decoder_only_language_model)

    def _label_smoothed_loss(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        """``label_smoothing_factor``'s loss, each label scored at the position that predicts it (causal: shifted)."""
        assert self.label_smoother is not None  # only installed with one
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        outputs = {"logits": logits.float()}  # a half-precision LLM's logits: the loss in fp32
        return self.label_smoother(
            outputs, labels, shift_labels=self._decoder_only(), num_items_in_batch=num_items_in_batch
        )

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """`Trainer.compute_loss`; an encoder-decoder LLM gets its decoder inputs from the labels even when the
        label-smoothing loss takes the labels away from the model."""
        smoothing = self.compute_loss_func == self._label_smoothed_loss and "labels" in inputs
        if smoothing and "decoder_input_ids" not in inputs and not self._decoder_only():
            llm = self.accelerator.unwrap_model(model)
            llm = _base_model(llm).language_model
            decoder_input_ids = llm.prepare_decoder_input_ids_from_labels(labels=inputs["labels"])
            inputs = {**inputs, "decoder_input_ids": decoder_input_ids}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"Non-finite training loss ({float(loss.detach())}) at step {self.state.global_step + 1}; training "
                "stopped before the optimizer step, so the last saved checkpoint is intact."
            )
        return loss

    def _card_info(self, finetuned_from: str | None = None, license: str | None = None, **kwargs: Any) -> Any:
        from ..hub import CardInfo

        args: InstructBlipTrainingArguments = self.args  # type: ignore[assignment]
        dataset, tags = kwargs.get("dataset"), kwargs.get("tags")
        return CardInfo(
            base_model=finetuned_from,
            license=license,
            datasets=[dataset] if isinstance(dataset, str) else dataset,
            tags=[tags] if isinstance(tags, str) else list(tags or []),
            mixture_sizes=self.mixture_sizes,
            mixture_multipliers=args.mixture_multipliers,
            training_args=args.to_dict(),
            log_history=self.state.log_history,
        )

    def create_model_card(
        self,
        language: str | None = None,
        license: str | None = None,
        tags: str | list[str] | None = None,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        tasks: str | list[str] | None = None,
        dataset_tags: str | list[str] | None = None,
        dataset: str | list[str] | None = None,
        dataset_args: str | list[str] | None = None,
    ) -> None:
        """Write hf_instructblip's model card (`hub.render_model_card`) to ``output_dir/README.md``.

        The card lists the components, this trainer's mixture with its sampling weights, the hyperparameters and the
        last logged loss. ``language``, ``tasks``, ``dataset_tags`` and ``dataset_args`` are not used.
        """
        if not self.is_world_process_zero():
            return
        from ..hub import render_model_card

        card = self._card_info(finetuned_from, license, tags=tags, dataset=dataset)
        output_dir = str(self.args.output_dir)
        repo_id = self.hub_model_id or model_name or os.path.basename(os.path.abspath(output_dir))
        render_model_card(output_dir, repo_id, card).save(os.path.join(output_dir, "README.md"))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save the model and push ``output_dir`` with `hub.push_to_hub`: one atomic commit of the weights
        (safetensors), processor, remote code and our model card; pickles (``training_args.bin``) and checkpoints stay
        local. ``kwargs`` (``finetuned_from``, ``license``, ``tags``, ``dataset``) go on the card; ``blocking`` is
        accepted for compatibility (the push always blocks).

        Returns:
            The `huggingface_hub.CommitInfo`, or None on processes other than the main one.
        """
        from ..hub import push_to_hub

        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        token = token if token is not None else self.args.hub_token
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        card_fields = ("finetuned_from", "license", "tags", "dataset", "model_name")
        self.create_model_card(**{key: value for key, value in kwargs.items() if key in card_fields})
        return push_to_hub(  # the card just written to output_dir goes along
            str(self.args.output_dir),
            str(self.hub_model_id),  # set by init_hf_repo
            token=token,
            private=bool(private if private is not None else self.args.hub_private_repo),
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message,
        )
