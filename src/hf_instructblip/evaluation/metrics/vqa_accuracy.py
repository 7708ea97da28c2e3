"""VQA accuracy: min(#annotators who gave the answer / 3, 1), averaged over the 10-choose-9 annotator subsets.

The official VQA evaluator (GT-Vision-Lab/VQA ``vqaEval.py``; LAVIS ``vqa_tools/vqa_eval.py`` is a copy), used by
the paper for VQAv2, OK-VQA, TextVQA and VizWiz (arXiv 2305.06500, appendix dataset table).
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate

from ._checks import TextReferencesInputs
from ._text import normalize_vqa_answer, process_punctuation

_NAME = "vqa_accuracy"
# With one answer the leave-one-out subsets are empty and every prediction would score 0.
_MIN_ANSWERS = 2

_DESCRIPTION = """\
VQA accuracy (Antol et al., 2015), as computed by the official VQA evaluation code. For each question, with n
reference answers (10 in VQAv2, OK-VQA, TextVQA, VizWiz), the prediction scores

    acc = mean over annotators i of min(1, #{j != i : answer_j == prediction} / 3),

i.e. "min(#humans that said it / 3, 1)" averaged over the n leave-one-out subsets (the 10-choose-9 subsets for
n = 10). With 10 answers, 0, 1, 2, 3 and >= 4 matches give 0, 0.3, 0.6, 0.9 and 1.0. The score is the mean over
questions, a fraction in [0, 1] (the paper reports x100).

Normalisation (official): the prediction is stripped and passed through the official punctuation processing
(punctuation deleted or blanked, the digit-comma-digit rule, periods removed unless before a digit) and then
lower-cased, number words 'none', 'zero'..'ten' turned into digits, the articles a/an/the removed and the official
contraction table applied ('dont' -> "don't"). Reference answers are used as given, except that when the annotators
disagree they get the punctuation processing only: the official code relies on the annotation files being
normalised already. For raw references (e.g. 'Two', 'yes!') pass `normalize_references=True` to give every
reference the full normalisation of the prediction.

Fewer than 10 answers: the same leave-one-out formula over the n answers given (what the official code computes for
n answers), so the best score is min(1, (n - 1) / 3). A single answer is rejected (its leave-one-out subset is
empty, every prediction would score 0): use the `accuracy` metric for single-answer datasets such as GQA.
"""

_CITATION = """\
@inproceedings{antol2015vqa,
  title={{VQA}: Visual Question Answering},
  author={Antol, Stanislaw and Agrawal, Aishwarya and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and
          Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={ICCV},
  year={2015}
}
@inproceedings{goyal2017making,
  title={Making the {V} in {VQA} Matter: Elevating the Role of Image Understanding in Visual Question Answering},
  author={Goyal, Yash and Khot, Tejas and Summers-Stay, Douglas and Batra, Dhruv and Parikh, Devi},
  booktitle={CVPR},
  year={2017}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the predicted answer of each question (raw text; normalised here).
    references (`list` of `list` of `str`): the annotators' answers of each question (10 in VQAv2), at least 2.
    normalize_references (`bool`, defaults to `False`): apply the full answer normalisation to every reference
        answer (for raw references); the default is the official evaluator's handling.
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    vqa_accuracy (`float`): mean per-question accuracy, in [0, 1].
Examples:
    >>> vqa_accuracy = VqaAccuracy()
    >>> vqa_accuracy.compute(predictions=["Two"], references=[["2"] * 3 + ["3"] * 7])
    {'vqa_accuracy': 0.9}
"""


def question_accuracy(prediction: str, answers: Sequence[str], normalize_references: bool = False) -> float:
    """Official accuracy of one prediction against the annotators' answers of one question.

    Args:
        prediction: The raw predicted answer.
        answers: The annotators' answers (10 in VQAv2).
        normalize_references: Normalise every answer like the prediction instead of the official handling.

    Returns:
        The mean over annotators i of min(1, matches among the other answers / 3).
    """
    predicted = normalize_vqa_answer(prediction)
    if normalize_references:
        gold = [normalize_vqa_answer(answer) for answer in answers]
    elif len(set(answers)) > 1:
        gold = [process_punctuation(answer) for answer in answers]
    else:
        gold = list(answers)
    matches = sum(answer == predicted for answer in gold)
    # Leave annotator i out: the other answers hold `matches` hits, minus one if annotator i itself matched.
    per_subset = [min(1.0, (matches - (answer == predicted)) / 3) for answer in gold]
    return sum(per_subset) / len(per_subset)


class VqaAccuracy(TextReferencesInputs, evaluate.Metric):
    """VQA accuracy with the official answer normalisation (see `_DESCRIPTION`)."""

    _metric_label = _NAME
    _min_references = _MIN_ANSWERS

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            codebase_urls=[
                "https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/vqaEvaluation/vqaEval.py"
            ],
            reference_urls=["https://visualqa.org/evaluation.html"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        normalize_references: bool = False,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        scores = [
            question_accuracy(prediction, answers, normalize_references)
            for prediction, answers in zip(predictions, references)
        ]
        return {"vqa_accuracy": sum(scores) / len(scores)}
