"""Correctness of the fast path: the demo's setup trained in fp32 and with the frozen parts held in bf16, same start.

    .venv/bin/python benchmarks/check_fast_path.py                       # the demo's parts: about 15 min on 2 cores
    .venv/bin/python benchmarks/check_fast_path.py --vision shipped:efficientnet --output /tmp/check.md
    .venv/bin/python benchmarks/check_fast_path.py --quick               # tiny random parts: a smoke test

One model is built from parts with `building.build_model` (default: the demo's, `hf_instructblip.demo`: its random
ViT-4x192, all-MiniLM-L6-v2 as the Q-Former, SmolLM2-135M-Instruct as the LLM, 16 query tokens; ``--vision``,
``--qformer``, ``--llm`` take any part `build_model` takes) and trained three times from the same weights, with the
demo's hyperparameters (60 steps of 8 from the balanced mixture of the synthetic held-in tasks at 224 px, lr 2e-4,
6 warm-up steps, loss logged every 10 steps, ``max_length`` 96, no random crops):

* ``fp32``: ``frozen_dtype: float32``, batches grouped by length (the fast path's batches);
* ``fast``: ``frozen_dtype: bfloat16`` (vision tower and LLM stored in bf16, the trained parts in fp32), the same
  batches: the two differ in precision only;
* ``fp32-twin``: fp32 again, from the same weights with the trained parts multiplied by ``1 + 1e-6 * noise`` (a
  perturbation of a few fp32 roundings): how far fp32 training itself drifts from a perturbation far smaller than
  bf16's. If the twin drifts as far as ``fast`` does, the difference is the training's sensitivity, not the precision;
* ``fp32-random`` (``--runs``, not by default): fp32 with random batches, as the demo drew them before length grouping.

Reported first, without training (no drift): the loss and the trained parts' gradient of the start weights on 4 fixed
batches, bf16-held vs fp32 (``--gap-only`` stops there). Then the loss at every logged step of each run and its relative difference to ``fp32`` (the bar for ``fast``:
within 2% at every logged step), and the zero-shot scores (the paper's protocol, `evaluation.evaluate_zero_shot`:
vocabulary ranking) of the synthetic held-out tasks after training, each model evaluated in its own precision (the
bar: within 1 point). bf16 runs natively only on CPUs with AVX-512 BF16 or AMX; elsewhere it is emulated (slow, same
numbers).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from hf_instructblip.building import build_model
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_dataset, synthetic_mixture
from hf_instructblip.demo import DEMO_VISION_CONFIG, EVAL_SEED
from hf_instructblip.evaluation.harness import evaluate_zero_shot
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

#: name -> (frozen dtype, train_sampling_strategy, relative perturbation of the trained parts' start)
RUNS = {
    "fp32": ("float32", "group_by_length", 0.0),
    "fast": ("bfloat16", "group_by_length", 0.0),
    "fp32-twin": ("float32", "group_by_length", 1e-6),
    "fp32-random": ("float32", "random", 0.0),
}
LOSS_BAR = 0.02  # relative, at every logged step
SCORE_BAR = 1.0  # points
QUICK_PARTS = {
    "vision": {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    | {"intermediate_size": 64, "image_size": 224, "patch_size": 32},
    "qformer": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64},
    "llm": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
    | {"num_key_value_heads": 1, "intermediate_size": 64},
}


def train_run(
    model: Any, processor: Any, start: dict[str, torch.Tensor], run: str, args: argparse.Namespace, folder: Path
) -> dict[str, Any]:
    """Train ``model`` from the weights ``start`` as ``run`` says; the logged losses and the zero-shot scores."""
    frozen_dtype, sampling, perturbation = RUNS[run]
    model.hold_frozen_in("float32")
    model.load_state_dict(start)  # the same fp32 start for every run
    if perturbation:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if model.is_trainable_by_default(name):
                    param.mul_(1 + perturbation * torch.randn(param.shape, generator=generator))
    model.hold_frozen_in(frozen_dtype)
    parts = synthetic_mixture(SYNTHETIC_HELD_IN, args.steps * args.batch_size, seed=0, image_size=224)
    training_args = InstructBlipTrainingArguments(  # the demo's (`demo.run_demo`)
        output_dir=str(folder / run),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-4,
        warmup_steps=max(1, args.steps // 10),
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        frozen_dtype=frozen_dtype,
        train_sampling_strategy=sampling,
    )
    trainer = InstructBlipTrainer(
        model=model,
        args=training_args,
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor, max_length=96, augment_images=False),
        mixture_sizes={name: len(part) for name, part in parts.items()},
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    losses = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    eval_sets = {
        name: synthetic_dataset(name, args.eval_samples, seed=EVAL_SEED, image_size=224) for name in SYNTHETIC_HELD_OUT
    }
    results = evaluate_zero_shot(model, processor, eval_sets, batch_size=16, progress=False)
    scores = {name: 100 * result.score for name, result in results.items()}
    metrics = {name: result.metric for name, result in results.items()}
    return {"losses": losses, "scores": scores, "metrics": metrics, "train_seconds": seconds}


def same_weights_gap(model: Any, processor: Any, start: dict[str, torch.Tensor], batches: int = 4) -> dict[str, Any]:
    """The precision alone: loss and trained-parts gradient of the start weights on fixed batches, fp32 vs bf16.

    No training, so no drift: what one step of the fast path computes differently. Dropout off (eval mode).
    """
    data = concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN, 2 * batches, seed=1, image_size=224))
    collator = InstructBlipDataCollator.for_model(model, processor, max_length=96, augment_images=False)
    rows = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[: 8 * batches].tolist()
    inputs = [collator([data[i] for i in rows[b * 8 : (b + 1) * 8]]) for b in range(batches)]
    measured: dict[str, list] = {}
    for dtype in ("float32", "bfloat16"):
        model.hold_frozen_in("float32")
        model.load_state_dict(start)
        model.apply_trainable_policy()
        model.hold_frozen_in(dtype)
        model.eval()
        losses, grads = [], []
        for batch in inputs:
            model.zero_grad(set_to_none=True)
            loss = model(**batch, return_logits=False).loss
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        measured[dtype] = [losses, grads]
    model.zero_grad(set_to_none=True)
    (fp32_losses, fp32_grads), (bf16_losses, bf16_grads) = measured["float32"], measured["bfloat16"]
    return {
        "loss_rel_diff": [b / a - 1 for a, b in zip(fp32_losses, bf16_losses)],
        "fp32_losses": fp32_losses,
        "grad_cosine": [
            float(torch.nn.functional.cosine_similarity(a, b, dim=0)) for a, b in zip(fp32_grads, bf16_grads)
        ],
        "grad_norm_rel_diff": [float(b.norm() / a.norm() - 1) for a, b in zip(fp32_grads, bf16_grads)],
    }


def report(
    results: dict[str, dict[str, Any]], args: argparse.Namespace, build: str, gap: dict[str, Any] | None = None
) -> tuple[str, bool]:
    fp32 = results["fp32"]
    others = [run for run in results if run != "fp32"]
    lines = [
        f"{build}; {args.steps} steps x {args.batch_size}; {platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {torch.get_num_threads()} threads. Training time: "
        + ", ".join(f"{run} {result['train_seconds']:.0f} s" for run, result in results.items())
        + ".",
        "",
        "| step | fp32 loss | " + " | ".join(f"{run} loss (vs fp32)" for run in others) + " |",
        "|---:|---:|" + "---:|" * len(others),
    ]
    worst = dict.fromkeys(others, 0.0)
    for step in sorted(fp32["losses"]):
        cells = []
        for run in others:
            loss = results[run]["losses"][step]
            worst[run] = max(worst[run], abs(loss / fp32["losses"][step] - 1))
            cells.append(f"{loss:.4f} ({loss / fp32['losses'][step] - 1:+.2%})")
        lines.append(f"| {step} | {fp32['losses'][step]:.4f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Zero-shot, synthetic held-out tasks ({args.eval_samples} samples each, seed {EVAL_SEED}), points:",
        "",
        "| task (metric) | fp32 | " + " | ".join(f"{run} (vs fp32)" for run in others) + " |",
        "|---|---:|" + "---:|" * len(others),
    ]
    worst_score = dict.fromkeys(others, 0.0)
    for name, score in fp32["scores"].items():
        cells = []
        for run in others:
            other = results[run]["scores"][name]
            worst_score[run] = max(worst_score[run], abs(other - score))
            cells.append(f"{other:.1f} ({other - score:+.1f})")
        lines.append(f"| {name} ({fp32['metrics'][name]}) | {score:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    for run in others:
        lines.append(
            f"- {run} vs fp32: largest loss difference {worst[run]:.2%}, largest score difference "
            f"{worst_score[run]:.1f} points."
        )
    passed = worst["fast"] <= LOSS_BAR and worst_score["fast"] <= SCORE_BAR
    lines.append(f"- The bar for fast ({LOSS_BAR:.0%}, {SCORE_BAR:.0f} point): {'met' if passed else 'NOT met'}.")
    if gap is not None:
        lines += ["", gap_report(gap)]
    return "\n".join(lines), passed


def gap_report(gap: dict[str, Any]) -> str:
    def listed(values: list[float], fmt: str) -> str:
        return ", ".join(format(v, fmt) for v in values)

    return (
        f"Same weights (the start), {len(gap['fp32_losses'])} fixed batches of 8, bf16-held vs fp32: loss "
        f"{listed(gap['loss_rel_diff'], '+.2%')} (fp32 losses {listed(gap['fp32_losses'], '.3f')}); gradient of the "
        f"trained parts: cosine {listed(gap['grad_cosine'], '.4f')}, norm {listed(gap['grad_norm_rel_diff'], '+.2%')}."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", default=None, help="vision part (folder, shipped:..., or JSON config)")
    parser.add_argument("--qformer", default="shipped:minilm", help="Q-Former part")
    parser.add_argument("--llm", default="shipped:smollm2", help="LLM part")
    parser.add_argument("--num-query-tokens", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=200)
    parser.add_argument("--runs", nargs="+", default=["fp32", "fast", "fp32-twin"], choices=list(RUNS))
    parser.add_argument("--quick", action="store_true", help="tiny random parts, few steps: a smoke test")
    parser.add_argument("--gap-only", action="store_true", help="only the same-weights comparison (no training)")
    parser.add_argument("--output", type=Path, help="also write the report here (and the numbers as .json)")
    return parser.parse_args(argv)


def _part(value: str | None, default: Any) -> Any:
    if value is None:
        return default
    return json.loads(value) if value.lstrip().startswith("{") else value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.quick:
        vision, qformer, llm = QUICK_PARTS["vision"], QUICK_PARTS["qformer"], QUICK_PARTS["llm"]
        tokenizers = {"llm_tokenizer": "shipped:smollm2", "qformer_tokenizer": "shipped:minilm"}
        args.steps, args.eval_samples = min(args.steps, 20), min(args.eval_samples, 8)
    else:
        vision, qformer, llm = _part(args.vision, DEMO_VISION_CONFIG), _part(args.qformer, None), _part(args.llm, None)
        tokenizers = {}
    built = build_model(vision, qformer, llm, num_query_tokens=args.num_query_tokens, seed=0, **tokenizers)
    model, processor = built.model, built.processor
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    described = "quick (tiny random parts)" if args.quick else f"vision {vision}, Q-Former {qformer}, LLM {llm}"
    gap = same_weights_gap(model, processor, start)
    print(gap_report(gap), flush=True)
    if args.gap_only:
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as folder:  # the Trainer's output_dir: nothing is saved there
        for run in dict.fromkeys(["fp32", "fast", *args.runs]):
            print(f"training {run} ...", flush=True)
            results[run] = train_run(model, processor, start, run, args, Path(folder))
    text, passed = report(results, args, described, gap)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
        args.output.with_suffix(".json").write_text(json.dumps({**results, "same_weights": gap}, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
