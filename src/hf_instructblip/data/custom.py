"""Your own data -> unified instruction samples, in one call.

```python
from hf_instructblip.data.custom import to_instruction_dataset

train = to_instruction_dataset(
    "my_data/train.jsonl",                 # or a datasets.Dataset / IterableDataset, a .csv, .json or .parquet file
    task_family="short_vqa",               # picks the paper's templates (see templates.py) and the converter
    columns={"image": "image_path", "question": "q", "answer": "a"},  # unified role -> your column
    name="my_vqa",
)
```

Image paths in a file are resolved relative to the file's folder (or ``image_root``). Every image of a map-style
dataset is opened here, before any training (`image_check`): a missing or undecodable file is an error naming the
dataset, the row and the file, or, with ``on_bad_sample="skip"``, its row is dropped and counted. Roles per family:
captioning ``image`` + ``captions`` (a caption or a list); ``short_vqa`` / ``knowledge_vqa`` / ``ocr_vqa`` ``image`` +
``question`` + ``answer`` or ``answers`` (+ ``ocr_tokens``); ``video_qa`` the same with ``frames`` (a list of frame
images/paths) instead of ``image``; ``question_generation`` like VQA; ``multiple_choice`` ``image`` + ``question`` +
``options`` + ``answer`` (the option's text) or ``answer_index``; ``binary`` / ``classification`` ``image`` + ``label``
(index or name into ``candidates``) (+ ``question``); ``visual_dialog`` ``image`` + ``dialog``; ``free_form`` ``image``
+ ``conversations`` (LLaVA format).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from .converters import (
    _images,
    convert_captioning,
    convert_classification,
    convert_conversation,
    convert_multiple_choice,
    convert_question_generation,
    convert_visual_dialog,
    convert_vqa,
)
from .image_check import drop_samples_with_images, find_bad_images
from .registry import _builder_for, _undecoded, convert_dataset
from .schema import TASK_FAMILIES, BadSampleError, BadSampleReport, OnBadSample
from .spec import Converter, ConvertOptions, DatasetSpec

__all__ = ["FAMILY_CONVERTERS", "to_instruction_dataset"]

#: The converter each task family's rows go through (shared with the registry's datasets).
FAMILY_CONVERTERS: dict[str, Converter] = {
    "captioning": convert_captioning,
    "short_vqa": convert_vqa,
    "knowledge_vqa": convert_vqa,
    "ocr_vqa": convert_vqa,
    "video_qa": convert_vqa,
    "question_generation": convert_question_generation,
    "multiple_choice": convert_multiple_choice,
    "binary": convert_classification,
    "classification": convert_classification,
    "visual_dialog": convert_visual_dialog,
    "free_form": convert_conversation,
}
_RANKED = frozenset({"multiple_choice", "binary", "classification", "visual_dialog"})


def _load_file(path: Path) -> datasets.Dataset:
    if path.is_dir():
        raise ValueError(f"to_instruction_dataset: {path} is a directory; give a .jsonl/.json/.csv/.parquet file.")
    if not path.is_file():
        raise FileNotFoundError(f"to_instruction_dataset: {path} does not exist.")
    if path.suffix.lower() != ".parquet" and not path.read_text(errors="replace").strip():
        raise ValueError(f"to_instruction_dataset: {path} is empty (no rows).")
    builder = _builder_for(str(path))
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except (datasets.exceptions.DatasetGenerationError, ValueError, StopIteration) as error:
        reason = " ".join(str(error.__cause__ or error).split()) or type(error).__name__
        raise ValueError(f"to_instruction_dataset: cannot read {path} as {builder}: {reason}") from error


@dataclass
class _Recorder(BadSampleReport):
    """Keeps the conversion's skipped rows, to count them in the caller's report unless already counted."""

    errors: list[BadSampleError] = field(default_factory=list)

    def add(self, error: BadSampleError) -> None:
        self.errors.append(error)


def _checked_images(
    source: datasets.Dataset, spec: DatasetSpec, options: ConvertOptions, on_bad_sample: OnBadSample, report
) -> dict[int, set[str]]:
    """Open every row's images (resolved as the conversion resolves them); the bad rows and their images' keys."""

    def rows():
        for index, row in enumerate(_undecoded(source)):
            try:
                yield index, _images(row, spec, options)
            except ValueError:
                continue  # no image column / value: the conversion names this row

    return find_bad_images(rows(), spec.name, len(source), on_bad_sample, report)


def to_instruction_dataset(
    source: datasets.Dataset | datasets.IterableDataset | str | os.PathLike,
    *,
    task_family: str,
    columns: Mapping[str, str | tuple[str, ...]],
    name: str = "custom",
    held_out: bool = False,
    candidates: Sequence[str] | None = None,
    zero_shot_prompt: str | None = None,
    seed: int = 0,
    image_root: str | os.PathLike | None = None,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    r"""Map any dataset with named columns into the unified schema (`schema.INSTRUCTION_FEATURES`).

    Args:
        source: A ``datasets.Dataset`` / ``IterableDataset``, or a .jsonl/.json/.csv/.parquet file whose image
            column holds paths.
        task_family: One of `schema.TASK_FAMILIES`.
        columns: Unified role -> your column name (see the module docstring for the roles of each family).
        name: Dataset name stored in every sample (mixtures, reports and errors use it).
        held_out: Mark the samples as held-out (zero-shot evaluation) data.
        candidates: Class names / verbaliser for ``binary`` (default ``("no", "yes")``) and ``classification``.
        zero_shot_prompt: Use this fixed prompt (fields in braces: ``{question}``, ``{options}``, ...) instead of
            sampling the paper's templates (evaluation data).
        seed: Seed of the per-row template sampling.
        image_root: Folder for relative image paths (default: the file's folder).
        on_bad_sample: ``"raise"`` (an error naming the dataset and row) or ``"skip"`` (counted in ``report``).
        report: Where skipped rows are counted.
    """
    if task_family not in TASK_FAMILIES:
        raise ValueError(
            f"to_instruction_dataset: unknown task_family {task_family!r}; expected one of {TASK_FAMILIES}."
        )
    if task_family == "binary" and candidates is None:
        candidates = ("no", "yes")
    if task_family == "classification" and not candidates:
        raise ValueError("to_instruction_dataset: task_family='classification' needs `candidates` (the class names).")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        source = _load_file(path)
        image_root = image_root if image_root is not None else path.parent
    if isinstance(source, datasets.Dataset) and len(source) == 0:
        raise ValueError(f"to_instruction_dataset: dataset {name!r} has no rows.")
    spec = DatasetSpec(
        name=name,
        task_family=task_family,
        paper_category="custom",
        held_out=held_out,
        hub_id=None,
        hub_config=None,
        splits={"train": "train", "eval": "eval"},
        columns=dict(columns),
        metric=None,
        inference="rank" if task_family in _RANKED else "generate",
        zero_shot_prompt=zero_shot_prompt,
        convert=FAMILY_CONVERTERS[task_family],
        candidates=tuple(candidates or ()),
    )
    bad_rows: dict[int, set[str]] = {}
    if isinstance(source, datasets.Dataset):  # a stream is not read ahead: its images are checked when drawn
        bad_rows = _checked_images(source, spec, ConvertOptions(image_root=image_root), on_bad_sample, report)
    recorder = _Recorder()
    converted = convert_dataset(
        source,
        spec,
        seed=seed,
        zero_shot=zero_shot_prompt is not None,
        on_bad_sample=on_bad_sample,
        report=recorder,
        image_root=image_root,
    )
    for error in recorder.errors:
        if report is not None and error.index not in bad_rows:  # a row with a bad image is counted once
            report.add(error)
    if not bad_rows:
        return converted
    return drop_samples_with_images(converted, set().union(*bad_rows.values()))  # type: ignore[arg-type]
