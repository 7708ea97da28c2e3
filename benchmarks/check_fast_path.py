"""Correctness of the fast path: the demo's setup trained in fp32 and with the frozen parts held in bf16, same start.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_fast_path.py --output /tmp/fastpath/report.md  # ~30 min
    .venv/bin/python benchmarks/check_fast_path.py --vision '{"model_type": "vit", ...}' --eval-samples 50
    .venv/bin/python benchmarks/check_fast_path.py --quick                            # tiny random parts: a smoke test
    .venv/bin/python benchmarks/check_fast_path.py --eval-samples 64 --twins 4        # 5 runs per precision: ~26 min
    .venv/bin/python benchmarks/check_fast_path.py --eval-samples 64 --twins 9 --reuse /tmp/fastpath/twins4.json
    .venv/bin/python benchmarks/check_fast_path.py --gap-only --half float16 --eval-samples 8  # fp16 (emulated on CPU)

The setup is the demo's, read from `hf_instructblip.demo.DemoConfig` at run time (parts, image size, query tokens,
learning rate, warm-up, gradient clipping, batch size, vision feature layer), with ``--steps`` optimizer steps (60 by
default); ``--vision``, ``--qformer``, ``--llm`` replace a part. The model is built once (`demo.build_demo_model`,
frozen parts in fp32) and trained several times from the same weights with `demo.train_demo` (the demo's data,
sampler, collator and training arguments; the loss at every step the demo logs). Runs:

* ``fp32``: ``frozen_dtype: float32``;
* ``fast``: ``frozen_dtype: bfloat16`` (vision tower and LLM stored in bf16, the trained parts in fp32), the same
  batches: the two differ in precision only; ``--half float16`` holds them in fp16 instead (the trainer scales the
  loss; fp16 matmuls are emulated on CPUs, about 60x slower than fp32, so on a CPU mainly with ``--gap-only``);
* ``fp32-twin``: fp32 again, from the same weights with the trained parts multiplied by ``1 + 1e-6 * noise`` (a
  perturbation of a few fp32 roundings): how far fp32 training itself drifts from a perturbation far smaller than
  bf16's. If the twin drifts as far as ``fast`` does, the difference is the training's sensitivity, not the precision;
* ``fp32-random`` (``--runs``, not by default): the ``fp32`` run's trainer with random batches instead of the
  demo's length-grouped ones;
* ``--twins K``: ``fp32~1`` ... ``fp32~K`` and ``fast~1`` ... ``fast~K`` instead of the single twin, each from the
  start perturbed as the twin is (perturbation seed i, the same for both precisions), so that each precision is
  K + 1 runs and the two are compared as spreads: at each logged step and for each zero-shot task, the difference
  of the two groups' means against its standard error (Welch), and the mean of each run's logged losses (its whole
  curve in one number). Where the difference stays within two standard errors, the precision moves training less
  than the training's own sensitivity can resolve with these runs. The whole curves are also compared by rank
  (Mann-Whitney), which one stalled run cannot dominate as it can a mean;
* ``--reuse FILE.json``: the runs an earlier ``--output`` holds (same setup and evaluation size, checked; the JSON is
  rewritten after every run, so a run cut short leaves what it finished) are taken from it and not trained again,
  so that more twins extend earlier ones: ``--twins 9 --reuse old.json`` after ``--twins 3`` trains ``~4`` to
  ``~9`` and compares all ten runs per precision.

Reported first, without training (no drift): the loss and the trained parts' gradient of the start weights on 4 fixed
batches, bf16-held vs fp32, and the part of the gradient that depends on the images; for the fast path and for each
frozen part alone in bf16, to tell where a difference arises (``--gap-only`` stops there); in fp16 with loss scaling,
and once more without. The same again at the ``fp32`` run's weights after its training, where the images have begun
to matter (not when ``fp32`` is reused).
Then the loss at every logged step of each run and its relative difference to ``fp32`` (the bar for ``fast``: within
2% at every logged step), and after training the demo's evaluation (`demo.evaluate_demo`, each model in its own
precision): zero-shot on the synthetic held-out tasks (the paper's protocol: vocabulary ranking; the bar: within 1
point) and the held-in accuracy (greedy, exact match; reported, no bar). bf16 runs natively only on CPUs with
AVX-512 BF16 or AMX; elsewhere it is emulated (slow, same numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from hf_instructblip.building import BuiltModel, build_model
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_mixture
from hf_instructblip.demo import (
    EVAL_SEED,
    EVAL_TASKS,
    DemoConfig,
    build_demo_model,
    demo_eval_sets,
    demo_training_data,
    evaluate_demo,
    train_demo,
)
from hf_instructblip.evaluation.metrics.roc_auc import average_ranks
from hf_instructblip.modeling_precision import cpu_has_native_bf16
from hf_instructblip.training import InstructBlipTrainer

#: name -> (frozen dtype, train_sampling_strategy (None: the demo's), relative perturbation of the trained parts);
#: ``fast``'s dtype is ``--half``'s (bfloat16 by default)
RUNS: dict[str, tuple[str, str | None, float]] = {
    "fp32": ("float32", None, 0.0),
    "fast": ("bfloat16", None, 0.0),
    "fp32-twin": ("float32", None, 1e-6),
    "fp32-random": ("float32", "random", 0.0),
}
#: ``--twins``: ``fp32~i`` / ``fast~i`` are fp32 / fast from the start perturbed like the twin, with seed i
TWIN = "~"
TRAINED = "fp32's after its training"  # the same-weights comparison's second point (when fp32 is not reused)
LOSS_BAR = 0.02  # relative, at every logged step
SCORE_BAR = 1.0  # points
#: --quick: tiny random parts at 64 px (the real tokenizers), 20 steps at most
QUICK_PARTS: dict[str, dict[str, Any]] = {
    "vision": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    | {"intermediate_size": 64, "patch_size": 16},
    "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "llm": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    | {"num_key_value_heads": 1, "intermediate_size": 64},
}


def run_config(args: argparse.Namespace) -> DemoConfig:
    """The demo's `DemoConfig` with this check's steps, evaluation size and part overrides; frozen parts in fp32."""
    overrides: dict[str, Any] = {"max_steps": args.steps, "eval_samples": args.eval_samples, "frozen_dtype": "float32"}
    for name in ("vision", "qformer", "llm"):
        if getattr(args, name) is not None:
            value = getattr(args, name)
            overrides[name] = json.loads(value) if value.lstrip().startswith("{") else value
    if args.vision_feature_layer is not None:
        overrides["vision_feature_layer"] = args.vision_feature_layer
    if args.learning_rate is not None:
        overrides["learning_rate"] = args.learning_rate
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.quick:
        overrides |= {"vision": QUICK_PARTS["vision"], "image_size": 64, "max_steps": min(args.steps, 20)}
        overrides |= {"eval_samples": min(args.eval_samples, 8), "vision_feature_layer": -1}
    return dataclasses.replace(DemoConfig(), **overrides)


def build(config: DemoConfig, quick: bool) -> BuiltModel:
    """The demo's model (`build_demo_model`), or with ``quick`` tiny random Q-Former and LLM (real tokenizers)."""
    if not quick:
        return build_demo_model(config)
    built = build_model(
        {**QUICK_PARTS["vision"], "image_size": config.image_size},
        QUICK_PARTS["qformer"],
        QUICK_PARTS["llm"],
        llm_tokenizer="shipped:smollm2",
        qformer_tokenizer="shipped:minilm",
        num_query_tokens=config.num_query_tokens,
        seed=config.seed,
    )
    built.model.hold_frozen_in(config.frozen_dtype)
    return built


def run_spec(run: str, half: str = "bfloat16") -> tuple[str, str | None, float, int]:
    """(frozen dtype, sampling strategy, perturbation, perturbation seed) of a run name: `RUNS`, or
    ``fp32~i`` / ``fast~i`` (the twin's perturbation with seed i; ``fp32-twin`` is ``fp32~1``); the fast runs hold
    the frozen parts in ``half``."""
    base, _, seed = run.partition(TWIN)
    frozen_dtype, sampling, perturbation = RUNS[base if seed else run]
    frozen_dtype = half if base == "fast" else frozen_dtype
    if seed:
        return frozen_dtype, sampling, RUNS["fp32-twin"][2], int(seed)
    return frozen_dtype, sampling, perturbation, 1


def twin_runs(count: int) -> list[str]:
    """``fp32~1 ... fp32~count`` and ``fast~1 ... fast~count``."""
    return [f"{base}{TWIN}{i}" for base in ("fp32", "fast") for i in range(1, count + 1)]


def train_run(
    built: BuiltModel,
    start: dict[str, torch.Tensor],
    parts: dict[str, Any],
    config: DemoConfig,
    run: str,
    folder: Path,
    reference: Any = None,
    half: str = "bfloat16",
) -> tuple[dict[str, Any], Any]:
    """Train ``built.model`` from the weights ``start`` as ``run`` says, then evaluate it; (results, trainer).

    ``reference``: the ``fp32`` run's trainer, whose arguments, data and collator a run with another sampler reuses.
    ``half``: the fast runs' frozen dtype.
    """
    frozen_dtype, sampling, perturbation, perturbation_seed = run_spec(run, half)
    model = built.model
    model.hold_frozen_in("float32")
    model.load_state_dict(start)  # the same fp32 start for every run
    if perturbation:
        generator = torch.Generator().manual_seed(perturbation_seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if model.is_trainable_by_default(name):
                    param.mul_(1 + perturbation * torch.randn(param.shape, generator=generator))
    started = time.perf_counter()
    if sampling is None:  # the trainer holds the frozen parts in frozen_dtype before creating the optimizer
        trainer = train_demo(built, parts, dataclasses.replace(config, frozen_dtype=frozen_dtype), folder / run)
    else:
        trainer = InstructBlipTrainer(
            model=model,
            args=dataclasses.replace(
                reference.args,
                output_dir=str(folder / run),
                frozen_dtype=frozen_dtype,
                train_sampling_strategy=sampling,
            ),
            train_dataset=reference.train_dataset,
            data_collator=reference.data_collator,
            mixture_sizes=reference.mixture_sizes,
        )
        trainer.train()
    seconds = time.perf_counter() - started
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    started = time.perf_counter()
    evaluation = evaluate_demo(
        model, built.processor, demo_eval_sets(config, EVAL_TASKS), demo_eval_sets(config, SYNTHETIC_HELD_OUT)
    )
    results = {
        "losses": losses,
        "scores": {name: 100 * result.score for name, result in evaluation.held_out.items()},
        "metrics": {name: result.metric for name, result in evaluation.all_results().items()},
        "held_in": {name: 100 * result.score for name, result in evaluation.held_in.items()},
        "sampling": trainer.args.train_sampling_strategy,
        "train_seconds": seconds,
        "eval_seconds": time.perf_counter() - started,
    }
    return results, trainer


#: the same-weights comparison: which frozen parts compute in half precision (the others in fp32, from the rounded
#: weights)
GAP_PARTS: dict[str, tuple[str, ...]] = {
    "vision tower and LLM (fast)": ("vision_model", "language_model"),
    "vision tower only": ("vision_model",),
    "LLM only": ("language_model",),
}
#: with ``--half float16``, also the fast path's gradient without loss scaling (what fp16 gives without a scaler)
UNSCALED = "vision tower and LLM, no loss scaling"
#: the largest loss scale the fp16 gradients are measured with (halved until nothing overflows, as a GradScaler
#: backs off; 2**8 leaves room for the 70-17,700x growth of the gradient inside the demo's LLM, measured)
MAX_LOSS_SCALE = 2.0**8


def _loss_and_gradient(
    model: Any, batch: dict[str, torch.Tensor], loss_scale: float = 1.0
) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch, return_logits=False).loss
    (loss * loss_scale).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]) / loss_scale
    if loss_scale > 1 and not bool(grad.isfinite().all()):  # overflowed fp16: back off, as a GradScaler would
        return _loss_and_gradient(model, batch, loss_scale / 2)
    return loss.item(), grad


def _cosines(first: list[torch.Tensor], second: list[torch.Tensor]) -> list[float]:
    cosine = torch.nn.functional.cosine_similarity
    return [float(cosine(a.double(), b.double(), dim=0)) for a, b in zip(first, second)]


def same_weights_gap(
    built: BuiltModel, weights: dict[str, torch.Tensor], config: DemoConfig, batches: int = 4, half: str = "bfloat16"
) -> dict[str, Any]:
    """The precision alone, at fixed ``weights``: loss and trained-parts gradient on fixed batches, ``half`` vs fp32.

    No training, so no drift: what one step of the fast path computes differently. Dropout off (eval mode). Besides
    the fast path, each frozen part alone in ``half`` (`GAP_PARTS`), to tell where a difference arises. The gradient's
    image-dependent part is the gradient with the batch's images minus the one with its images rolled by one sample:
    what the images teach the trained parts. fp16 gradients are measured with loss scaling, as the trainer trains
    them (`MAX_LOSS_SCALE`), and once more without (`UNSCALED`).
    """
    model, size = built.model, config.batch_size
    parts = synthetic_mixture(SYNTHETIC_HELD_IN, 2 * batches, seed=1, image_size=config.image_size)
    data = concatenate_mixture(parts)
    collator = InstructBlipDataCollator.for_model(model, built.processor, augment_images=False)  # the demo's
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: size * batches].tolist()
    inputs = [collator([data[i] for i in rows[b * size : (b + 1) * size]]) for b in range(batches)]

    def measure(
        in_half: tuple[str, ...], loss_scale: float = 1.0
    ) -> tuple[list[float], list[float], list[torch.Tensor], list[torch.Tensor]]:
        model.hold_frozen_in("float32")
        model.load_state_dict(weights)
        model.apply_trainable_policy()
        if in_half:
            model.hold_frozen_in(half)
            for name in {"vision_model", "language_model"} - set(in_half):
                model.get_submodule(name).float()
        model.eval()
        losses, image_effects, grads, image_grads = [], [], [], []
        for batch in inputs:
            loss, grad = _loss_and_gradient(model, batch, loss_scale)
            rolled_batch = batch | {"pixel_values": batch["pixel_values"].roll(1, 0)}
            rolled, rolled_grad = _loss_and_gradient(model, rolled_batch, loss_scale)
            losses.append(loss)
            image_effects.append(rolled - loss)
            grads.append(grad)
            image_grads.append(grad - rolled_grad)
        return losses, image_effects, grads, image_grads

    fp32_losses, fp32_effects, fp32_grads, fp32_image_grads = measure(())
    gap: dict[str, Any] = {
        "batch_size": size,
        "half": half,
        "fp32_losses": fp32_losses,
        "fp32_image_effect": fp32_effects,
    }
    scale = MAX_LOSS_SCALE if half == "float16" else 1.0
    # label -> (the parts held in half precision, the loss scale)
    settings = {label: (parts, scale) for label, parts in GAP_PARTS.items()}
    if half == "float16":
        settings[UNSCALED] = (GAP_PARTS["vision tower and LLM (fast)"], 1.0)
    for label, (in_half, loss_scale) in settings.items():
        losses, effects, grads, image_grads = measure(in_half, loss_scale)
        gap[label] = {
            "loss_rel_diff": [b / a - 1 for a, b in zip(fp32_losses, losses)],
            "image_effect": effects,
            "grad_cosine": _cosines(fp32_grads, grads),
            "grad_norm_rel_diff": [
                float(b.double().norm() / a.double().norm() - 1) for a, b in zip(fp32_grads, grads)
            ],
            "image_grad_cosine": _cosines(fp32_image_grads, image_grads),
        }
    model.zero_grad(set_to_none=True)
    return gap


def describe(config: DemoConfig, quick: bool, half: str = "bfloat16") -> str:
    """The setup in one line: parts, the hyperparameters read from `DemoConfig`, the fast path's dtype if not bf16."""
    parts = (
        "quick: tiny random ViT, Q-Former and Llama"
        if quick
        else f"vision {config.describe_vision()}, Q-Former from {config.qformer}, LLM {config.llm}"
    )
    return (
        f"{parts}; {config.image_size} px, {config.num_query_tokens} query tokens, vision feature layer "
        f"{config.feature_layer()}; {config.max_steps} steps x {config.batch_size}, learning rate "
        f"{config.learning_rate:g}, {config.warmup_steps} warm-up steps, max_grad_norm {config.max_grad_norm:g}, "
        f"{config.mixture_sampling} mixture, seed {config.seed}" + ("" if half == "bfloat16" else f"; fast in {half}")
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    except OSError:
        pass
    native = "native" if cpu_has_native_bf16() else "emulated"
    return (
        f"{cpu}, bf16 {native}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def _difference_table(
    results: dict[str, dict[str, Any]], key: str, worst: dict[str, float], relative: bool
) -> list[str]:
    """Rows of ``results[run][key]`` beside fp32's, with the difference; records each run's largest in ``worst``."""
    fp32 = results["fp32"][key]
    others = [run for run in results if run != "fp32"]
    lines = []
    for name in sorted(fp32) if relative else fp32:
        cells = []
        for run in others:
            value = results[run][key][name]
            difference = value / fp32[name] - 1 if relative else value - fp32[name]
            worst[run] = max(worst.get(run, 0.0), abs(difference))
            cells.append(f"{value:.4f} ({difference:+.2%})" if relative else f"{value:.1f} ({difference:+.1f})")
        label = name if relative else f"{name} ({results['fp32']['metrics'][name]})"
        first = f"{fp32[name]:.4f}" if relative else f"{fp32[name]:.1f}"
        lines.append(f"| {label} | {first} | " + " | ".join(cells) + " |")
    return lines


def report(
    results: dict[str, dict[str, Any]], config: DemoConfig, setup: str, gaps: dict[str, dict[str, Any]] | None = None
) -> tuple[str, bool]:
    twins = {run: r for run, r in results.items() if TWIN in run}
    results = {run: r for run, r in results.items() if TWIN not in run}
    others = [run for run in results if run != "fp32"]
    times = ", ".join(
        f"{run} {r['train_seconds']:.0f} s training + {r['eval_seconds']:.0f} s evaluation"
        for run, r in (results | twins).items()
    )
    reused = [run for run, r in (results | twins).items() if r.get("reused")]
    if reused:
        times += f". Reused from an earlier run: {', '.join(reused)}"
    batches = ", ".join(f"{run} {r['sampling']}" for run, r in results.items())
    lines = [f"Setup (DemoConfig): {setup}.", f"Machine: {machine()}.", f"Time: {times}. Batches: {batches}."]
    for weights, gap in (gaps or {}).items():
        lines += ["", gap_report(gap, weights)]
    worst_loss: dict[str, float] = {}
    worst_score: dict[str, float] = {}
    worst_held_in: dict[str, float] = {}
    header = " | ".join(f"{run} (vs fp32)" for run in others)
    lines += ["", "| step | fp32 loss | " + header + " |", "|---:|---:|" + "---:|" * len(others)]
    lines += _difference_table(results, "losses", worst_loss, relative=True)
    lines += [
        "",
        f"Zero-shot, synthetic held-out tasks (ranked; {config.eval_samples} samples each, seed {EVAL_SEED}), points; "
        "then held-in accuracy (greedy, exact match), %:",
        "",
        "| task (metric) | fp32 | " + header + " |",
        "|---|---:|" + "---:|" * len(others),
    ]
    lines += _difference_table(results, "scores", worst_score, relative=False)
    lines += _difference_table(results, "held_in", worst_held_in, relative=False)
    lines.append("")
    for run in others:
        lines.append(
            f"- {run} vs fp32: largest loss difference {worst_loss[run]:.2%}, largest zero-shot difference "
            f"{worst_score[run]:.1f} points (held-in {worst_held_in[run]:.1f})."
        )
    passed = worst_loss["fast"] <= LOSS_BAR and worst_score["fast"] <= SCORE_BAR
    lines.append(
        f"- The bar for fast ({LOSS_BAR:.0%} loss at every logged step, {SCORE_BAR:.0f} point zero-shot): "
        f"{'met' if passed else 'NOT met'}."
    )
    if twins:
        lines += ["", spread_report(results | twins)]
    return "\n".join(lines), passed


def welch(reference: list[float], other: list[float]) -> tuple[float, float]:
    """``mean(other) - mean(reference)`` and its standard error (Welch: each group's own variance)."""
    error = math.sqrt(statistics.variance(reference) / len(reference) + statistics.variance(other) / len(other))
    return statistics.fmean(other) - statistics.fmean(reference), error


def spread_report(results: dict[str, dict[str, Any]]) -> str:
    """fp32's runs against fast's (each with its ``~i`` twins) as spreads: group means, ranges and the difference of
    the means in standard errors, at every logged step, for the whole curve and for each zero-shot task."""
    groups = {base: [r for run, r in results.items() if run.partition(TWIN)[0] == base] for base in ("fp32", "fast")}
    fp32, fast = groups["fp32"], groups["fast"]

    def row(label: str, a: list[float], b: list[float], relative: bool) -> tuple[str, tuple[bool, bool]]:
        """The table row; whether the difference is within 2 standard errors, and within the issue's bar."""
        difference, error = welch(a, b)
        scale = statistics.fmean(a) if relative else 1.0
        fmt = ".4f" if relative else ".1f"
        cells = [f"{statistics.fmean(v):{fmt}} ({min(v):{fmt}}-{max(v):{fmt}})" for v in (a, b)]
        within = (abs(difference) <= 2 * error, abs(difference) / scale <= (LOSS_BAR if relative else SCORE_BAR))
        shown = f"{difference / scale:+.2%} ± {error / scale:.2%}" if relative else f"{difference:+.1f} ± {error:.1f}"
        ratio = f"{difference / error:+.1f} SE" if error else "no spread"
        return f"| {label} | {cells[0]} | {cells[1]} | {shown} ({ratio}) |", within

    lines = [
        f"Spreads: fp32 = {len(fp32)} runs (fp32 and its twins), fast = {len(fast)} runs (fast and its twins); "
        "each twin starts from the weights perturbed by 1e-6 (seed i, the same for both precisions). "
        "Difference of the means ± its standard error (Welch).",
        "",
        "| step | fp32 runs: mean (range) | fast runs: mean (range) | fast - fp32 |",
        "|---:|---:|---:|---:|",
    ]
    steps = list(results["fp32"]["losses"])
    inside = [0, 0]  # logged steps within 2 standard errors, within the bar
    for step in steps:
        line, within = row(str(step), [r["losses"][step] for r in fp32], [r["losses"][step] for r in fast], True)
        lines.append(line)
        inside = [count + flag for count, flag in zip(inside, within)]
    curves = (
        [statistics.fmean(r["losses"].values()) for r in fp32],
        [statistics.fmean(r["losses"].values()) for r in fast],
    )
    curve, curve_within = row("mean of the logged losses", *curves, relative=True)
    higher, p_value = rank_test(*curves)
    lines += [
        curve,
        "",
        f"By rank (Mann-Whitney), the mean of the logged losses: fast's run above fp32's in {higher:.0%} of the "
        f"{len(fp32) * len(fast)} pairs, two-sided p = {p_value:.3f}.",
        "",
        "| task | fp32 runs: mean (range) | fast runs: mean (range) | fast - fp32 (points) |",
        "|---|---:|---:|---:|",
    ]
    tasks_inside = [0, 0]  # zero-shot tasks only: the bar is the zero-shot one
    tasks = list(results["fp32"]["scores"])
    for task in tasks:
        values = [r["scores"][task] for r in fp32], [r["scores"][task] for r in fast]
        line, within = row(f"zero-shot {task}", *values, relative=False)
        lines.append(line)
        tasks_inside = [count + flag for count, flag in zip(tasks_inside, within)]
    for task in results["fp32"]["held_in"]:
        values = [r["held_in"][task] for r in fp32], [r["held_in"][task] for r in fast]
        lines.append(row(f"held-in {task}", *values, relative=False)[0])
    lines += [
        "",
        f"- Difference of the means within 2 standard errors: at {inside[0]} of {len(steps)} logged steps, for the "
        f"whole curve: {'yes' if curve_within[0] else 'no'}, on {tasks_inside[0]} of {len(tasks)} zero-shot tasks.",
        f"- Within the bar ({LOSS_BAR:.0%} loss, {SCORE_BAR:.0f} point zero-shot): at {inside[1]} of {len(steps)} "
        f"logged steps, for the whole curve: {'yes' if curve_within[1] else 'no'}, on {tasks_inside[1]} of "
        f"{len(tasks)} zero-shot tasks.",
    ]
    return "\n".join(lines)


def rank_test(reference: list[float], other: list[float]) -> tuple[float, float]:
    """Mann-Whitney: the share of (reference, other) pairs in which ``other`` is higher (ties count half), and the
    two-sided p-value of that share under "both groups come from one distribution", exact (every split of the pooled
    values) up to 200,000 splits, else from the normal approximation."""
    ranks = average_ranks(np.asarray(reference + other, dtype=np.float64)).tolist()  # ties share their mean rank
    n, m = len(reference), len(other)
    offset = m * (m + 1) / 2  # U of ``other`` = its rank sum - offset
    observed = sum(ranks[n:]) - offset
    centre, pairs = n * m / 2, n * m
    if math.comb(n + m, m) <= 200_000:
        split_us = [sum(split) - offset for split in itertools.combinations(ranks, m)]
        p_value = sum(abs(u - centre) >= abs(observed - centre) - 1e-9 for u in split_us) / len(split_us)
    else:
        spread = math.sqrt(n * m * (n + m + 1) / 12)
        p_value = math.erfc(abs(observed - centre) / spread / math.sqrt(2))
    return observed / pairs, p_value


def load_reused(path: Path, setup: str, eval_samples: int) -> dict[str, dict[str, Any]]:
    """The runs of an earlier ``--output`` JSON, after checking that it trained and evaluated as this run does."""
    numbers = json.loads(path.read_text())
    if numbers.get("setup") != setup:
        raise SystemExit(f"--reuse {path}: its runs trained another setup:\n  {numbers.get('setup')}\nnot\n  {setup}")
    if "eval_samples" not in numbers:
        raise SystemExit(
            f"--reuse {path}: it does not record its evaluation size (written before --reuse existed); add "
            f'"eval_samples": N to it if you know the --eval-samples it ran with'
        )
    if numbers["eval_samples"] != eval_samples:
        raise SystemExit(
            f"--reuse {path}: evaluated on {numbers['eval_samples']} samples per task, not {eval_samples}"
        )
    runs = {run: r for run, r in numbers.items() if isinstance(r, dict) and "losses" in r}
    for r in runs.values():
        r["losses"] = {int(step): loss for step, loss in r["losses"].items()}  # JSON keys are strings
        r["reused"] = True
    return runs


def write_numbers(
    path: Path, setup: str, config: DemoConfig, results: dict[str, dict[str, Any]], gaps: dict[str, dict[str, Any]]
) -> None:
    """The runs' numbers as JSON (what ``--reuse`` reads), replacing the file in one step."""
    numbers = {
        "setup": setup,
        "eval_samples": config.eval_samples,
        "machine": machine(),
        **results,
        "same_weights": gaps,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(numbers, indent=2))
    partial.replace(path)  # atomic: an interruption leaves the previous file, never half of one


def gap_report(gap: dict[str, Any], weights: str = "the start") -> str:
    def listed(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    half = gap.get("half", "bfloat16")
    lines = [
        f"Same weights ({weights}), {len(gap['fp32_losses'])} fixed batches of {gap['batch_size']}, frozen parts in "
        f"{half} vs fp32 (fp32 losses {listed(gap['fp32_losses'], '.3f')}; rolling the images by one sample within "
        f"the batch changes them by {listed(gap['fp32_image_effect'], '+.4f')}):",
        "",
        f"| in {half} | loss | trained parts' gradient: cosine | its norm | its image-dependent part: cosine | "
        "images' effect on the loss |",
        "|---|---|---|---|---|---|",
    ]
    for label in [*GAP_PARTS, UNSCALED] if UNSCALED in gap else GAP_PARTS:
        row = gap[label]
        lines.append(
            f"| {label} | {listed(row['loss_rel_diff'], '+.2%')} | {listed(row['grad_cosine'], '.4f')} | "
            f"{listed(row['grad_norm_rel_diff'], '+.2%')} | {listed(row['image_grad_cosine'], '.3f')} | "
            f"{listed(row['image_effect'], '+.4f')} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", default=None, help="vision part (folder, shipped:..., or JSON config); demo's")
    parser.add_argument("--qformer", default=None, help="Q-Former part; default: the demo's")
    parser.add_argument("--llm", default=None, help="LLM part; default: the demo's")
    parser.add_argument("--vision-feature-layer", type=int, default=None, help="default: the demo's")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the demo's")
    parser.add_argument("--seed", type=int, default=None, help="new parts' initialisation and data; the demo's")
    parser.add_argument("--eval-samples", type=int, default=200, help="samples per evaluation task")
    parser.add_argument("--runs", nargs="+", default=["fp32", "fast", "fp32-twin"], choices=list(RUNS))
    parser.add_argument(
        "--twins", type=int, default=0, help="K: fp32~1..K and fast~1..K instead of fp32-twin (spreads)"
    )
    parser.add_argument("--reuse", type=Path, help="an earlier --output's JSON: its runs are not trained again")
    parser.add_argument("--quick", action="store_true", help="tiny random parts, few steps: a smoke test")
    parser.add_argument("--gap-only", action="store_true", help="only the same-weights comparison (no training)")
    parser.add_argument(
        "--half",
        choices=("bfloat16", "float16"),
        default="bfloat16",
        help="the fast path's frozen dtype (float16: the trainer scales the loss; emulated and slow on CPUs)",
    )
    parser.add_argument(
        "--output", type=Path, help="also write the report here (and the numbers as .json, after every run)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.twins < 0:
        raise SystemExit(f"--twins: a count of twins per precision, not {args.twins}")
    config = run_config(args)
    setup = describe(config, args.quick, args.half)
    reused = load_reused(args.reuse, setup, config.eval_samples) if args.reuse else {}  # refused before any work
    runs = [run for run in args.runs if not (args.twins and run == "fp32-twin")]  # fp32-twin is fp32~1
    if "fp32" in reused and "fp32-random" in runs:
        raise SystemExit(f"--runs fp32-random reuses the fp32 run's trainer, which --reuse {args.reuse} cannot give")
    print(f"Setup (DemoConfig): {setup}\nMachine: {machine()}", flush=True)
    built = build(config, args.quick)
    start = {name: tensor.clone() for name, tensor in built.model.state_dict().items()}
    gaps = {"the start": same_weights_gap(built, start, config, half=args.half)}
    print(gap_report(gaps["the start"]), flush=True)
    if args.gap_only:
        return 0
    parts = demo_training_data(config)
    results: dict[str, dict[str, Any]] = {}
    reference = None
    with tempfile.TemporaryDirectory() as folder:  # the Trainer's output_dir: nothing is saved there
        for run in dict.fromkeys(["fp32", "fast", *runs, *twin_runs(args.twins)]):
            if run in reused:
                results[run] = reused[run]
                continue
            print(f"training {run} ...", flush=True)
            results[run], trainer = train_run(built, start, parts, config, run, Path(folder), reference, args.half)
            reference = reference or trainer
            print(f"  losses {results[run]['losses']}, zero-shot {results[run]['scores']}", flush=True)
            if run == "fp32":  # the precision alone again, where training has taught the trained parts something
                trained = {name: tensor.clone() for name, tensor in built.model.state_dict().items()}
                gaps[TRAINED] = same_weights_gap(built, trained, config, half=args.half)
                print(gap_report(gaps[TRAINED], TRAINED), flush=True)
            if args.output:  # after every run, so that a long run cut short keeps what it trained (for --reuse)
                write_numbers(args.output.with_suffix(".json"), setup, config, {**reused, **results}, gaps)
    text, passed = report(results, config, setup, gaps)
    print(text)
    if args.output:
        write_numbers(args.output.with_suffix(".json"), setup, config, {**reused, **results}, gaps)
        args.output.write_text(text + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
