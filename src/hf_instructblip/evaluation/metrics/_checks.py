"""Input checks shared by the metrics: every error names the metric, the dataset (when given) and the sample.

Standard library only, for the same reason as ``_text.py``: `evaluate.load` copies this file next to a metric
script. `CheckedInputs` is a plain mixin, not an `evaluate.Metric` subclass, so `evaluate.load` (which takes the
first `EvaluationModule` subclass it finds in a metric module) never mistakes it for the metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def where(metric: str, dataset_name: str | None, index: int | None = None) -> str:
    """The prefix of an error message, e.g. ``"vqa_accuracy (dataset 'textvqa'), sample 3"``."""
    prefix = metric if dataset_name is None else f"{metric} (dataset {dataset_name!r})"
    return prefix if index is None else f"{prefix}, sample {index}"


def check_pairs(metric: str, predictions: Any, references: Any, dataset_name: str | None) -> None:
    """Check that there is at least one prediction and exactly one reference entry per prediction.

    Raises:
        ValueError: predictions or references are missing or empty, or their lengths differ (the message names the
            first sample left without a partner).
    """
    if predictions is None or references is None:
        missing = "predictions" if predictions is None else "references"
        raise ValueError(f"{where(metric, dataset_name)}: {missing} is missing; pass both predictions and references.")
    if len(predictions) == 0:
        raise ValueError(f"{where(metric, dataset_name)}: predictions is empty; there is nothing to score.")
    if len(predictions) != len(references):
        first_unpaired = min(len(predictions), len(references))
        has, lacks = (
            ("a prediction", "reference") if len(predictions) > len(references) else ("a reference", "prediction")
        )
        raise ValueError(
            f"{where(metric, dataset_name, first_unpaired)}: got {len(predictions)} predictions but "
            f"{len(references)} references; this sample has {has} and no {lacks}. Pass them in the same order, one "
            "reference entry per prediction."
        )


def check_strings(metric: str, values: Sequence[Any], role: str, dataset_name: str | None) -> None:
    """Check that every value is a string (an empty string is a valid, if poor, prediction)."""
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(
                f"{where(metric, dataset_name, index)}: the {role} must be a string, got {type(value).__name__} "
                f"({value!r})."
            )


def check_reference_lists(
    metric: str, references: Sequence[Any], dataset_name: str | None, min_count: int = 1
) -> None:
    """Check that every sample has a list of at least ``min_count`` string references.

    Raises:
        ValueError: a sample's references are missing, not a list, too few, or hold a non-string.
    """
    for index, refs in enumerate(references):
        at = where(metric, dataset_name, index)
        if refs is None:
            raise ValueError(f"{at}: the references are missing (None); every sample needs its reference texts.")
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise ValueError(
                f"{at}: references must be a list of strings per sample, got {type(refs).__name__} ({refs!r})."
            )
        if len(refs) < min_count:
            raise ValueError(f"{at}: got {len(refs)} references, this metric needs at least {min_count} per sample.")
        for ref in refs:
            if not isinstance(ref, str):
                raise ValueError(f"{at}: every reference must be a string, got {type(ref).__name__} ({ref!r}).")


def check_finite(metric: str, value: Any, role: str, at: str) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number (``at`` is a `where` prefix)."""
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise ValueError(f"{at}: the {role} must be a number, got {type(value).__name__} ({value!r}).")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{at}: the {role} must be finite, got {number}.")
    return number


class CheckedInputs:
    """Mixin for `evaluate.Metric`: validate ``compute``'s inputs before evaluate stores them.

    evaluate's own checks run first otherwise and say neither which metric, nor which dataset, nor which sample.
    A metric using this mixin implements ``_check_inputs(predictions, references, dataset_name)`` and also calls it
    at the top of ``_compute`` (inputs given through ``add``/``add_batch`` arrive there).
    """

    def compute(
        self,
        *,
        predictions: Any = None,
        references: Any = None,
        dataset_name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        """Compute the metric; ``dataset_name`` (optional) is quoted in error messages.

        Args:
            predictions: Predictions, one per sample (see the metric's inputs description below).
            references: References, one entry per sample.
            dataset_name: Name of the evaluated dataset, for error messages.
            **kwargs: The metric's options (see below).
        """
        if predictions is not None or references is not None:
            self._check_inputs(predictions, references, dataset_name)
        # A mixin for evaluate.Metric: the next class in the MRO provides `compute`.
        return super().compute(  # type: ignore[misc]
            predictions=predictions, references=references, dataset_name=dataset_name, **kwargs
        )

    def _check_inputs(self, predictions: Any, references: Any, dataset_name: str | None) -> None:
        raise NotImplementedError


class TextReferencesInputs(CheckedInputs):
    """Mixin for metrics taking one string prediction and a list of reference strings per sample.

    The metric class sets ``_metric_label`` (its name in error messages) and, if it needs more than one reference
    per sample, ``_min_references``.
    """

    _metric_label: str = ""
    _min_references: int = 1

    def _check_inputs(self, predictions: Any, references: Any, dataset_name: str | None) -> None:
        check_pairs(self._metric_label, predictions, references, dataset_name)
        check_strings(self._metric_label, predictions, "prediction", dataset_name)
        check_reference_lists(self._metric_label, references, dataset_name, min_count=self._min_references)
