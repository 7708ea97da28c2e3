"""``loss_curve.png``: what a person looks at after a run, drawn so that it cannot mislead.

The loss axis starts at 0 and shows the chance level, ln(vocabulary size): the cross-entropy of a uniform guess
over the LLM's vocabulary, so a loss going from 10.83 to 10.73 next to a chance level of 10.80 reads as what it
is (no learning yet) rather than as a steep drop in an auto-scaled plot. The learning rate is drawn on a second
axis (warm-up and decay explain much of a curve's shape); evaluation metrics other than losses (zero-shot accuracy,
CIDEr, ...) get a panel of their own below.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["chance_loss", "plot_loss_curve"]

logger = logging.getLogger(__name__)

# Logged eval_* values that are bookkeeping, not metrics.
_NOT_METRICS = ("_runtime", "_samples_per_second", "_steps_per_second", "_preparation_time", "_loss")


def chance_loss(vocab_size: int) -> float:
    """Cross-entropy of a uniform guess over ``vocab_size`` tokens: ln(vocab_size) nats."""
    return math.log(vocab_size)


def _series(log_history: Sequence[Mapping[str, Any]], wanted: Any) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if wanted(key) and isinstance(value, (int, float)) and "step" in entry:
                series.setdefault(key, []).append((entry["step"], float(value)))
    return series


def _is_loss(key: str) -> bool:
    return key == "loss" or (key.startswith("eval_") and key.endswith("_loss"))


def _is_metric(key: str) -> bool:
    return key.startswith("eval_") and not key.endswith(_NOT_METRICS) and key != "eval_epoch"


def _label(key: str) -> str:
    return "train loss" if key == "loss" else key.removeprefix("eval_").replace("_", " ")


def plot_loss_curve(
    log_history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    vocab_size: int | None = None,
) -> Path | None:
    """Plot the training loss (and every eval loss and metric) against the step from ``trainer.state.log_history``.

    Args:
        log_history: ``trainer.state.log_history``.
        path: Where to write the PNG.
        vocab_size: The LLM's vocabulary size: draws the chance level ln(vocab_size).

    Returns:
        The PNG's path, or None (with a warning) when no loss was logged (raise ``logging_steps``'s frequency).
    """
    from matplotlib.figure import Figure  # Agg canvas, no pyplot global state

    losses = _series(log_history, _is_loss)
    if not losses:
        logger.warning("No loss was logged (logging_steps > max_steps?); no loss curve written.")
        return None
    metrics = _series(log_history, _is_metric)
    figure = Figure(figsize=(7, 6.5 if metrics else 4.5), dpi=100)
    axes = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if metrics else [figure.subplots()]
    top = axes[0]
    for key, points in losses.items():
        steps, values = zip(*points)
        top.plot(steps, values, marker="o" if len(points) < 30 else None, label=_label(key))
    highest = max(value for points in losses.values() for _, value in points)
    if vocab_size:
        chance = chance_loss(vocab_size)
        top.axhline(chance, color="grey", linestyle="--", label=f"chance: ln({vocab_size:,}) = {chance:.2f}")
        highest = max(highest, chance)
    top.set_ylim(0, highest * 1.1 if math.isfinite(highest) else None)
    top.set_ylabel("loss (nats per token)")
    top.set_title("InstructBLIP instruction tuning")
    top.grid(alpha=0.3)
    handles, labels = top.get_legend_handles_labels()
    rates = _series(log_history, lambda key: key == "learning_rate").get("learning_rate")
    if rates:
        right = top.twinx()
        steps, values = zip(*rates)
        right.plot(steps, values, color="tab:orange", linewidth=1, alpha=0.7, label="learning rate")
        right.set_ylabel("learning rate")
        right.set_ylim(0, max(values) * 1.1 or 1)
        right.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        extra_handles, extra_labels = right.get_legend_handles_labels()
        handles, labels = handles + extra_handles, labels + extra_labels
    top.legend(handles, labels, loc="lower left", fontsize="small")
    if metrics:
        bottom = axes[1]
        for key, points in metrics.items():
            steps, values = zip(*points)
            bottom.plot(steps, values, marker="o", label=_label(key))
        bottom.set_ylabel("evaluation metric")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize="small")
    axes[-1].set_xlabel("step")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path
