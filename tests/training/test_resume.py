"""Resume without loss: a training process killed with SIGKILL mid-training and resumed from its last checkpoint by
`hf-instructblip train` ends with exactly the weights of an uninterrupted run (same seed, CPU, no dataloader workers,
the frozen parts held in bf16 as the command's fast path holds them: the checkpoint stores them in bf16).

The kill happens at a point the run itself signals, not after a timed wait: the killed process runs the train command
with one extra callback, which SIGKILLs its own process as soon as the Trainer reports the first checkpoint saved.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_processor, model_for

MAX_STEPS = 24
SAVE_STEPS = 4
TIMEOUT = 300  # seconds per process; a step takes well under one

#: `hf-instructblip train CONFIG [overrides]` (the same `run_from_config`) plus a callback that SIGKILLs the process
#: right after the first checkpoint: the Trainer calls `on_save` once `_save_checkpoint` has returned, i.e. after the
#: weights, optimizer, scheduler, RNG states and trainer_state.json (written last) are all on disk.
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys

from transformers import TrainerCallback

from hf_instructblip.training import run_from_config


class KillAfterFirstCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        print(f"checkpoint-{state.global_step} saved; SIGKILL", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


run_from_config(sys.argv[1], sys.argv[2:], callbacks=[KillAfterFirstCheckpoint()])
raise SystemExit("the run ended without saving a checkpoint")
"""


@pytest.fixture(scope="module")
def config(tokenizer_dirs, tmp_path_factory) -> Path:
    """A tiny saved model (Q-Former dropout on: the RNG state must be restored too) and a config training it."""
    root = tmp_path_factory.mktemp("resume")
    processor = make_processor(tokenizer_dirs)
    model_for(processor, "llama", seed=1).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    settings = {
        "model": {"model_name_or_path": str(root / "model")},
        # Two datasets: the balanced-mixture sampler; 32 samples in batches of 4: the run crosses epochs.
        "data": {"datasets": ["synthetic_vqa", "synthetic_counting"], "samples_per_dataset": 16},
        "training": {
            # bf16 on every CPU (not "auto", fp32 without native bf16): the resumed and the uninterrupted run compute
            # the same thing, so bit-identical holds in bf16 too, and the bf16 checkpoint round trip is exercised
            "frozen_dtype": "bfloat16",
            "max_steps": MAX_STEPS,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 2,
            "logging_steps": 1,
            "save_steps": SAVE_STEPS,
            "save_total_limit": 2,
            "dataloader_num_workers": 0,
            "use_cpu": True,
            "seed": 0,
            "report_to": "none",
            "disable_tqdm": True,
        },
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def _train(config: Path, output_dir: Path, *overrides: str, killed: bool = False) -> subprocess.Popen:
    """`hf-instructblip train` in a fresh process; ``killed``: the same run, SIGKILLed after its first checkpoint."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if killed:
        command = [sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT, str(config)]
    else:
        command = [sys.executable, "-m", "hf_instructblip.cli", "train", str(config)]
    return subprocess.Popen(
        [*command, "--training.output_dir", str(output_dir), *overrides],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr[-3000:]
    return stdout + stderr


def _wait_for_the_self_kill(process: subprocess.Popen) -> None:
    """Wait for the run to kill itself right after its first checkpoint."""
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL, f"rc {process.returncode}, not SIGKILL: {stderr[-3000:]}"
    assert f"checkpoint-{SAVE_STEPS} saved; SIGKILL" in stdout


def _losses(output_dir: Path) -> dict[int, float]:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def test_sigkilled_run_resumes_to_the_same_weights_as_an_uninterrupted_one(config, tmp_path):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    uninterrupted = _train(config, reference)  # runs alongside: nothing depends on timing
    victim = _train(config, killed, killed=True)
    try:
        _wait_for_the_self_kill(victim)
        assert not (killed / "model.safetensors").exists()  # killed mid-training, before the final save
        assert [p.name for p in killed.glob("checkpoint-*")] == [f"checkpoint-{SAVE_STEPS}"]
        output = _finish(_train(config, killed, "--training.resume_from_checkpoint", "true"))
        resumed_from = re.search(r"Resuming from checkpoint \S*checkpoint-(\d+)", output)
        assert resumed_from is not None, output[-3000:]
        assert 0 < int(resumed_from.group(1)) == SAVE_STEPS < MAX_STEPS
        _finish(uninterrupted)
    finally:
        for process in (uninterrupted, victim):
            if process.poll() is None:
                process.kill()
                process.communicate()

    resumed, expected = load_file(killed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert resumed.keys() == expected.keys()
    assert {resumed[n].dtype for n in resumed if n.startswith("language_model.")} == {torch.bfloat16}  # as pinned
    different = [name for name in expected if not torch.equal(resumed[name], expected[name])]
    assert not different, f"{len(different)} tensors differ after resuming, e.g. {different[:3]}"
    assert _losses(killed) == _losses(reference)  # the same loss at every step, before and after the kill
    assert len(_losses(reference)) == MAX_STEPS
