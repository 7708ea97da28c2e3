"""``demo_results.png``: the demo's results drawn so that a reader can tell learning from chance.

Three panels: held-in accuracy per task before and after tuning, held-out (zero-shot) scores per task before and
after, each with the task's chance level marked; and the training loss with the learning rate. Score axes run from 0
to 100 and the loss axis starts at 0 with the chance level ln(vocabulary) (as `training.loss_curve`), so no axis
exaggerates a change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .demo import DemoEvaluation
    from .evaluation.harness import DatasetResult

__all__ = ["plot_demo_results"]


def _bars(
    axis: Any,
    title: str,
    before: Mapping[str, DatasetResult],
    after: Mapping[str, DatasetResult],
    blind: Mapping[str, float] | None = None,
) -> None:
    names = list(after)
    xs = range(len(names))
    width = 0.38
    axis.bar([x - width / 2 for x in xs], [100 * before[n].score for n in names], width, label="before tuning",
             color="#b0b0b0")  # fmt: skip
    axis.bar([x + width / 2 for x in xs], [100 * after[n].score for n in names], width, label="after tuning",
             color="#1f77b4")  # fmt: skip
    for x, name in zip(xs, names):
        chance = after[name].chance
        if chance is not None:
            axis.hlines(100 * chance, x - 0.45, x + 0.45, colors="#d62728", linestyles="--",
                        label="chance level" if x == 0 else None)  # fmt: skip
        axis.annotate(f"{100 * after[name].score:.0f}", (x + width / 2, 100 * after[name].score), ha="center",
                      va="bottom", fontsize=8)  # fmt: skip
        if blind and name in blind:  # the best answer without the image (demo.blind_baseline)
            axis.hlines(100 * blind[name], x - 0.45, x + 0.45, colors="black", linestyles=":",
                        label="blind: most common answer" if x == 0 else None)  # fmt: skip
    axis.set_xticks(list(xs), [f"{n.removeprefix('synthetic_')}\n({after[n].metric})" for n in names], fontsize=8)
    axis.set_ylim(0, 100)
    axis.set_ylabel("score (%)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="upper left")


def _loss(axis: Any, log_history: Sequence[Mapping[str, Any]], vocab_size: int | None) -> None:
    from .training.loss_curve import chance_loss

    points = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and "step" in entry]
    if points:
        axis.plot(*zip(*points), marker="o", color="#1f77b4", label="training loss")
    if vocab_size:
        axis.axhline(chance_loss(vocab_size), color="#d62728", linestyle="--", label="chance (ln vocabulary)")
    axis.set_ylim(bottom=0)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss (nats per target token)")
    axis.set_title("instruction tuning", fontsize=10)
    axis.legend(fontsize=7, loc="lower left")
    rates = [(entry["step"], entry["learning_rate"]) for entry in log_history if "learning_rate" in entry]
    if rates:
        twin = axis.twinx()
        twin.plot(*zip(*rates), color="#7f7f7f", linewidth=1, label="learning rate")
        twin.set_ylim(bottom=0)
        twin.set_ylabel("learning rate", color="#7f7f7f")


def plot_demo_results(
    before: DemoEvaluation,
    after: DemoEvaluation,
    log_history: Sequence[Mapping[str, Any]],
    path: str | Path,
    vocab_size: int | None = None,
    title: str = "hf_instructblip demo",
) -> Path:
    """Draw the three panels into ``path`` (PNG) and return it.

    Args:
        before: Results before tuning (`demo.evaluate_demo`).
        after: Results after tuning.
        log_history: ``Trainer.state.log_history`` (loss and learning rate per logged step).
        path: The PNG to write.
        vocab_size: The LLM's vocabulary size, for the loss panel's chance level (omitted when None).
        title: The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [3, 4, 4]})
    _bars(
        axes[0],
        "held-in tasks: unseen scenes\n(greedy generation, exact match)",
        before.held_in,
        after.held_in,
        after.blind,
    )
    _bars(axes[1], "held-out task types: zero-shot\n(candidates ranked)", before.held_out, after.held_out)
    _loss(axes[2], log_history, vocab_size)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
