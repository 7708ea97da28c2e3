"""ROUGE-L (Lin, 2004), as coco-caption / pycocoevalcap's ``Rouge`` computes it (beta = 1.2)."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate

from ._checks import TextReferencesInputs
from ._text import caption_tokens

_NAME = "rouge_l"
_BETA = 1.2

_DESCRIPTION = """\
ROUGE-L (Lin, 2004) computed exactly like coco-caption's `pycocoevalcap.rouge.Rouge`: for each image, the longest
common subsequence (LCS) of the candidate with each reference gives precision LCS / len(candidate) and recall
LCS / len(reference); the maxima over the references, P and R (taken separately), give
F = (1 + beta^2) P R / (R + beta^2 P) with beta = 1.2 (0 if P or R is 0). The score is the mean over images.

Scale: a fraction in [0, 1]. Tokenisation: as for `cider` (`tokenize=False` for text tokenised already).
"""

_CITATION = """\
@inproceedings{lin2004rouge,
  title={{ROUGE}: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out (ACL Workshop)},
  year={2004}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image (at least 1).
    tokenize (`bool`, defaults to `True`): tokenise the captions first (`False`: split pre-tokenised text on spaces).
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    rouge_l (`float`): mean per-image ROUGE-L F-score, in [0, 1].
Examples:
    >>> rouge_l = RougeL()
    >>> rouge_l.compute(predictions=["a dog runs"], references=[["a dog runs"]])
    {'rouge_l': 1.0}
"""


def lcs_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row at a time)."""
    previous = [0] * (len(second) + 1)
    for token in first:
        current = [0]
        for j, other in enumerate(second):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_score(candidate: Sequence[str], references: Sequence[Sequence[str]], beta: float = _BETA) -> float:
    """ROUGE-L F-score of one candidate against its references (pycocoevalcap ``Rouge.calc_score``)."""
    if not candidate:
        return 0.0
    lcs = [lcs_length(ref, candidate) for ref in references]
    precision = max(common / len(candidate) for common in lcs)
    recall = max(common / len(ref) if ref else 0.0 for common, ref in zip(lcs, references))
    if precision == 0 or recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


class RougeL(TextReferencesInputs, evaluate.Metric):
    """ROUGE-L, equal to pycocoevalcap's ``Rouge`` on the same tokens (see `_DESCRIPTION`)."""

    _metric_label = _NAME

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
            codebase_urls=["https://github.com/tylin/coco-caption"],
            reference_urls=["https://aclanthology.org/W04-1013/"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        tokenize: bool = True,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        scores = [
            rouge_l_score(caption_tokens(prediction, tokenize), [caption_tokens(ref, tokenize) for ref in refs])
            for prediction, refs in zip(predictions, references)
        ]
        return {"rouge_l": sum(scores) / len(scores)}
