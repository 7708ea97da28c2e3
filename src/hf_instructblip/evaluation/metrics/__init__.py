"""The paper's metrics (arXiv 2305.06500 Table 1 and its appendix's dataset table) as `evaluate.Metric`s.

Shipped in the package: no Hub access, ever.

| name            | class                | output keys            | reference implementation it equals        |
|-----------------|----------------------|------------------------|-------------------------------------------|
| `vqa_accuracy`  | `VqaAccuracy`        | vqa_accuracy           | official VQA evaluator (vqaEval.py)       |
| `cider`         | `Cider`              | cider (x100 in paper)  | pycocoevalcap `Cider` (CIDEr-D)           |
| `bleu`          | `Bleu`               | bleu_1 .. bleu_4       | pycocoevalcap `Bleu(4)`                   |
| `rouge_l`       | `RougeL`             | rouge_l                | pycocoevalcap `Rouge`                     |
| `accuracy`      | `Accuracy`           | accuracy               | exact match (optionally VQA-normalised)   |
| `roc_auc`/`auc` | `RocAuc`             | roc_auc                | `sklearn.metrics.roc_auc_score`           |
| `mrr`           | `MeanReciprocalRank` | mrr                    | mean of 1 / rank of the correct candidate |
| `ivqa_accuracy` | `IvqaAccuracy`       | ivqa_accuracy          | Just Ask: min(#matches / 2, 1)            |

Every metric lives in its own module (``vqa_accuracy.py``, ``cider.py``, ...) that imports only evaluate, datasets,
numpy, the standard library and its siblings ``_text.py`` / ``_checks.py`` (relative imports, which `evaluate.load`
copies along with a local script). So there are two equivalent ways in, both offline:

>>> from hf_instructblip.evaluation.metrics import load_metric, metric_path
>>> load_metric("vqa_accuracy").compute(predictions=["two"], references=[["2"] * 10])
{'vqa_accuracy': 1.0}
>>> import evaluate
>>> evaluate.load(metric_path("vqa_accuracy")).compute(predictions=["two"], references=[["2"] * 10])
{'vqa_accuracy': 1.0}

Scores are fractions in [0, 1], except CIDEr on pycocoevalcap's scale (the paper reports all of them x100).
`compute` accepts ``dataset_name=...``: bad input (no predictions, lengths that differ, missing or empty references,
empty candidate lists) raises a ValueError naming the metric, that dataset and the sample index.

METEOR is not shipped: coco-caption's METEOR 1.5 runs a Java jar with paraphrase tables, and nltk's needs the
WordNet corpus, neither of which is available offline here; ``load_metric("meteor")`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import evaluate

from ._text import normalize_vqa_answer, tokenize_caption
from .accuracy import Accuracy
from .bleu import Bleu
from .cider import Cider
from .ivqa_accuracy import IvqaAccuracy
from .mrr import MeanReciprocalRank
from .roc_auc import RocAuc
from .rouge_l import RougeL
from .vqa_accuracy import VqaAccuracy

__all__ = [
    "ALIASES",
    "METRICS",
    "METRIC_PATHS",
    "SCORE_KEYS",
    "Accuracy",
    "Bleu",
    "Cider",
    "IvqaAccuracy",
    "MeanReciprocalRank",
    "RocAuc",
    "RougeL",
    "VqaAccuracy",
    "load_metric",
    "metric_path",
    "normalize_vqa_answer",
    "tokenize_caption",
]

#: Metric name -> class; the name is also the stem of the metric's module file.
METRICS: Mapping[str, type[evaluate.Metric]] = {
    "vqa_accuracy": VqaAccuracy,
    "cider": Cider,
    "bleu": Bleu,
    "rouge_l": RougeL,
    "accuracy": Accuracy,
    "roc_auc": RocAuc,
    "mrr": MeanReciprocalRank,
    "ivqa_accuracy": IvqaAccuracy,
}
#: Other names accepted by `metric_path` / `load_metric` (the dataset registry calls ROC-AUC "auc").
ALIASES: Mapping[str, str] = {"auc": "roc_auc"}
#: Metric name -> absolute path of its module file, for ``evaluate.load(path)``.
METRIC_PATHS: Mapping[str, str] = {name: str(Path(__file__).with_name(f"{name}.py")) for name in METRICS}
#: Metric name -> the key of the number a results table reports (BLEU returns four).
SCORE_KEYS: Mapping[str, str] = {name: name for name in METRICS} | {"bleu": "bleu_4"}

_NOT_SHIPPED = {
    "meteor": (
        "METEOR is not shipped with hf_instructblip: coco-caption's METEOR 1.5 runs a Java jar (with its paraphrase "
        "data) and nltk's METEOR needs the WordNet corpus downloaded; neither works offline here. Use CIDEr-D "
        "('cider'), the paper's captioning metric, or run pycocoevalcap's Meteor where Java is installed."
    ),
}


def _canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name in _NOT_SHIPPED:
        raise ImportError(_NOT_SHIPPED[name])
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {sorted([*METRICS, *ALIASES])}.")
    return name


def metric_path(name: str) -> str:
    """The local path of a metric's script, for ``evaluate.load(metric_path(name))`` without network access.

    Args:
        name: A name of `METRICS` or `ALIASES`.

    Returns:
        The absolute path of the metric's module file.

    Raises:
        ValueError: Unknown name.
        ImportError: A metric that is not shipped (METEOR), with the reason.
    """
    return METRIC_PATHS[_canonical(name)]


def load_metric(name: str, **kwargs: Any) -> evaluate.Metric:
    """Instantiate a metric by name (the same object ``evaluate.load(metric_path(name))`` builds).

    Args:
        name: A name of `METRICS` or `ALIASES`.
        **kwargs: `evaluate.Metric` options, e.g. ``keep_in_memory=True`` or ``experiment_id``.

    Returns:
        The metric; call ``.compute(predictions=..., references=..., dataset_name=...)``.

    Raises:
        ValueError: Unknown name.
        ImportError: A metric that is not shipped (METEOR), with the reason.
    """
    return METRICS[_canonical(name)](**kwargs)
