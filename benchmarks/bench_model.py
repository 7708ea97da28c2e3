"""Side-by-side speed of ``hf_instructblip`` and transformers' InstructBLIP: same weights, same inputs, one process.

Run it with ``make bench`` or directly::

    .venv/bin/python benchmarks/bench_model.py                    # full config, batch 1 and 8: ~3.5 min, 2 idle cores
    .venv/bin/python benchmarks/bench_model.py --quick            # tiny config: a smoke test of seconds
    .venv/bin/python benchmarks/bench_model.py --repeats 21 --batch-sizes 1 4 8 --output /tmp/bench.md
    .venv/bin/python benchmarks/bench_model.py --breakdown        # also: where the time goes, per component
    .venv/bin/python benchmarks/bench_model.py --control          # A/A run: the noise floor of this machine

What it does:

1. writes transformers' ``InstructBlipForConditionalGeneration`` with random weights on a small-but-real-sized
   config (ViT 12x384, Q-Former 6x384, a SmolLM2-135M-shaped llama LLM, 32 query tokens) to a temporary folder and
   loads both transformers' model and ours from it with ``from_pretrained``: identical tensors, fp32, eval mode,
   the default attention implementation (sdpa) everywhere;
2. checks, for every batch size, that the two agree (logits within 1e-4, identical greedy ids) and aborts if not:
   a speed-up that changes the answer is not one;
3. measures, at each batch size, the latency of one ``forward`` (under ``no_grad``) and the throughput of greedy
   ``generate`` (16 new tokens, forced) in new tokens per second. Prompts are 32 image placeholders + 16 text
   tokens, the Q-Former instruction 16 tokens, no padding. After a warm-up the runs of the two models are
   interleaved in pairs (A B, then B A, ...) so that the load of a shared machine hits both alike.

Reading the table: ``transformers`` and ``ours`` are medians over ``--repeats`` runs. ``ratio`` is ours' speed over
transformers' speed (transformers' latency / ours' for ``forward``, ours' tokens/s / transformers' for
``generate``), the median over the back-to-back pairs: above 1 means ours is faster; the project asks for >= 0.95.
``pair ratios (quartiles)`` shows how much single pairs scatter, i.e. how far to trust the third digit. The
report also says how much CPU other processes and the hypervisor took during the run: on a busy machine rerun with
more ``--repeats``. ``--control`` times transformers' model against a second copy of itself: the ratios it gives
(1 in theory) show how far from 1 a ratio must be before it means anything on this machine. Speed is compared
this way, side by side in one run; the tests never assert timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias, TypeVar, cast

import torch
import transformers
from torch import nn

from hf_instructblip import InstructBlipForConditionalGeneration

NEW_TOKENS = 16
PROMPT_TEXT_TOKENS = 16
QFORMER_TEXT_TOKENS = 16
LOGITS_ATOL = 1e-4
# A timed pair is run again when other processes (or the hypervisor) took more than this share of the CPUs.
MAX_OTHERS_SHARE = 0.10
# Top-level submodules shared by both implementations (same names, since the weights load unchanged).
COMPONENTS = ("vision_model", "qformer", "language_projection", "language_model")

M = TypeVar("M")
# Both classes take the same inputs and have ``generate``; a control run puts transformers' on both sides.
Model: TypeAlias = "transformers.InstructBlipForConditionalGeneration | InstructBlipForConditionalGeneration"
# Model inputs by keyword: all tensors, typed loosely so that ``model(**inputs)`` type-checks against both signatures.
Inputs: TypeAlias = dict[str, Any]


@dataclass
class Row:
    """One line of the result table; ``theirs``/``ours`` hold one measurement per repeat."""

    metric: str
    batch: int
    unit: str
    higher_is_better: bool
    theirs: list[float]
    ours: list[float]
    reruns: int = 0

    @property
    def pair_ratios(self) -> list[float]:
        """Ours' speed over theirs' (> 1: ours faster) for each back-to-back pair of runs."""
        if self.higher_is_better:
            return [o / t for t, o in zip(self.theirs, self.ours)]
        return [t / o for t, o in zip(self.theirs, self.ours)]

    @property
    def ratio(self) -> float:
        # The median of per-pair ratios rather than a ratio of medians: the two runs of a pair see the same
        # machine load, so slow drifts of a shared machine cancel out.
        return statistics.median(self.pair_ratios)


# ----- the models ------------------------------------------------------------------------------------------------
def build_config(quick: bool) -> transformers.InstructBlipConfig:
    """The benchmark config: real-sized but small (full), or tiny (``--quick``, for smoke tests)."""
    vision: dict[str, Any]
    qformer: dict[str, Any]
    text: dict[str, Any]
    if quick:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        vision |= dict(image_size=28, patch_size=14)
        qformer = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        text = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1)
        text |= dict(intermediate_size=96, vocab_size=512)
    else:
        # ViT 12x384 (a ViT-S-like tower), patch 14 as in the released EVA-CLIP towers: 256 patches + CLS.
        vision = dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6)
        vision |= dict(image_size=224, patch_size=14)
        qformer = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        # SmolLM2-135M's shape.
        text = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3)
        text |= dict(intermediate_size=1536, vocab_size=49153, rope_theta=100000.0)
    qformer |= dict(cross_attention_frequency=2, vocab_size=30523 if not quick else 128)
    # Ids below the image token; a pad id keeps generate from warning on every call.
    text |= dict(model_type="llama", tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    return transformers.InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=4 if quick else 32,
        image_token_index=text["vocab_size"] - 1,
    )


def build_models(config: transformers.InstructBlipConfig, folder: Path, control: bool = False) -> tuple[Model, Model]:
    """transformers' model and ours (a second transformers copy if ``control``), from one folder of random weights."""
    torch.manual_seed(0)
    transformers.InstructBlipForConditionalGeneration(config).save_pretrained(folder)
    # Both sides go through from_pretrained so their tensors live in the same kind of memory (transformers maps
    # the safetensors file), not one in freshly allocated memory and the other in a file mapping.
    theirs = transformers.InstructBlipForConditionalGeneration.from_pretrained(folder)
    ours_class = transformers.InstructBlipForConditionalGeneration if control else InstructBlipForConditionalGeneration
    loaded = ours_class.from_pretrained(folder, output_loading_info=True)
    ours, info = cast(tuple[Model, dict[str, list[str]]], loaded)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        sys.exit(f"ours did not load transformers' checkpoint cleanly: {bad}")
    return theirs.eval(), ours.eval()


def make_inputs(config: transformers.InstructBlipConfig, batch: int) -> Inputs:
    """Random images and prompts; no padding (every sample has the same length)."""
    gen = torch.Generator().manual_seed(batch)
    vision = config.vision_config
    image_token = cast(int, config.image_token_index)  # always set by build_config
    image_tokens = torch.full((batch, config.num_query_tokens), image_token)
    # Text ids stay above the special ids and below the image token.
    prompt = torch.randint(3, image_token, (batch, PROMPT_TEXT_TOKENS), generator=gen)
    input_ids = torch.cat([image_tokens, prompt], dim=1)
    qformer_ids = torch.randint(1, config.qformer_config.vocab_size, (batch, QFORMER_TEXT_TOKENS), generator=gen)
    return {
        "pixel_values": torch.randn(batch, 3, vision.image_size, vision.image_size, generator=gen),
        "qformer_input_ids": qformer_ids,
        "qformer_attention_mask": torch.ones_like(qformer_ids),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }


# ----- what is timed -----------------------------------------------------------------------------------------------
def run_forward(model: Model, inputs: Inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def run_generate(model: Model, inputs: Inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)


def verify(theirs: Model, ours: Model, inputs: Inputs) -> None:
    """Abort unless both models give the same logits and the same greedy ids."""
    batch = inputs["input_ids"].shape[0]
    diff = (run_forward(theirs, inputs) - run_forward(ours, inputs)).abs().max().item()
    if diff > LOGITS_ATOL:
        sys.exit(f"batch {batch}: logits differ by {diff:.2e} > {LOGITS_ATOL}; not timing models that disagree")
    ids_theirs, ids_ours = run_generate(theirs, inputs), run_generate(ours, inputs)
    if not torch.equal(ids_theirs, ids_ours):
        sys.exit(f"batch {batch}: greedy generate ids differ; not timing models that disagree")
    print(f"batch {batch}: outputs agree (max |logit diff| {diff:.1e}, identical greedy ids)", file=sys.stderr)


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----- other work on the machine -------------------------------------------------------------------------------
def cpu_counters() -> tuple[int, int, int] | None:
    """Machine-wide (total, busy, steal) CPU jiffies from /proc/stat; None off Linux."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return sum(fields), user + nice + system + irq + softirq, steal


class LoadMeter:
    """Share of the machine's CPU time that other processes and the hypervisor took since creation."""

    def __init__(self) -> None:
        self.start, self.own_start = cpu_counters(), time.process_time()

    def shares(self) -> tuple[float, float]:
        """(other processes, hypervisor steal) as fractions of all CPU time; zeros where /proc/stat is missing."""
        end, own = cpu_counters(), time.process_time() - self.own_start
        if self.start is None or end is None:
            return 0.0, 0.0
        total, busy, steal = (e - s for e, s in zip(end, self.start))
        if total <= 0:
            return 0.0, 0.0
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, busy / hz - own) / (total / hz), steal / total


def interleaved(theirs: Callable[[], M], ours: Callable[[], M], repeats: int) -> tuple[list[M], list[M], int]:
    """Measurements of ``repeats`` back-to-back pairs, alternating which goes first, and the number of pairs rerun.

    ``theirs``/``ours`` run one call and return its measurement. Two torch threads on two cores slow down many
    times over when another process takes one core, so a pair during which other work took more than
    MAX_OTHERS_SHARE of the CPUs is thrown away and run again (at most ``repeats`` times in all, so a machine that
    never calms down still ends). One unmeasured pair first warms up caches and allocators.
    """
    theirs(), ours()
    from_theirs: list[M] = []
    from_ours: list[M] = []
    reruns = 0
    while len(from_theirs) < repeats:
        meter = LoadMeter()
        if len(from_theirs) % 2:
            m_ours, m_theirs = ours(), theirs()
        else:
            m_theirs, m_ours = theirs(), ours()
        if sum(meter.shares()) > MAX_OTHERS_SHARE and reruns < repeats:
            reruns += 1
            continue
        from_theirs.append(m_theirs)
        from_ours.append(m_ours)
    return from_theirs, from_ours, reruns


def bench_batch(theirs: Model, ours: Model, inputs: Inputs, repeats: int) -> list[Row]:
    batch = inputs["input_ids"].shape[0]
    t, o, reruns = interleaved(
        partial(seconds, partial(run_forward, theirs, inputs)),
        partial(seconds, partial(run_forward, ours, inputs)),
        repeats,
    )
    forward = Row("forward latency", batch, "ms", False, [x * 1e3 for x in t], [x * 1e3 for x in o], reruns)
    t, o, reruns = interleaved(
        partial(seconds, partial(run_generate, theirs, inputs)),
        partial(seconds, partial(run_generate, ours, inputs)),
        repeats,
    )
    tokens = batch * NEW_TOKENS
    speeds = [tokens / x for x in t], [tokens / x for x in o]
    return [forward, Row("generate throughput", batch, "new tokens/s", True, *speeds, reruns)]


# ----- where the time goes ---------------------------------------------------------------------------------------
@contextmanager
def component_timer(model: nn.Module) -> Iterator[dict[str, float]]:
    """Accumulate wall time spent inside each top-level component (hooks; the LLM is timed per decoding step)."""
    totals = dict.fromkeys(COMPONENTS, 0.0)
    starts: dict[str, float] = {}
    handles = []
    for name in COMPONENTS:
        module = model.get_submodule(name)

        def pre(_m: nn.Module, _a: object, name: str = name) -> None:
            starts[name] = time.perf_counter()

        def post(_m: nn.Module, _a: object, _o: object, name: str = name) -> None:
            totals[name] += time.perf_counter() - starts[name]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield totals
    finally:
        for handle in handles:
            handle.remove()


def component_ms(model: Model, fn: Callable[[Model], object]) -> dict[str, float]:
    """Milliseconds one ``fn(model)`` spends in each component, in ``other`` (glue, decoding loop) and in all."""
    with component_timer(model) as totals:
        total = seconds(partial(fn, model))
    parts = {name: value * 1e3 for name, value in totals.items()}
    return {**parts, "other": total * 1e3 - sum(parts.values()), "total": total * 1e3}


def breakdown_table(theirs: Model, ours: Model, inputs: Inputs, repeats: int) -> str:
    batch = inputs["input_ids"].shape[0]
    lines = [
        f"Where the time goes, batch {batch} (median ms over interleaved runs; the LLM summed over decoding steps)",
        "",
        "| call | component | transformers | ours |",
        "|---|---|---:|---:|",
    ]
    for call, run in (("forward", run_forward), ("generate", run_generate)):
        fn = partial(run, inputs=inputs)
        t, o, _ = interleaved(partial(component_ms, theirs, fn), partial(component_ms, ours, fn), repeats)
        for name in t[0]:
            t_ms, o_ms = (statistics.median(sample[name] for sample in runs) for runs in (t, o))
            lines.append(f"| {call} | {name} | {t_ms:.1f} | {o_ms:.1f} |")
    return "\n".join(lines)


# ----- report ------------------------------------------------------------------------------------------------------
def load_summary(others: float, steal: float, reruns: int) -> str:
    return (
        f"Machine load during the run: other processes took {others:.0%} and the hypervisor {steal:.0%} of the CPU "
        f"time; {reruns} timed pair(s) were rerun because other work took more than {MAX_OTHERS_SHARE:.0%}."
    )


def environment() -> str:
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}"
    )


def format_value(value: float, unit: str) -> str:
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| metric | batch | transformers | ours | ratio (ours/transformers speed) | pair ratios (quartiles) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        theirs = format_value(statistics.median(row.theirs), row.unit)
        ours = format_value(statistics.median(row.ours), row.unit)
        q1, _, q3 = statistics.quantiles(row.pair_ratios, n=4) if len(row.pair_ratios) > 1 else [row.ratio] * 3
        lines.append(f"| {row.metric} | {row.batch} | {theirs} | {ours} | {row.ratio:.3f} | {q1:.2f}-{q3:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=11, help="timed runs per model and cell (medians reported)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], metavar="B")
    parser.add_argument("--quick", action="store_true", help="tiny config: a smoke test, numbers mean nothing")
    parser.add_argument("--output", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--breakdown", action="store_true", help="also time each component (vision/Q-Former/LLM)")
    parser.add_argument(
        "--control", action="store_true", help="A/A run: transformers against a copy of itself, to see the noise"
    )
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace, config: transformers.InstructBlipConfig, folder: Path) -> str:
    """Build, verify and time both models; return the markdown report."""
    theirs, ours = build_models(config, folder, args.control)
    rows, extra = [], []
    meter = LoadMeter()
    for batch in args.batch_sizes:
        inputs = make_inputs(config, batch)
        verify(theirs, ours, inputs)
        rows += bench_batch(theirs, ours, inputs, args.repeats)
        if args.breakdown:
            extra.append(breakdown_table(theirs, ours, inputs, args.repeats))
    load_note = load_summary(*meter.shares(), sum(row.reruns for row in rows))
    config_name = "quick (tiny)" if args.quick else "full (ViT 12x384, Q-Former 6x384, SmolLM2-135M-shaped LLM)"
    if args.control:
        config_name += "; CONTROL run: 'ours' is a second copy of transformers' model"
    header = f"Config: {config_name}; {args.repeats} interleaved repeats per cell, medians."
    return "\n\n".join([header, environment(), markdown_table(rows), load_note, *extra])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    # The folder outlives the models: from_pretrained maps the weights file rather than copying it.
    with tempfile.TemporaryDirectory() as folder:
        report = benchmark(args, build_config(args.quick), Path(folder))
    print(report)
    if args.output:
        args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
