"""benchmarks/bench_gpu.py: the paper-scale GPU benchmark runs end to end on tiny shapes (here on CPU), builds ours
with the fast-path precisions and transformers' model with the same weights, and maps cards to their bf16 peaks.
No timing is asserted: only that every number is there and the code paths the GPU run takes work."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def smoke(bench, tmp_path_factory):
    output = tmp_path_factory.mktemp("bench_gpu") / "smoke.json"
    result = bench.main(["--tiny", "--device", "cpu", "--output", str(output)])
    return result, json.loads(output.read_text())


def test_tiny_run_measures_both_models_for_both_llms(smoke):
    result, written = smoke
    assert written == json.loads(json.dumps(result))  # --output holds what main returned
    assert written["smoke_test"] is True
    assert "not a measurement" in written["table"]
    rows = {(row["llm"], row["model"]): row for row in written["rows"]}
    assert set(rows) == {(llm, model) for llm in ("vicuna7b", "flant5xl") for model in ("ours", "transformers")}
    for row in rows.values():
        metrics = row["metrics"]
        for key in ("train_samples_per_s", "gen_tokens_per_s", "train_flops_per_step", "gen_flops_per_call"):
            assert math.isfinite(metrics[key]) and metrics[key] > 0, key
        assert math.isfinite(row["eval_loss"]) and math.isfinite(metrics["train_last_loss"])
        # On CPU there is no CUDA allocator to ask and no card peak: said so, not made up.
        assert metrics["train_peak_gib"] is None and metrics["gen_peak_gib"] is None
        assert metrics["train_mfu"] is None and metrics["gen_mfu"] is None
    assert "unknown peak" in written["table"]
    assert set(written["ratios"]) == {"vicuna7b", "flant5xl"}


@pytest.mark.parametrize("llm", ["vicuna7b", "flant5xl"])
def test_ours_holds_frozen_parts_in_bf16_and_transformers_gets_the_same_weights(bench, llm):
    ours_config, their_config = bench.build_configs(llm, tiny=True, num_query_tokens=4)
    ours = bench.build_ours(ours_config, torch.device("cpu"))
    frozen_towers = ("vision_model.", "language_model.")
    for name, parameter in ours.named_parameters():
        assert parameter.requires_grad == ours.is_trainable_by_default(name), name
        # The vision tower (but its LayerNorm) and the LLM in bf16; the Q-Former side (all of it) in fp32.
        in_bf16 = name.startswith(frozen_towers) and not name.startswith(ours.vision_norm_name)
        assert parameter.dtype == (torch.bfloat16 if in_bf16 else torch.float32), name
    theirs = bench.build_transformers(their_config, torch.device("cpu"), ours.state_dict())
    for name, value in theirs.state_dict().items():
        assert value.dtype == torch.bfloat16, name  # transformers' model: all bf16
        assert torch.equal(value, ours.state_dict()[name].to(torch.bfloat16)), name


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_bf16_peak_of_known_cards(bench, name, tflops):
    peak = bench.bf16_peak_flops(name)
    assert (peak / 1e12 if peak else None) == tflops
