"""What a dataset of the registry is: [`DatasetSpec`] (every fact about one dataset, as data), the converter
signature its rows go through, and [`ConvertOptions`] (the per-call settings a converter receives).

The 26 specs themselves are in `paper_datasets.py`, the converters in `converters.py`, and the mapping, lookup and
loading in `registry.py`; this module sits below all three so that none of them imports another in a circle.

A zero-shot prompt may use the fields ``{question}``, ``{options}``, ``{context}``, ``{answer}`` and ``{ocr}``; the
converters fill them from the row (see `converters.py`).
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .schema import TASK_FAMILIES

__all__ = ["METRICS", "PRINTED_LIST", "ConvertOptions", "Converter", "DatasetSpec", "prompt_fields"]

#: Metric names used in the registry (the evaluation code implements them).
METRICS: tuple[str, ...] = ("cider", "accuracy", "vqa_accuracy", "auc", "mrr", "ivqa_accuracy")

#: ``string_lists`` value for a list stored as its printed Python form (``"['ski', 'ski', 'skiing']"``).
PRINTED_LIST = "printed-list"

_SPLITS = ("train", "eval")
_PROMPT_FIELDS = frozenset({"question", "options", "context", "answer", "ocr"})

#: (row, row index, spec, options) -> the row's unified samples (several when a row holds several questions or rounds).
Converter = Callable[[Mapping[str, Any], int, "DatasetSpec", "ConvertOptions"], list[dict[str, Any]]]


@dataclass(frozen=True)
class ConvertOptions:
    """Per-call settings of a converter (what is not a fact about the dataset).

    Args:
        seed: Seed of the per-row template sampling (`templates.sample_template`).
        zero_shot: True: the instruction is the spec's zero-shot prompt; False: a template sampled per row.
        image_root: Directory or URL prefix for relative image paths; overrides the spec's ``image_root``.
        image_lookup: For datasets whose rows hold an image *id* (GQA): a mapping or callable id -> image
            (path, URL, bytes, PIL image or ``{"bytes", "path"}`` dict).
        answer_candidates: Candidates to store in every sample (e.g. the answer vocabulary for ranking MSVD-QA /
            MSRVTT-QA); overrides what the row or spec provides.
        extra_templates: Sample from our `templates.EXTRA_TEMPLATES` too, not only the family's default templates
            (the paper's, where it publishes them).
    """

    seed: int = 0
    zero_shot: bool = False
    image_root: str | os.PathLike | None = None
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None
    answer_candidates: tuple[str, ...] | None = None
    extra_templates: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the paper, as data.

    Args:
        name: Registry name (snake_case).
        task_family: Template set (one of `schema.TASK_FAMILIES`).
        paper_category: The category of arXiv 2305.06500 Figure 2 the dataset sits in.
        held_out: True for the 13 zero-shot evaluation sets.
        hub_id: Public Hub dataset id, or None (``notes`` says why).
        hub_config: Hub configuration (subset) name, if any.
        splits: Our split (``"train"`` / ``"eval"``) -> Hub split name.
        columns: Role a converter reads -> source column (a tuple gathers several columns into one list).
            Roles: ``image``, ``frames``, ``captions``, ``question``, ``questions``, ``answer``, ``answers``,
            ``question_answers``, ``options``, ``answer_index``, ``label``, ``context``, ``ocr_tokens``, ``dialog``,
            ``conversations``.
        metric: One of `METRICS`, or None (trained on only, no score in the paper).
        inference: ``"generate"`` or ``"rank"`` (arXiv 2305.06500 §2.5).
        zero_shot_prompt: The evaluation prompt (fields in braces, see the module docstring), or None.
        convert: Converter: (row, row index, spec, options) -> list of unified samples (several when a row holds
            several questions or dialog rounds).
        candidates: Fixed verbaliser / class names (binary and classification tasks); ``label`` indexes them.
        hub_data_files: Hub split -> file inside the Hub repo, for repos holding several files of one split.
        image_root: Prefix for relative image paths in the source (a COCO URL directory, an ``hf://`` path).
        image_table: ``(config, id column, image column)`` of a Hub configuration that holds the images, for
            datasets whose rows reference images by id (GQA).
        row_filter: Column -> allowed values; other rows are not part of the benchmark and are dropped quietly
            (a row lacking the column is a bad row, not a dropped one).
        string_lists: Column -> how that list-valued column is stored as one string on the Hub: `PRINTED_LIST`
            (A-OKVQA's ``direct_answers``) or a separator (``","`` for IconQA's ``choices``). A string that looks
            like a printed list is parsed as one either way; real lists pass through.
        results_caveat: Why scores on ``splits["eval"]`` are not comparable to the paper's (a different split,
            e.g. VizWiz val instead of the paper's test-dev); empty when they are. Results tables print it.
        notes: Provenance, deviations from the paper, what could not be verified.
    """

    name: str
    task_family: str
    paper_category: str
    held_out: bool
    hub_id: str | None
    hub_config: str | None
    splits: Mapping[str, str]
    columns: Mapping[str, str | tuple[str, ...]]
    metric: str | None
    inference: Literal["generate", "rank"]
    zero_shot_prompt: str | None
    convert: Converter
    candidates: tuple[str, ...] = ()
    hub_data_files: Mapping[str, str] = field(default_factory=dict)
    image_root: str | None = None
    image_table: tuple[str, str, str] | None = None
    row_filter: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    string_lists: Mapping[str, str] = field(default_factory=dict)
    results_caveat: str = ""
    notes: str = ""

    def __post_init__(self):
        where = f"DatasetSpec {self.name!r}"
        if self.task_family not in TASK_FAMILIES:
            raise ValueError(f"{where}: unknown task_family {self.task_family!r}; expected one of {TASK_FAMILIES}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"{where}: unknown metric {self.metric!r}; expected one of {METRICS} or None")
        if self.inference not in ("generate", "rank"):
            raise ValueError(f"{where}: inference must be 'generate' or 'rank', got {self.inference!r}")
        if not self.splits or set(self.splits) - set(_SPLITS):
            raise ValueError(f"{where}: splits must map some of {_SPLITS} to Hub splits, got {dict(self.splits)}")
        unknown_files = set(self.hub_data_files) - set(self.splits.values())
        if unknown_files:
            raise ValueError(f"{where}: hub_data_files names splits {sorted(unknown_files)} not in `splits`")
        empty = [column for column, encoding in self.string_lists.items() if not encoding]
        if empty:
            raise ValueError(f"{where}: string_lists needs a separator or PRINTED_LIST for {empty}")
        if self.zero_shot_prompt is not None:
            fields = prompt_fields(self.zero_shot_prompt)
            if fields - _PROMPT_FIELDS:
                raise ValueError(f"{where}: zero-shot prompt uses unknown fields {sorted(fields - _PROMPT_FIELDS)}")


def prompt_fields(prompt: str) -> set[str]:
    """The names in braces in a zero-shot prompt (``"Question: {question}"`` -> ``{"question"}``)."""
    return {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
