"""Peak memory and time of building InstructBLIP from real parts: `build_model` (meta device) vs the naive way.

    .venv/bin/python benchmarks/bench_build.py                  # one round: ~2.5 min on 2 cores
    .venv/bin/python benchmarks/bench_build.py --repeats 2 --output /tmp/build.md

Both paths build the `make demo` model from the real shipped parts, as `demo.build_demo_model(DemoConfig())` does
(kept in fp32, so that only the build is measured): EfficientNet-Lite0 pretrained on ImageNet as the vision tower,
all-MiniLM-L6-v2 as the Q-Former initialiser (BLIP-2 recipe) and SmolLM2-135M-Instruct (GGUF, dequantised to fp32)
as the LLM, 16 query tokens, seed 0, with `hf_instructblip.building.build_model`. They differ only in how the
composite is assembled around the loaded parts (`building._assemble`):

* ``meta``: as shipped: the composite is created on the meta device, the loaded LLM and tower are put in place, only
  the new parts (Q-Former, queries, projection) are allocated and initialised;
* ``naive``: what `build_model` did before: construct the whole composite with random weights (a second, randomly
  initialised LLM and tower) and ``load_state_dict`` the loaded ones into it (`naive_assemble`, swapped in for the
  run).

Each build runs in its own fresh process; peak memory is that process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) and the baseline its resident size after the imports, right before building.
Both processes check they built the same loaded weights (a digest of the LLM's, the tower's and the
BERT-initialised Q-Former's tensors, compared here). Rounds alternate the order of the two paths.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

PATHS = ("meta", "naive")
#: InstructBLIP (Vicuna-7B)'s LLM: LLaMA-7B's parameter count.
LLM_7B_PARAMETERS = 6.74e9


# ----- the two builds (child process) ------------------------------------------------------------------------------
def naive_assemble(config: Any, language_model: Any, vision_tower: Any) -> Any:
    """The assembly before the meta device: every part random (the LLM included), then the loaded weights copied in."""
    from hf_instructblip import InstructBlipForConditionalGeneration

    model = InstructBlipForConditionalGeneration(config)
    if vision_tower is not None:
        model.vision_model.load_state_dict(vision_tower.state_dict())
    model.language_model.load_state_dict(language_model.state_dict())
    return model


def build(path: str) -> tuple[Any, float]:
    """The demo's model (`demo.build_demo_model` on `DemoConfig()`'s parts, kept in fp32: the build alone) built with
    the ``path``'s assembly, and the seconds the assembly took."""
    from hf_instructblip import building
    from hf_instructblip.demo import DemoConfig, build_demo_model

    assemble = building._assemble if path == "meta" else naive_assemble
    seconds = []

    def timed(*args: Any) -> Any:
        start = time.perf_counter()
        model = assemble(*args)
        seconds.append(time.perf_counter() - start)
        return model

    building._assemble = timed  # type: ignore[assignment]  # build_model looks it up at call time
    built = build_demo_model(DemoConfig(frozen_dtype="float32"))
    return built.model, seconds[0]


def _resident_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _loaded_weights_digest(model: Any) -> str:
    """SHA-256 of the tensors both paths take from files: the LLM's, the tower's and the Q-Former's self-attention +
    FFNs."""
    digest = hashlib.sha256()
    rows = model.config.text_config.vocab_size - 1  # the <image> row is random (seeded differently per path)
    for name, tensor in sorted(model.state_dict().items()):
        from_files = name.startswith(("language_model.", "vision_model.")) or (
            name.startswith("qformer.") and ".crossattention." not in name
        )
        if from_files:
            values = tensor[:rows] if tensor.shape[:1] == (rows + 1,) else tensor
            digest.update(name.encode())
            digest.update(values.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_child(path: str) -> dict[str, Any]:
    from hf_instructblip import building, demo  # noqa: F401  (imported before the baseline: not part of a build)

    transformers.logging.set_verbosity_error()
    baseline = _resident_mib("VmRSS")
    start = time.perf_counter()
    model, assemble_s = build(path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    llm_parameters = sum(p.numel() for p in model.language_model.parameters())
    return {
        "seconds": seconds,
        "assemble_s": assemble_s,
        "baseline_mib": baseline,
        "peak_mib": peak,
        "parameters": sum(p.numel() for p in model.parameters()),
        "llm_parameters": llm_parameters,
        "digest": _loaded_weights_digest(model),
    }


# ----- driver ------------------------------------------------------------------------------------------------------
def child(path: str) -> dict[str, Any]:
    result = subprocess.run([sys.executable, __file__, "--child", path], capture_output=True, text=True, check=False)
    if result.returncode:
        sys.exit(f"{path} build failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(results: dict[str, list[dict[str, Any]]]) -> str:
    def median(path: str, key: str) -> float:
        return statistics.median(r[key] for r in results[path])

    digests = {r["digest"] for rs in results.values() for r in rs}
    if len(digests) != 1:
        sys.exit("The two paths built different loaded weights: the comparison is void.")
    llm = results["meta"][0]["llm_parameters"]
    lines = [
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, transformers {transformers.__version__}; {results['meta'][0]['parameters'] / 1e6:.1f}M "
        f"parameters ({llm / 1e6:.1f}M in the LLM), fp32; {len(results['meta'])} round(s), medians; same loaded "
        "weights on both paths (digest checked).",
        "",
        "| path | build time | of which assembly | peak RSS | baseline RSS (after imports) | peak - baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for path in PATHS:
        peak, baseline = median(path, "peak_mib"), median(path, "baseline_mib")
        lines.append(
            f"| {path} | {median(path, 'seconds'):.1f} s | {median(path, 'assemble_s'):.2f} s | {peak:.0f} MiB | "
            f"{baseline:.0f} MiB | "
            f"{peak - baseline:.0f} MiB |"
        )
    naive_s, meta_s = median("naive", "assemble_s"), median("meta", "assemble_s")
    extra = median("naive", "peak_mib") - median("meta", "peak_mib")
    lines += [
        "",
        f"Assembly: naive {naive_s:.2f} s ({naive_s / results['naive'][0]['parameters'] * 1e9:.1f} s per billion "
        f"parameters constructed at random), meta {meta_s:.2f} s. The naive peak is {extra:.0f} MiB above the meta "
        f"path's: {extra * 2**20 / (4 * llm):.2f} x the LLM's {4 * llm / 2**20:.0f} MiB of fp32 weights.",
        "Per-round build time / peak: "
        + "; ".join(
            f"{path} " + ", ".join(f"{r['seconds']:.1f} s / {r['peak_mib']:.0f} MiB" for r in results[path])
            for path in PATHS
        )
        + ".",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="rounds (each builds once per path)")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--child", choices=PATHS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child)))
        return
    results: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
    for round_ in range(args.repeats):
        for path in PATHS if round_ % 2 == 0 else tuple(reversed(PATHS)):
            results[path].append(child(path))
    text = report(results)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
