"""Accuracy: the fraction of exact matches, on answer strings (optionally VQA-normalised) or on class ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

from ._checks import CheckedInputs, check_pairs, where
from ._text import normalize_vqa_answer

_NAME = "accuracy"

_DESCRIPTION = """\
Accuracy: the fraction of samples whose prediction equals the reference, used by the paper for GQA, VSR, IconQA,
ScienceQA, A-OKVQA, OCR-VQA, MSVD-QA and MSRVTT-QA. Inputs are either strings (generated or ranked answers) or
integers (class / option indices), the same type on both sides.

Normalisation (strings only): none by default, i.e. exact string equality. With `normalize=True` both sides get the
official VQA answer normalisation first (strip, punctuation, lower-case, number words to digits, articles removed,
contractions; see `vqa_accuracy`), so "Two." matches "2". LAVIS scores generated GQA answers this way but normalises
only the prediction (its references are normalised already); normalising both sides is the same on such references
and also right on raw ones.

Scale: a fraction in [0, 1] (the paper reports x100).
"""

_CITATION = """\
@inproceedings{dai2023instructblip,
  title={{InstructBLIP}: Towards General-purpose Vision-Language Models with Instruction Tuning},
  author={Dai, Wenliang and Li, Junnan and Li, Dongxu and Tiong, Anthony Meng Huat and Zhao, Junqi and Wang, Weisheng
          and Li, Boyang and Fung, Pascale and Hoi, Steven},
  booktitle={NeurIPS},
  year={2023}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str` or `list` of `int`): one predicted answer (or class index) per sample.
    references (`list` of `str` or `list` of `int`): the correct answer (or class index) of each sample.
    normalize (`bool`, defaults to `False`): VQA-normalise string predictions and references before comparing.
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    accuracy (`float`): fraction of exact matches, in [0, 1].
Examples:
    >>> accuracy = Accuracy()
    >>> accuracy.compute(predictions=["yes", "Two"], references=["yes", "2"], normalize=True)
    {'accuracy': 1.0}
"""


def _check_value(value: Any, role: str, at: str) -> None:
    if value is None:
        raise ValueError(f"{at}: the {role} is missing (None).")
    if isinstance(value, bool) or (not isinstance(value, (str, int)) and not hasattr(value, "__index__")):
        raise ValueError(f"{at}: the {role} must be a string or an integer, got {type(value).__name__} ({value!r}).")


class Accuracy(CheckedInputs, evaluate.Metric):
    """Exact-match accuracy on strings (optionally VQA-normalised) or integers (see `_DESCRIPTION`)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _check_inputs(self, predictions: Any, references: Any, dataset_name: str | None) -> None:
        check_pairs(_NAME, predictions, references, dataset_name)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            at = where(_NAME, dataset_name, index)
            _check_value(prediction, "prediction", at)
            _check_value(reference, "reference", at)
            if isinstance(prediction, str) != isinstance(reference, str):
                raise ValueError(
                    f"{at}: prediction {prediction!r} and reference {reference!r} have different types; compare "
                    "strings with strings or class indices with class indices."
                )

    def _compute(
        self,
        predictions: Sequence[str | int],
        references: Sequence[str | int],
        normalize: bool = False,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        if normalize:
            predictions = [normalize_vqa_answer(p) if isinstance(p, str) else p for p in predictions]
            references = [normalize_vqa_answer(r) if isinstance(r, str) else r for r in references]
        correct = sum(prediction == reference for prediction, reference in zip(predictions, references))
        return {"accuracy": correct / len(predictions)}
