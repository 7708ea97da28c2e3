"""BLEU-1..4 (Papineni et al., 2002), as coco-caption / pycocoevalcap's ``Bleu(4)`` computes them."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import datasets
import evaluate

from ._checks import TextReferencesInputs
from ._text import caption_tokens, ngram_counts

_NAME = "bleu"
_MAX_N = 4
# pycocoevalcap's smoothing constants: `tiny` keeps a zero-match precision at ~0, `small` avoids 0 / 0.
_TINY = 1e-15
_SMALL = 1e-9

_DESCRIPTION = """\
Corpus BLEU-1 to BLEU-4 (Papineni et al., 2002) computed exactly like coco-caption's `pycocoevalcap.bleu.Bleu(4)`:
clipped n-gram matches (clipped by the largest count in any single reference) and n-gram counts are summed over
the corpus; BLEU-n is the geometric mean of the 1..n precisions (with pycocoevalcap's 1e-15 / 1e-9 smoothing)
times the corpus brevity penalty exp(1 - r / c) when c < r, where c is the total candidate length and r the sum
over images of the "closest" reference length (ties go to the shorter reference), coco-caption's default.

Scale: fractions in [0, 1] (papers usually report x100).

Tokenisation: as for `cider` (pure-Python stand-in for coco-caption's PTB tokenizer; `tokenize=False` for text
tokenised already).
"""

_CITATION = """\
@inproceedings{papineni2002bleu,
  title={{BLEU}: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={ACL},
  year={2002}
}
@article{chen2015microsoft,
  title={Microsoft {COCO} Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
          Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): one generated caption per image.
    references (`list` of `list` of `str`): the reference captions of each image (at least 1).
    tokenize (`bool`, defaults to `True`): tokenise the captions first (`False`: split pre-tokenised text on spaces).
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    bleu_1, bleu_2, bleu_3, bleu_4 (`float`): corpus BLEU-n, in [0, 1].
Examples:
    >>> bleu = Bleu()
    >>> result = bleu.compute(predictions=["a dog runs on the grass"], references=[["a dog runs on the grass"]])
    >>> round(result["bleu_4"], 6)
    1.0
"""


@dataclass
class _CorpusCounts:
    """The sums coco-caption's ``BleuScorer`` keeps: lengths, and per n the matched and candidate n-grams."""

    candidate_length: int = 0
    reference_length: int = 0
    matched: list[int] = field(default_factory=lambda: [0] * _MAX_N)
    guessed: list[int] = field(default_factory=lambda: [0] * _MAX_N)

    def add(self, candidate: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        """Add one image: its candidate tokens and its references' tokens."""
        max_ref_counts: Counter[tuple[str, ...]] = Counter()
        for ref in references:
            max_ref_counts |= ngram_counts(ref, _MAX_N)  # element-wise max: clip by the best single reference
        length = len(candidate)
        # "closest" reference length; on a tie the shorter one (pycocoevalcap's min over (distance, length)).
        self.reference_length += min((abs(len(ref) - length), len(ref)) for ref in references)[1]
        self.candidate_length += length
        for ngram, count in ngram_counts(candidate, _MAX_N).items():
            self.matched[len(ngram) - 1] += min(max_ref_counts[ngram], count)
        for n in range(_MAX_N):
            self.guessed[n] += max(0, length - n)

    def scores(self) -> list[float]:
        """BLEU-1..4 of the corpus (pycocoevalcap ``BleuScorer.compute_score``)."""
        bleus = []
        product = 1.0
        for n in range(_MAX_N):
            product *= (self.matched[n] + _TINY) / (self.guessed[n] + _SMALL)
            bleus.append(product ** (1.0 / (n + 1)))
        ratio = (self.candidate_length + _TINY) / (self.reference_length + _SMALL)
        if ratio < 1:
            bleus = [bleu * math.exp(1 - 1 / ratio) for bleu in bleus]
        return bleus


class Bleu(TextReferencesInputs, evaluate.Metric):
    """Corpus BLEU-1..4, equal to pycocoevalcap's ``Bleu(4)`` on the same tokens (see `_DESCRIPTION`)."""

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
            reference_urls=["https://aclanthology.org/P02-1040/"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        tokenize: bool = True,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        corpus = _CorpusCounts()
        for prediction, refs in zip(predictions, references):
            corpus.add(caption_tokens(prediction, tokenize), [caption_tokens(ref, tokenize) for ref in refs])
        return {f"bleu_{n + 1}": score for n, score in enumerate(corpus.scores())}
