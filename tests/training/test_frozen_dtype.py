"""``frozen_dtype`` in training: InstructBlipTrainer holds the frozen parts in half precision before the optimizer
exists (fp32 trained parts, fp32 optimizer states only), LoRA adapters stay fp32, trained half-precision weights are
refused, an fp16 LLM trains with loss scaling (unscaled before clipping, overflowing steps skipped), and the train
command defaults to "auto" and records what it chose."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import assert_moved_exactly, make_processor, model_for
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.modeling_precision import resolve_frozen_dtype
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments, apply_lora
from hf_instructblip.training.run import run_from_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _args(tmp_path, **overrides) -> InstructBlipTrainingArguments:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "max_steps": 3,
        "learning_rate": 1e-3,
        "warmup_steps": 0,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
        "frozen_dtype": "bfloat16",
    }
    return InstructBlipTrainingArguments(**{**settings, **overrides})


@pytest.fixture(scope="module")
def setup(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    return processor, concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN, 4, seed=0, image_size=32))


def _trainer(model, processor, dataset, args) -> InstructBlipTrainer:
    collator = InstructBlipDataCollator.for_model(model, processor, augment_images=False)
    return InstructBlipTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)


def test_frozen_parts_are_half_trained_parts_and_optimizer_states_fp32(setup, tmp_path):
    processor, dataset = setup
    model = model_for(processor, "llama", seed=1)
    trainer = _trainer(model, processor, dataset, _args(tmp_path))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, param in model.named_parameters():  # held before the optimizer exists
        frozen_part = name.startswith(("vision_model.", "language_model.")) and not model.is_trainable_by_default(name)
        assert param.dtype == (torch.bfloat16 if frozen_part else torch.float32), name
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    assert trainer.accelerator.scaler is None  # bf16 has fp32's range: no loss scaling
    trainer.train()
    assert_moved_exactly(model.named_parameters(), before, trainable)
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    assert optimized and {p.dtype for p in optimized} == {torch.float32}
    states = [t for state in trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    assert {t.dtype for t in states if t.is_floating_point() and t.ndim > 0} == {torch.float32}  # exp_avg(_sq)
    assert len(trainer.optimizer.state) == len([p for p in optimized if p.requires_grad])


def test_lora_adapters_in_the_half_precision_llm_keep_their_fp32_values(setup, tmp_path):
    processor, dataset = setup
    peft_model = apply_lora(model_for(processor, "llama", seed=2), target="llm")
    adapters = {n: p.detach().clone() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in adapters)
    trainer = _trainer(peft_model, processor, dataset, _args(tmp_path, max_steps=2))
    for name, param in peft_model.named_parameters():
        if name in adapters:
            assert param.dtype == torch.float32 and torch.equal(param, adapters[name]), name
        elif ".language_model." in name:
            assert param.dtype == torch.bfloat16, name
    trainer.train()
    losses = [e["train_loss"] for e in trainer.state.log_history if "train_loss" in e]
    assert losses and torch.isfinite(torch.tensor(losses)).all()
    assert any(not torch.equal(p, adapters[n]) for n, p in peft_model.named_parameters() if "lora_B" in n)


def _sgd_trainer(setup, tmp_path, frozen_dtype: str, **overrides) -> InstructBlipTrainer:
    """3 SGD steps with clipping, from seed 3's weights."""
    processor, dataset = setup
    settings = {"optim": "sgd", "learning_rate": 0.1, "max_grad_norm": 0.5, "logging_steps": 1} | overrides
    args = _args(tmp_path / frozen_dtype, frozen_dtype=frozen_dtype, **settings)
    return _trainer(model_for(processor, "llama", seed=3), processor, dataset, args)


def _train(trainer: InstructBlipTrainer, **kwargs) -> tuple[dict, list]:
    """Train; (the trained parts' moves, the logged gradient norms)."""
    named = dict(trainer.model.named_parameters())
    before = {n: p.detach().float().clone() for n, p in named.items() if p.requires_grad}
    trainer.train(**kwargs)
    moves = {n: named[n].detach().float() - before[n] for n in before}
    return moves, [e["grad_norm"] for e in trainer.state.log_history if "grad_norm" in e]


def test_an_fp16_llm_trains_with_loss_scaling_like_fp32(setup, tmp_path):
    fp32 = _sgd_trainer(setup, tmp_path, "float32")  # each trained right after it is made: the same random state
    fp32_moves, fp32_norms = _train(fp32)
    fp16 = _sgd_trainer(setup, tmp_path, "float16")
    fp16_moves, fp16_norms = _train(fp16)
    assert fp32.accelerator.scaler is None
    assert isinstance(fp16.accelerator.scaler, torch.amp.GradScaler) and fp16.accelerator.scaler.is_enabled()
    assert fp16.accelerator.scaler.get_scale() == 2.0**16  # torch's initial scale, no step skipped
    assert len(fp16_norms) == len(fp32_norms) == 3
    # the gradients were unscaled before they were measured and clipped: fp32's norms and updates, to fp16's rounding
    assert fp16_norms == pytest.approx(fp32_norms, rel=0.02)
    assert max(fp32_norms) > 0.5  # clipping took part
    for name, move in fp32_moves.items():
        torch.testing.assert_close(fp16_moves[name], move, rtol=0.05, atol=2e-3 * float(move.abs().max()), msg=name)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_lowered_and_saved(setup, tmp_path):
    start = 2.0**40  # the logits' gradient times 2**40 overflows fp16 on its way into the LLM
    trainer = _sgd_trainer(setup, tmp_path, "float16", save_strategy="steps", save_steps=2)
    trainer.accelerator.scaler = torch.amp.GradScaler("cpu", start)
    moves, norms = _train(trainer)
    assert all(torch.equal(move, torch.zeros_like(move)) for move in moves.values())  # no step taken, no inf written
    assert trainer.accelerator.scaler.get_scale() == start / 2**3  # halved at each of the 3 skipped steps
    assert trainer.accelerator.optimizer_step_was_skipped
    assert trainer.lr_scheduler.last_epoch == 0  # the schedule waits for real steps, as with accelerate's scaler
    assert len(norms) == 3 and all(not math.isfinite(norm) for norm in norms)  # logged as what they were
    # a run resumed from step 2 goes on from the scale it had there, not from a fresh scaler's 2**16
    resumed = _sgd_trainer(setup, tmp_path, "float16")
    checkpoint = tmp_path / "float16" / "run" / "checkpoint-2"
    _train(resumed, resume_from_checkpoint=str(checkpoint))
    assert resumed.accelerator.scaler.get_scale() == start / 2**3


def test_a_trained_weight_of_the_half_precision_llm_is_refused(setup, tmp_path):
    processor, dataset = setup
    model = model_for(processor, "llama")  # every parameter requires grad: no policy applied
    with pytest.raises(ValueError, match=r"holds the vision tower and the LLM in torch.bfloat16, but \d+ of their"):
        _trainer(model, processor, dataset, _args(tmp_path, apply_trainable_policy=False))


def test_unknown_frozen_dtype_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"training\.frozen_dtype must be one of"):
        _args(tmp_path, frozen_dtype="half")


def test_python_api_default_leaves_the_model_alone(setup, tmp_path):
    processor, dataset = setup
    model = model_for(processor, "llama")
    _trainer(model, processor, dataset, _args(tmp_path, frozen_dtype=None))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.fixture(scope="module")
def model_dir(tokenizer_dirs, tmp_path_factory) -> Path:
    processor = make_processor(tokenizer_dirs)
    path = tmp_path_factory.mktemp("tiny-model")
    model_for(processor, "llama", seed=0).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _config(tmp_path: Path, model_dir: Path, model: dict | None = None, **training) -> Path:
    config = {
        "model": {"model_name_or_path": str(model_dir), **(model or {})},
        "data": {"datasets": ["synthetic_vqa"], "samples_per_dataset": 8},
        "training": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": True,
            **training,
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_command_holds_auto_by_default(model_dir, tmp_path):
    """ "auto" is this machine's choice (bf16 with native support, else fp32); the model is saved as held."""
    expected = "BF16" if resolve_frozen_dtype("auto", "cpu", "llama") == torch.bfloat16 else "F32"
    run = run_from_config(_config(tmp_path, model_dir))
    with safe_open(str(run.output_dir / "model.safetensors"), framework="pt") as f:
        stored = {n: f.get_slice(n).get_dtype() for n in f.keys()}  # noqa: SIM118
    assert {d for n, d in stored.items() if n.startswith("language_model.")} == {expected}
    assert {d for n, d in stored.items() if n.startswith(("qformer.", "query_tokens"))} == {"F32"}


def test_train_command_pinned_to_float32_and_model_dtype_conflict(model_dir, tmp_path):
    run = run_from_config(_config(tmp_path, model_dir, frozen_dtype="float32"))
    with safe_open(str(run.output_dir / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(n).get_dtype() for n in f.keys()} == {"F32"}  # noqa: SIM118
    with pytest.raises(ValueError, match=r"model\.dtype=bfloat16 casts the whole model"):
        run_from_config(_config(tmp_path, model_dir, model={"dtype": "bfloat16"}, frozen_dtype="bfloat16"))
