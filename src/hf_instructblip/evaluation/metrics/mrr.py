"""Mean reciprocal rank of the correct candidate (the paper's Visual Dialog metric, arXiv 2305.06500 Table 1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

from ._checks import CheckedInputs, check_finite, check_pairs, where

_NAME = "mrr"

_DESCRIPTION = """\
Mean reciprocal rank (Voorhees, 1999): each sample ranks its candidates (the 100 answer options of a Visual Dialog
round) by their scores, highest first; the sample scores 1 / rank of its correct candidate; MRR is the mean over
samples. Visual Dialog (Das et al., 2017) reports it for the ground-truth answer among 100 options.

Inputs: per sample the scores of all its candidates (e.g. summed log-likelihoods; lists may differ in length) and
the index of the correct candidate in that list. Ties: rank = 1 + the number of OTHER candidates scoring at least
as high as the correct one (the pessimistic rank), so constant scores earn no credit and the result does not depend
on a sort order.

Scale: a fraction in (0, 1] (the paper reports x100).
"""

_CITATION = """\
@inproceedings{voorhees1999trec,
  title={The {TREC}-8 Question Answering Track Report},
  author={Voorhees, Ellen M.},
  booktitle={TREC},
  year={1999}
}
@inproceedings{das2017visual,
  title={Visual Dialog},
  author={Das, Abhishek and Kottur, Satwik and Gupta, Khushi and Singh, Avi and Yadav, Deshraj and Moura, Jos{\\'e} M. F.
          and Parikh, Devi and Batra, Dhruv},
  booktitle={CVPR},
  year={2017}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): per sample, the score of every candidate (higher is better).
    references (`list` of `int`): per sample, the index of the correct candidate in its score list.
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    mrr (`float`): mean of 1 / rank of the correct candidate, in (0, 1].
Examples:
    >>> mrr = MeanReciprocalRank()
    >>> mrr.compute(predictions=[[0.1, 0.9, 0.5], [0.3, 0.2, 0.9, 0.4]], references=[1, 0])
    {'mrr': 0.6666666666666666}
"""


def correct_rank(scores: Sequence[float], correct: int) -> int:
    """Pessimistic 1-based rank of candidate ``correct``: 1 + other candidates scoring at least as high."""
    target = scores[correct]
    return 1 + sum(score >= target for index, score in enumerate(scores) if index != correct)


class MeanReciprocalRank(CheckedInputs, evaluate.Metric):
    """Mean reciprocal rank from per-sample candidate scores and the correct index (see `_DESCRIPTION`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://visualdialog.org/challenge/2018#evaluation"],
        )

    def _check_inputs(self, predictions: Any, references: Any, dataset_name: str | None) -> None:
        check_pairs(_NAME, predictions, references, dataset_name)
        for index, (scores, correct) in enumerate(zip(predictions, references)):
            at = where(_NAME, dataset_name, index)
            if scores is None or isinstance(scores, (str, bytes)) or not hasattr(scores, "__len__"):
                raise ValueError(f"{at}: the prediction must be a list of candidate scores, got {scores!r}.")
            if len(scores) == 0:
                raise ValueError(
                    f"{at}: the candidate list is empty; every sample needs the scores of its candidates."
                )
            for score in scores:
                check_finite(_NAME, score, "candidate score", at)
            if isinstance(correct, bool) or not hasattr(correct, "__index__") or not 0 <= correct < len(scores):
                raise ValueError(
                    f"{at}: the reference must be the index of the correct candidate, an integer in [0, {len(scores)}), "
                    f"got {correct!r}."
                )

    def _compute(
        self, predictions: Sequence[Sequence[float]], references: Sequence[int], dataset_name: str | None = None
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        reciprocal = [1.0 / correct_rank(scores, correct) for scores, correct in zip(predictions, references)]
        return {"mrr": sum(reciprocal) / len(reciprocal)}
