"""Multi-process training: `torchrun --nproc_per_node 2` (DDP, gloo on CPU) running `hf-instructblip train` matches
one process with the same global batch (2 x 2 samples against 1 x 4): the same loss curve and final weights.

Under DDP accelerate shards the train dataloader's *batches* (`BatchSamplerShard`): with per-device batches of 2,
process 0 takes batches 0, 2, 4, ... and process 1 batches 1, 3, 5, ... of the one seeded index stream every process
draws, so step t sees stream[4t : 4t + 4] as a single process with batches of 4 does, provided the stream does not
depend on the batch size: the balanced mixture drawn sample by sample (``same_dataset_per_batch: false``) or a
plain dataset. (With whole-dataset batches the stream is built per batch size, and the two runs see other data.)
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
import yaml
from safetensors.torch import load_file

from conftest import make_processor, model_for
from hf_instructblip.training.run import run_from_config

TIMEOUT = 300


@pytest.fixture(scope="module")
def config(tokenizer_dirs, tmp_path_factory) -> Path:
    """A tiny saved model without dropout (two processes draw other dropout masks than one) and its config."""
    root = tmp_path_factory.mktemp("ddp")
    processor = make_processor(tokenizer_dirs)
    model = model_for(processor, "llama", seed=2)
    model.config.qformer_config.hidden_dropout_prob = 0.0
    model.config.qformer_config.attention_probs_dropout_prob = 0.0
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    settings = {
        "model": {"model_name_or_path": str(root / "model")},
        # A mixture drawn sample by sample: the index stream does not depend on the per-device batch size.
        "data": {"datasets": ["synthetic_vqa", "synthetic_counting"], "samples_per_dataset": 16},
        "training": {
            "same_dataset_per_batch": False,
            # fp32 throughout: the tolerances below are fp32's (the train command's default, auto, is bf16 on CPUs
            # with native bf16, where two processes round differently than one by more than this)
            "frozen_dtype": "float32",
            "max_steps": 6,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "logging_steps": 1,
            "save_strategy": "no",
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _history(output_dir: Path) -> list[dict]:
    return [e for e in json.loads((output_dir / "trainer_state.json").read_text())["log_history"] if "loss" in e]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(config, tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    command = ["-m", "hf_instructblip.cli", "train", str(config), "--training.output_dir", str(ddp_dir)]
    ddp = subprocess.Popen(
        [*launcher, *command, "--training.per_device_train_batch_size", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:  # the single-process reference trains here meanwhile
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_from_config(
                config,
                ["--training.output_dir", str(single_dir), "--training.per_device_train_batch_size", "4"],
            )
        finally:
            torch.set_num_threads(threads)
        output, _ = ddp.communicate(timeout=TIMEOUT)
    finally:
        if ddp.poll() is None:
            ddp.kill()
            ddp.communicate()
    assert ddp.returncode == 0, output[-4000:]

    ddp_log, single_log = _history(ddp_dir), _history(single_dir)
    assert [e["step"] for e in ddp_log] == [e["step"] for e in single_log] == list(range(1, 7))
    # 32 samples per epoch: 8 steps of 2 x 2 in both processes together, as of 1 x 4 alone (not 16 of 2 each).
    assert [e["epoch"] for e in ddp_log] == [e["epoch"] for e in single_log]
    ddp_losses = torch.tensor([e["loss"] for e in ddp_log])
    single_losses = torch.tensor([e["loss"] for e in single_log])
    torch.testing.assert_close(ddp_losses, single_losses, rtol=1e-4, atol=1e-5)

    # Adam turns float noise in near-zero gradients (e.g. of attention key biases, which softmax ignores) into
    # lr-sized steps; so weights must agree to 1% of the largest change training made to any weight.
    initial = load_file(config.parent / "model" / "model.safetensors")
    ddp_weights, single_weights = load_file(ddp_dir / "model.safetensors"), load_file(single_dir / "model.safetensors")
    assert ddp_weights.keys() == single_weights.keys() == initial.keys()
    largest_update = max((single_weights[n] - initial[n]).abs().max().item() for n in initial)
    assert largest_update > 1e-4
    for name, value in single_weights.items():
        torch.testing.assert_close(
            ddp_weights[name], value, rtol=0, atol=1e-2 * largest_update, msg=lambda m, n=name: f"{n}: {m}"
        )
