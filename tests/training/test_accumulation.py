"""Splitting a batch into micro-batches (gradient accumulation) or processes changes neither the update nor the loss.

transformers' Trainer counts the batch's target tokens (``num_items_in_batch``, over every micro-batch and, with
``average_tokens_across_devices``, every process) and passes the count to the model, which divides its summed token
loss by it, on every path: a causal LLM with the target-only head, a causal LLM through its own loss
(``return_logits=True``, as for families outside the plain-head set) and T5. The samples' targets have different
lengths, so the token mean of the batch differs from the mean of per-micro-batch means: a model that returned a
micro-batch mean would fail here. One batch of 4 samples (4 x 1) is the reference for 2 x 2 accumulation, for two
processes of 2 (``torchrun``, gloo on CPU) and for two processes of 1 x 2, under InstructBlipTrainer and a plain
Trainer. Run as a script under torchrun, the file trains every case in one launch and saves what it got.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainingArguments

from conftest import IMAGE_TOKEN, NUM_QUERY, QFORMER, perturb_, tiny_config
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

#: Target lengths of the 8 samples (2 steps of 4): ragged, so a token mean differs from a mean of means.
TARGET_LENGTHS = (1, 2, 6, 7, 5, 1, 3, 2)
PROMPT_LENGTH = 3
STEPS = 2
#: name -> (LLM, return_logits): the target-only head, the causal LLM's own loss, T5 (one loss path).
CASES = {"llama_target_only": ("llama", False), "llama_llm_loss": ("llama", True), "t5": ("t5", False)}
TRAINERS = ("instructblip", "plain")
#: (per-device batch, accumulation steps) of the 2-process runs: 4 samples per step in all.
DISTRIBUTED_LAYOUTS = ((2, 1), (1, 2))
TIMEOUT = 300


def _model(llm: str) -> InstructBlipForConditionalGeneration:
    """A tiny model without dropout, so every layout sees the same activations."""
    config = tiny_config(llm).to_dict()
    config["qformer_config"] = {**QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config["text_config"]["dropout_rate"] = 0.0  # T5
    torch.manual_seed(0)
    model = perturb_(InstructBlipForConditionalGeneration(InstructBlipConfig(**config)))
    model.apply_trainable_policy()  # the plain Trainer trains what InstructBlipTrainer trains
    return model


def _samples(llm: str) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for length in TARGET_LENGTHS:
        prompt = torch.randint(3, IMAGE_TOKEN, (PROMPT_LENGTH,), generator=generator)
        target = torch.randint(3, IMAGE_TOKEN, (length,), generator=generator)
        llm_input = torch.cat([torch.full((NUM_QUERY,), IMAGE_TOKEN), prompt])
        if llm == "t5":
            input_ids, labels = llm_input, target
        else:  # causal: the target follows the prompt, and only it is labelled
            input_ids = torch.cat([llm_input, target])
            labels = torch.cat([torch.full((len(llm_input),), -100), target])
        samples.append(
            {
                "pixel_values": torch.randn(3, 30, 30, generator=generator),
                "qformer_input_ids": torch.randint(1, QFORMER["vocab_size"], (6,), generator=generator),
                "input_ids": input_ids,
                "labels": labels,
            }
        )
    return samples


class _Collator:
    """Right-pads the LLM input and the labels; ``return_logits`` selects the causal LLM's own loss."""

    def __init__(self, return_logits: bool):
        self.return_logits = return_logits

    def __call__(self, features: list[dict[str, torch.Tensor]]) -> dict:
        def pad(key: str, value: int) -> torch.Tensor:
            longest = max(len(f[key]) for f in features)
            return torch.stack(
                [torch.cat([f[key], f[key].new_full((longest - len(f[key]),), value)]) for f in features]
            )

        input_ids = pad("input_ids", 0)
        batch = {
            "pixel_values": torch.stack([f["pixel_values"] for f in features]),
            "qformer_input_ids": torch.stack([f["qformer_input_ids"] for f in features]),
            "input_ids": input_ids,
            "attention_mask": pad("input_ids", -1).ne(-1).long(),
            "labels": pad("labels", -100),
        }
        if self.return_logits:
            batch["return_logits"] = True
        return batch


def train(case: str, trainer: str, per_device: int, accumulation: int, output_dir: str) -> tuple[list, dict]:
    """Two SGD steps over the 8 samples, in order; returns the logged losses and the final weights."""
    llm, return_logits = CASES[case]
    model = _model(llm)
    settings = {
        "output_dir": output_dir,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "max_steps": STEPS,
        "optim": "sgd",
        "learning_rate": 0.5,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "lr_scheduler_type": "constant",
        "train_sampling_strategy": "sequential",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
        "dataloader_num_workers": 0,
        "remove_unused_columns": False,
    }
    common = {"model": model, "train_dataset": _samples(llm), "data_collator": _Collator(return_logits)}
    if trainer == "instructblip":
        runner: Trainer = InstructBlipTrainer(args=InstructBlipTrainingArguments(**settings), **common)
    else:
        runner = Trainer(args=TrainingArguments(**settings), **common)
    runner.train()
    losses = [entry["loss"] for entry in runner.state.log_history if "loss" in entry]
    weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return losses, weights


def _token_mean_and_mean_of_means(case: str) -> tuple[float, float]:
    """The first step's loss: the token mean of its 4 samples, and the mean of its two 2-sample micro-batch means."""
    llm, return_logits = CASES[case]
    model, collate, samples = _model(llm).train(), _Collator(return_logits), _samples(llm)
    with torch.no_grad():
        whole = model(**collate(samples[:4])).loss.item()
        halves = [model(**collate(samples[i : i + 2])).loss.item() for i in (0, 2)]
    return whole, sum(halves) / 2


#: Relative to each tensor's magnitude: float32 rounding of two summation orders (the splits differ by about 1e-7),
#: far below what a wrong normalisation does (a factor of 2 on the loss, 1e-2 on the weights after two steps).
TOLERANCE = 1e-4


def _assert_same(got: tuple[list, dict], reference: tuple[list, dict], what: str) -> None:
    (losses, weights), (ref_losses, ref_weights) = got, reference
    assert len(losses) == len(ref_losses) == STEPS, what
    assert losses == pytest.approx(ref_losses, rel=TOLERANCE), what
    assert weights.keys() == ref_weights.keys(), what
    for name, value in ref_weights.items():
        scale = value.abs().max().item()
        torch.testing.assert_close(
            weights[name], value, rtol=TOLERANCE, atol=TOLERANCE * scale, msg=lambda m, n=name: f"{what}, {n}: {m}"
        )


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[tuple[str, str], tuple[list, dict]]:
    """Every case under both trainers with one batch of 4 per step."""
    root = tmp_path_factory.mktemp("batch4")
    return {
        (case, trainer): train(case, trainer, 4, 1, str(root / f"{case}-{trainer}"))
        for case in CASES
        for trainer in TRAINERS
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_logged_loss_is_the_token_mean_of_the_whole_batch(case, references):
    token_mean, mean_of_means = _token_mean_and_mean_of_means(case)
    assert abs(token_mean - mean_of_means) > 0.01  # the samples can tell the two apart
    for trainer in TRAINERS:
        first_step_loss = references[case, trainer][0][0]
        assert first_step_loss == pytest.approx(token_mean, rel=TOLERANCE), trainer


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_accumulating_two_micro_batches_equals_one_batch(case, trainer, references, tmp_path):
    reference = references[case, trainer]
    initial = dict(_model(CASES[case][0]).named_parameters())
    assert max((w - initial[n]).abs().max().item() for n, w in reference[1].items()) > 1e-2  # the steps moved weights
    _assert_same(train(case, trainer, 2, 2, str(tmp_path)), reference, f"{case}, {trainer}: 2 x 2")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_batch(references, tmp_path):
    """One torchrun launch trains every case, trainer and layout in 2 processes; rank 0 saves each result."""
    tests_dir = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")])),
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    run = subprocess.run(
        [*launcher, __file__, str(tmp_path)], capture_output=True, text=True, env=env, timeout=TIMEOUT
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for case in CASES:
        for trainer in TRAINERS:
            for per_device, accumulation in DISTRIBUTED_LAYOUTS:
                name = f"{case}-{trainer}-{per_device}x{accumulation}"
                losses = json.loads((tmp_path / f"{name}.json").read_text())
                weights = load_file(tmp_path / f"{name}.safetensors")
                what = f"{case}, {trainer}: 2 processes x {per_device} x {accumulation}"
                _assert_same((losses, weights), references[case, trainer], what)


def _distributed_main(output_dir: Path) -> None:
    rank = int(os.environ["RANK"])
    for case in CASES:
        for trainer in TRAINERS:
            for per_device, accumulation in DISTRIBUTED_LAYOUTS:
                name = f"{case}-{trainer}-{per_device}x{accumulation}"
                losses, weights = train(case, trainer, per_device, accumulation, str(output_dir / name))
                if rank == 0:
                    (output_dir / f"{name}.json").write_text(json.dumps(losses))
                    save_file({n: w.contiguous() for n, w in weights.items()}, output_dir / f"{name}.safetensors")


if __name__ == "__main__":
    _distributed_main(Path(sys.argv[1]))
