"""InstructBlipTrainer: paper defaults, what trains and what stays frozen, the mixture sampler, precision, NaN stop."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import assert_moved_exactly, make_processor, model_for
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import BalancedMixtureSampler, concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments


def _args(tmp_path, **overrides) -> InstructBlipTrainingArguments:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "max_steps": 20,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    return InstructBlipTrainingArguments(**{**settings, **overrides})


@pytest.fixture(scope="module")
def setup(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    parts = synthetic_mixture(SYNTHETIC_HELD_IN, 8, seed=0, image_size=32)
    return processor, parts


def test_paper_defaults(tmp_path):
    args = InstructBlipTrainingArguments(output_dir=str(tmp_path))
    assert (args.learning_rate, args.weight_decay, args.adam_beta1, args.adam_beta2) == (1e-5, 0.05, 0.9, 0.999)
    assert args.warmup_steps == 1000 and args.lr_scheduler_type == "cosine"
    assert args.apply_trainable_policy and not args.remove_unused_columns


def test_training_moves_exactly_the_trainable_parameters_and_lowers_the_loss(setup, tmp_path):
    processor, parts = setup
    model = model_for(processor, "llama", seed=4)
    collator = InstructBlipDataCollator.for_model(model, processor)
    dataset = concatenate_mixture(parts)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    fixed = collator([dataset[i] for i in range(0, len(dataset), 5)])
    model.eval()
    with torch.no_grad():
        loss_before = model(**fixed).loss.item()

    trainer = InstructBlipTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=dataset,
        data_collator=collator,
        mixture_sizes={name: len(part) for name, part in parts.items()},
    )
    assert isinstance(trainer._get_train_sampler(), BalancedMixtureSampler)
    trainer.train()

    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if model.is_trainable_by_default(n)}
    assert_moved_exactly(model.named_parameters(), before, trainable)
    model.eval()
    with torch.no_grad():
        loss_after = model(**fixed).loss.item()
    assert loss_after < loss_before - 0.1, (loss_before, loss_after)


def test_fp16_with_t5_is_refused(setup, tmp_path):
    processor, _ = setup
    model = model_for(processor, "t5")
    args = _args(tmp_path)
    args.fp16 = True  # set after construction: fp16 itself needs a GPU at argument-parsing time
    with pytest.raises(ValueError, match="fp16 with a t5 LLM overflows"):
        InstructBlipTrainer(model=model, args=args)


def test_bf16_trains_a_t5_model(setup, tmp_path):
    processor, parts = setup
    model = model_for(processor, "t5")
    before = model.query_tokens.detach().clone()
    trainer = InstructBlipTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3, bf16=True),  # CPU autocast in bf16: what a GPU run with T5 uses
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor),
    )
    result = trainer.train()
    assert trainer.accelerator.mixed_precision == "bf16"
    assert math.isfinite(result.training_loss)
    assert not torch.equal(model.query_tokens.detach(), before)


def test_mixture_sizes_must_match_the_dataset(setup, tmp_path):
    processor, parts = setup
    model = model_for(processor, "llama")
    trainer = InstructBlipTrainer(
        model=model,
        args=_args(tmp_path),
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor),
        mixture_sizes={"only_one": 3},
    )
    with pytest.raises(ValueError, match="mixture_sizes add up to 3 samples"):
        trainer._get_train_sampler()


def test_non_finite_loss_stops_training_naming_the_step(setup, tmp_path):
    processor, parts = setup
    model = model_for(processor, "llama")
    with torch.no_grad():
        model.language_projection.bias.fill_(float("nan"))
    trainable_before = {n: p.detach().clone() for n, p in model.named_parameters() if model.is_trainable_by_default(n)}
    trainer = InstructBlipTrainer(
        model=model,
        args=_args(tmp_path, max_steps=3),
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor),
    )
    with pytest.raises(FloatingPointError, match="at step 1"):
        trainer.train()
    for name, value in trainable_before.items():  # no optimizer step was taken
        assert torch.equal(model.get_parameter(name).detach(), value) or torch.isnan(value).any(), name


def test_generation_metrics_during_training_keep_the_best_checkpoint(setup, tmp_path):
    from hf_instructblip.data.synthetic import synthetic_dataset
    from hf_instructblip.evaluation.harness import evaluate_zero_shot

    processor, parts = setup
    model = model_for(processor, "llama", seed=2)
    zero_shot = {  # one ranked (held-out, candidates) and one generated task
        name: synthetic_dataset(name, 4, seed=9, image_size=32) for name in ("synthetic_yes_no", "synthetic_vqa")
    }
    generation = {"num_beams": 1, "max_new_tokens": 3}
    trainer = InstructBlipTrainer(
        model=model,
        args=_args(
            tmp_path,
            max_steps=4,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            load_best_model_at_end=True,
            metric_for_best_model="zero_shot_average",
            per_device_eval_batch_size=4,
        ),
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor),
        processing_class=processor,
        zero_shot_datasets=zero_shot,
        zero_shot_generation=generation,
    )
    trainer.train()

    evaluations = [entry for entry in trainer.state.log_history if "eval_zero_shot_average" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    assert {"eval_synthetic_yes_no_accuracy", "eval_synthetic_vqa_accuracy"} <= evaluations[0].keys()
    losses = [entry for entry in trainer.state.log_history if "eval_synthetic_vqa_loss" in entry]
    assert len(losses) == 2  # the zero-shot sets were the eval sets too
    best = max(entry["eval_zero_shot_average"] for entry in evaluations)
    assert trainer.state.best_metric == best
    best_step = next(entry["step"] for entry in evaluations if entry["eval_zero_shot_average"] == best)  # ties: first
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    # the model in hand at the end holds the best checkpoint's weights, not the last step's
    saved = {step: load_file(str(tmp_path / "run" / f"checkpoint-{step}" / "model.safetensors")) for step in (2, 4)}
    trained = [name for name, param in model.named_parameters() if param.requires_grad]
    for name in trained:
        assert torch.equal(trainer.model.get_parameter(name).detach(), saved[best_step][name]), name
    assert any(not torch.equal(saved[2][name], saved[4][name]) for name in trained)
    # the model in hand at the end is the best checkpoint: scoring it again gives the best metric
    again = evaluate_zero_shot(trainer.model, processor, zero_shot, generation=generation, progress=False)
    assert sum(r.score for r in again.values()) / len(again) == trainer.state.best_metric


def test_zero_shot_evaluation_needs_the_processor(setup, tmp_path):
    processor, _ = setup
    with pytest.raises(ValueError, match="zero_shot_datasets needs processing_class"):
        InstructBlipTrainer(model=model_for(processor), args=_args(tmp_path), zero_shot_datasets=["synthetic_vqa"])
