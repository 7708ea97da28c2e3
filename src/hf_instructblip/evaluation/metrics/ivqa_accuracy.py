"""iVQA accuracy: min(#annotators who gave the answer / 2, 1) (Yang et al. 2021; arXiv 2305.06500 Table 1)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate

from ._checks import TextReferencesInputs
from ._text import normalize_vqa_answer

_NAME = "ivqa_accuracy"

_DESCRIPTION = """\
iVQA accuracy (Yang et al., 2021): each iVQA question has 5 annotated answers and a prediction scores
min(1, #answers equal to it / 2), so an answer given by two annotators is fully correct and one given by a single
annotator half correct. The score is the mean over questions, a fraction in [0, 1] (the paper reports x100).

Normalisation: Just Ask ranks a closed answer vocabulary and needs none; for generated answers both the prediction
and the references get the official VQA answer normalisation (lower-case, punctuation, number words, articles,
contractions; see `vqa_accuracy`) unless `normalize=False`.
"""

_CITATION = """\
@inproceedings{yang2021justask,
  title={Just Ask: Learning to Answer Questions from Millions of Narrated Videos},
  author={Yang, Antoine and Miech, Antoine and Sivic, Josef and Laptev, Ivan and Schmid, Cordelia},
  booktitle={ICCV},
  year={2021}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the predicted answer of each question.
    references (`list` of `list` of `str`): the annotated answers of each question (5 in iVQA), at least 1.
    normalize (`bool`, defaults to `True`): apply the VQA answer normalisation to predictions and references.
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    ivqa_accuracy (`float`): mean per-question accuracy, in [0, 1].
Examples:
    >>> ivqa_accuracy = IvqaAccuracy()
    >>> ivqa_accuracy.compute(predictions=["dog"], references=[["dog", "puppy", "dog", "cat", "dog"]])
    {'ivqa_accuracy': 1.0}
"""


class IvqaAccuracy(TextReferencesInputs, evaluate.Metric):
    """iVQA accuracy, min(#matching answers / 2, 1) (see `_DESCRIPTION`)."""

    _metric_label = _NAME

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            reference_urls=["https://antoyang.github.io/just-ask.html"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        normalize: bool = True,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        scores = []
        for prediction, answers in zip(predictions, references):
            if normalize:
                prediction, answers = normalize_vqa_answer(prediction), [normalize_vqa_answer(a) for a in answers]
            scores.append(min(1.0, sum(answer == prediction for answer in answers) / 2))
        return {"ivqa_accuracy": sum(scores) / len(scores)}
