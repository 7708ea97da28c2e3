"""CIDEr-D (Vedantam et al., 2015), as pycocoevalcap's ``Cider`` computes it (arXiv 2305.06500 Table 1)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import evaluate

from ._checks import TextReferencesInputs
from ._text import caption_tokens, ngram_counts

_NAME = "cider"
_MAX_N = 4
_SIGMA = 6.0

_DESCRIPTION = """\
CIDEr-D (Vedantam et al., 2015), the captioning metric of the paper, computed exactly like coco-caption's
`pycocoevalcap.cider.Cider` (which is CIDEr-D): TF-IDF vectors of the 1- to 4-grams of the candidate and of each
reference, with IDF = log(#images / #images whose references contain the n-gram) computed over the references of
the evaluated corpus itself; per n, the cosine similarity with clipping (min(candidate weight, reference weight)) and
the Gaussian length penalty exp(-delta^2 / (2 * 6^2)); averaged over n and over the references, times 10.

Scale: the natural CIDEr scale of pycocoevalcap (about 0-10 per caption, around 1 for a good model); the paper
reports CIDEr x 100 (e.g. 123.1 on NoCaps is 1.231 here). Because the IDF comes from the evaluated references, the
score depends on the corpus: evaluate the whole split in one call.

Tokenisation: coco-caption runs the Stanford PTB tokenizer (Java) first. Here raw captions are tokenised in pure
Python (lower-case, clitics split, the punctuation coco-caption drops removed; see `tokenize_caption`); pass
`tokenize=False` for text tokenised already, which is then used as pycocoevalcap uses it.
"""

_CITATION = """\
@inproceedings{vedantam2015cider,
  title={{CIDEr}: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR},
  year={2015}
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
    references (`list` of `list` of `str`): the reference captions of each image (at least 1; 5 in COCO).
    tokenize (`bool`, defaults to `True`): tokenise the captions first (`False`: split pre-tokenised text on spaces).
    dataset_name (`str`, *optional*): name of the evaluated dataset, quoted in error messages.
Returns:
    cider (`float`): corpus CIDEr-D, mean of the per-image scores (pycocoevalcap scale; the paper reports x100).
Examples:
    >>> cider = Cider()
    >>> result = cider.compute(predictions=["a dog runs", "a cat sleeps"],
    ...                        references=[["a dog is running"], ["a cat is sleeping on a bed"]])
"""


@dataclass(frozen=True)
class _TfIdf:
    """TF-IDF weights of one caption, per n-gram order, with their norms."""

    vectors: list[dict[tuple[str, ...], float]]
    norms: list[float]
    # pycocoevalcap counts bigrams here ("if n == 1"); the penalty only uses differences, which is #tokens - 1.
    length: int


def _tfidf(
    counts: Counter[tuple[str, ...]], document_frequency: Counter[tuple[str, ...]], log_images: float
) -> _TfIdf:
    vectors: list[dict[tuple[str, ...], float]] = [{} for _ in range(_MAX_N)]
    for ngram, term_frequency in counts.items():
        # An n-gram absent from every reference gets document frequency 1 (log 1 = 0).
        vectors[len(ngram) - 1][ngram] = term_frequency * (log_images - math.log(max(1.0, document_frequency[ngram])))
    norms = [math.sqrt(sum(weight * weight for weight in vector.values())) for vector in vectors]
    bigrams = sum(count for ngram, count in counts.items() if len(ngram) == 2)
    return _TfIdf(vectors, norms, bigrams)


def _similarity(candidate: _TfIdf, reference: _TfIdf) -> list[float]:
    """Per n: clipped cosine similarity times the Gaussian length penalty (pycocoevalcap's ``sim``)."""
    delta = candidate.length - reference.length
    penalty = math.exp(-(delta**2) / (2 * _SIGMA**2))
    similarities = []
    for n in range(_MAX_N):
        ref_vector = reference.vectors[n]
        dot = sum(
            min(weight, ref_vector.get(g, 0.0)) * ref_vector.get(g, 0.0) for g, weight in candidate.vectors[n].items()
        )
        if candidate.norms[n] != 0 and reference.norms[n] != 0:
            dot /= candidate.norms[n] * reference.norms[n]
        similarities.append(dot * penalty)
    return similarities


def cider_d_scores(candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> list[float]:
    """Per-image CIDEr-D of tokenised captions; the IDF comes from ``references`` (pycocoevalcap ``CiderScorer``).

    Args:
        candidates: The tokens of each image's candidate caption.
        references: The tokens of each reference caption, per image.

    Returns:
        One score per image, on pycocoevalcap's scale (x10).
    """
    reference_counts = [[ngram_counts(ref, _MAX_N) for ref in refs] for refs in references]
    document_frequency: Counter[tuple[str, ...]] = Counter()
    for counts in reference_counts:
        document_frequency.update(set().union(*counts))  # an n-gram counts once per image
    log_images = math.log(float(len(references)))
    scores = []
    for candidate, counts in zip(candidates, reference_counts):
        candidate_tfidf = _tfidf(ngram_counts(candidate, _MAX_N), document_frequency, log_images)
        per_n = [0.0] * _MAX_N
        for ref_counts in counts:
            for n, value in enumerate(
                _similarity(candidate_tfidf, _tfidf(ref_counts, document_frequency, log_images))
            ):
                per_n[n] += value
        scores.append(sum(per_n) / _MAX_N / len(counts) * 10.0)
    return scores


class Cider(TextReferencesInputs, evaluate.Metric):
    """CIDEr-D, equal to pycocoevalcap's ``Cider`` on the same tokens (see `_DESCRIPTION`)."""

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
            reference_urls=["https://arxiv.org/abs/1411.5726"],
        )

    def _compute(
        self,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
        tokenize: bool = True,
        dataset_name: str | None = None,
    ) -> dict[str, float]:
        self._check_inputs(predictions, references, dataset_name)
        candidates = [caption_tokens(prediction, tokenize) for prediction in predictions]
        reference_tokens = [[caption_tokens(ref, tokenize) for ref in refs] for refs in references]
        scores = cider_d_scores(candidates, reference_tokens)
        return {"cider": sum(scores) / len(scores)}
