"""ROC-AUC of binary classification scores (the paper's metric for HatefulMemes, arXiv 2305.06500 Table 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from ._checks import CheckedInputs, check_finite, check_pairs, where

_NAME = "roc_auc"

_DESCRIPTION = """\
Area under the ROC curve of binary classification scores (e.g. the probability of "yes" for HatefulMemes): the
probability that a random positive sample scores higher than a random negative one, ties counting one half. It is
computed from ranks (Mann-Whitney U, tied scores sharing their average rank), which equals the trapezoidal area
under the ROC curve that `sklearn.metrics.roc_auc_score` computes, ties included.

Scale: a fraction in [0, 1] (0.5 is chance; the paper reports x100). Both classes must be present.
"""

_CITATION = """\
@article{hanley1982meaning,
  title={The Meaning and Use of the Area under a Receiver Operating Characteristic ({ROC}) Curve},
  author={Hanley, James A. and McNeil, Barbara J.},
  journal={Radiology},
  volume={143},
  number={1},
  pages={29--36},
  year={1982}
}
@article{fawcett2006introduction,
  title={An Introduction to {ROC} Analysis},
  author={Fawcett, Tom},
  journal={Pattern Recognition Letters},
  volume={27},
  number={8},
  pages={861--874},
  year={2006}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): the score of the positive class for each sample (any monotone score works:
        probabilities, log-likelihoods, logits).
    references (`list` of `int`): the label of each sample, 1 (positive) or 0 (negative).
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    roc_auc (`float`): area under the ROC curve, in [0, 1].
Examples:
    >>> roc_auc = RocAuc()
    >>> roc_auc.compute(predictions=[0.1, 0.4, 0.35, 0.8], references=[0, 0, 1, 1])
    {'roc_auc': 0.75}
"""


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of ``scores`` in increasing order, tied scores sharing the mean of their ranks."""
    _, group, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts)  # the rank of each group's last member
    return (last_rank - (counts - 1) / 2.0)[group]


def roc_auc_score(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC-AUC from average ranks: (sum of positive ranks - P (P + 1) / 2) / (P N)."""
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    positive = np.asarray(labels) == 1
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


class RocAuc(CheckedInputs, evaluate.Metric):
    """ROC-AUC, equal to `sklearn.metrics.roc_auc_score` (see `_DESCRIPTION`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://en.wikipedia.org/wiki/Receiver_operating_characteristic"],
        )

    def _check_inputs(self, predictions: Any, references: Any, dataset_name: str | None) -> None:
        check_pairs(_NAME, predictions, references, dataset_name)
        for index, (score, label) in enumerate(zip(predictions, references)):
            at = where(_NAME, dataset_name, index)
            check_finite(_NAME, score, "score", at)
            if label is None or isinstance(label, str) or label not in (0, 1):
                raise ValueError(f"{at}: the label must be 0 or 1, got {label!r}.")
        if len({int(label) for label in references}) < 2:
            only = int(references[0])
            raise ValueError(
                f"{where(_NAME, dataset_name)}: every label is {only}; ROC-AUC needs both positive (1) and negative (0) "
                "samples."
            )

    def _compute(
        self, predictions: Sequence[float], references: Sequence[int], dataset_name: str | None = None
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        return {"roc_auc": roc_auc_score(predictions, references)}
