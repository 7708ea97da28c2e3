"""Predictions of one dataset -> its metric's number (the glue between the harness and `metrics`).

Conventions: for ROC-AUC (binary tasks scored by ranking, e.g. HatefulMemes) the *last* candidate is the positive
class (the registry's verbalisers are ordered negative, positive: ``("no", "yes")``, ``("false", "true")``) and the
score is its softmax probability over the candidates; MRR ranks the reference among the scored candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .metrics import ALIASES, SCORE_KEYS, load_metric

__all__ = ["score_predictions"]

_LIST_REFERENCES = frozenset({"vqa_accuracy", "cider", "bleu", "rouge_l", "ivqa_accuracy"})


def _reference_index(dataset: str, index: int, reference: str, candidates: Sequence[str]) -> int:
    if reference not in candidates:
        raise ValueError(f"dataset {dataset!r}, sample {index}: reference {reference!r} is not a candidate.")
    return list(candidates).index(reference)


def score_predictions(
    metric: str,
    dataset: str,
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    candidates: Sequence[Sequence[str]] | None = None,
    candidate_scores: Sequence[Sequence[float]] | None = None,
) -> float:
    """The dataset's score on ``metric`` (see `metrics.METRICS`; ``"auc"`` is ROC-AUC).

    Args:
        metric: Metric name.
        dataset: Named in error messages.
        predictions: One answer per sample (generated, or the best-ranked candidate).
        references: All reference answers per sample (the first one is the target).
        candidates: Candidate answers per sample (ranked tasks).
        candidate_scores: Log-likelihood of each candidate (ranked tasks; needed for ROC-AUC and MRR).
    """
    name = ALIASES.get(metric, metric)
    for i, sample_references in enumerate(references):
        if not sample_references:
            raise ValueError(f"dataset {dataset!r}, sample {i}: no reference answer.")
    if name in ("roc_auc", "mrr"):
        if candidates is None or candidate_scores is None:
            raise ValueError(f"dataset {dataset!r}: {name} needs candidates and their scores (rank inference).")
        correct = [_reference_index(dataset, i, r[0], c) for i, (r, c) in enumerate(zip(references, candidates))]
        if name == "mrr":
            return load_metric(name).compute(predictions=candidate_scores, references=correct, dataset_name=dataset)[
                name
            ]
        positive = [float(torch.tensor(s).softmax(0)[-1]) for s in candidate_scores]
        labels = [int(c == len(cands) - 1) for c, cands in zip(correct, candidates)]
        return load_metric(name).compute(predictions=positive, references=labels, dataset_name=dataset)[name]
    if name in _LIST_REFERENCES:
        refs: list[list[str]] = [list(r) for r in references]
        return load_metric(name).compute(predictions=list(predictions), references=refs, dataset_name=dataset)[
            SCORE_KEYS[name]
        ]
    if name == "accuracy":
        targets = [r[0] for r in references]
        result = load_metric(name).compute(
            predictions=list(predictions), references=targets, normalize=True, dataset_name=dataset
        )
        return result["accuracy"]
    raise ValueError(f"dataset {dataset!r}: no scoring rule for metric {metric!r}.")
