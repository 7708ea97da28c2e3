"""The unified instruction-sample schema every dataset is converted into, and the bad-sample policy.

One row = one instruction-tuning (or evaluation) example:

| column         | type            | meaning                                                                       |
|----------------|-----------------|-------------------------------------------------------------------------------|
| `images`       | list of images  | one image, or the frames of a video / several images (in order)               |
| `instruction`  | string          | the prompt the LLM sees (template already applied)                            |
| `qformer_text` | string          | what the Q-Former reads; defaults to `instruction` (as LAVIS: the same text)  |
| `target`       | string          | the answer the model is trained to produce (may be "" for evaluation rows)    |
| `candidates`   | list of strings | answer candidates, for vocabulary ranking (multiple choice, classification)   |
| `ocr_tokens`   | list of strings | OCR tokens of the image, when the dataset has them                            |
| `answers`      | list of strings | all reference answers (VQA accuracy, CIDEr); defaults to `[target]`           |
| `task_family`  | string          | one of `TASK_FAMILIES`                                                        |
| `dataset`      | string          | the dataset's registry name (or the user's name for their data)               |
| `held_out`     | bool            | held-out (zero-shot evaluation only) or held-in (trained on)                  |
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets
from PIL import Image

__all__ = [
    "INSTRUCTION_FEATURES",
    "TASK_FAMILIES",
    "BadSampleError",
    "BadSampleReport",
    "OnBadSample",
    "make_sample",
    "validate_sample",
]

#: Task families of the paper (arXiv 2305.06500 §2.1, Figure 2), one template set each (see `templates.py`).
TASK_FAMILIES: tuple[str, ...] = (
    "captioning",
    "short_vqa",
    "knowledge_vqa",
    "ocr_vqa",
    "question_generation",
    "multiple_choice",
    "binary",  # yes/no and true/false
    "classification",
    "video_qa",
    "visual_dialog",
    "free_form",  # LLaVA-Instruct: detailed description, complex reasoning, conversation
)

INSTRUCTION_FEATURES = datasets.Features(
    {
        "images": datasets.Sequence(datasets.Image()),
        "instruction": datasets.Value("string"),
        "qformer_text": datasets.Value("string"),
        "target": datasets.Value("string"),
        "candidates": datasets.Sequence(datasets.Value("string")),
        "ocr_tokens": datasets.Sequence(datasets.Value("string")),
        "answers": datasets.Sequence(datasets.Value("string")),
        "task_family": datasets.Value("string"),
        "dataset": datasets.Value("string"),
        "held_out": datasets.Value("bool"),
    }
)

OnBadSample = Literal["raise", "skip"]


class BadSampleError(ValueError):
    """A row that cannot become an instruction sample; the message names the dataset and the row."""

    def __init__(self, dataset: str, index: int, reason: str):
        self.dataset, self.index, self.reason = dataset, index, reason
        super().__init__(f"dataset {dataset!r}, row {index}: {reason}")


@dataclass
class BadSampleReport:
    """Counts of skipped rows per dataset and reason (`on_bad_sample="skip"`); the trainer logs it."""

    skipped: Counter = field(default_factory=Counter)  # (dataset, reason) -> count
    examples: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # first few row indices per key

    def add(self, error: BadSampleError) -> None:
        key = (error.dataset, error.reason)
        self.skipped[key] += 1
        rows = self.examples.setdefault(key, [])
        if len(rows) < 5:
            rows.append(error.index)

    @property
    def total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        if not self.total:
            return "no bad samples"
        lines = [f"skipped {self.total} bad sample(s):"]
        for (dataset, reason), count in sorted(self.skipped.items()):
            rows = ", ".join(map(str, self.examples[(dataset, reason)]))
            lines.append(f"  {dataset}: {count} x {reason} (rows {rows}{', ...' if count > 5 else ''})")
        return "\n".join(lines)


def _check_image(image: Any, where: str) -> Any:
    """Images stay as they are (PIL, path, bytes, or a datasets Image dict) but must decode."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):
        if image.get("bytes") is not None:
            try:
                Image.open(io.BytesIO(image["bytes"])).verify()
            except Exception as error:  # PIL raises many types for undecodable data
                raise ValueError(f"{where} cannot be decoded ({type(error).__name__}: {error})") from error
            return image
        if image.get("path"):
            return image["path"]
        raise ValueError(f"{where} has neither bytes nor a path")
    if isinstance(image, (str, bytes)):
        if isinstance(image, bytes):
            try:
                Image.open(io.BytesIO(image)).verify()
            except Exception as error:
                raise ValueError(f"{where} cannot be decoded ({type(error).__name__}: {error})") from error
        return image
    raise ValueError(f"{where} is a {type(image).__name__}, not an image, a path or bytes")


def _strings(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(f"`{name}` must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"`{name}`[{i}] must be a string, got {type(item).__name__}")
    return list(value)


def validate_sample(
    sample: Mapping[str, Any], dataset: str, index: int, require_target: bool = True
) -> dict[str, Any]:
    """Check one unified sample; return it with defaults filled in, or raise `BadSampleError`.

    Checks: images present and decodable, text fields are strings, target not empty (when ``require_target``),
    task family known. Defaults: ``qformer_text`` = ``instruction``, ``answers`` = ``[target]``.
    """
    try:
        for key in ("instruction", "target"):
            if key not in sample or sample[key] is None:
                raise ValueError(f"missing field `{key}`")
            if not isinstance(sample[key], str):
                raise ValueError(f"`{key}` must be a string, got {type(sample[key]).__name__}")
        if require_target and not sample["target"].strip():
            raise ValueError("empty target")
        images = sample.get("images")
        if images is None or (isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and not images):
            raise ValueError("missing field `images` (no image)")
        if isinstance(images, (str, bytes, Image.Image, Mapping)):
            images = [images]
        images = [_check_image(image, f"image {i}") for i, image in enumerate(images)]
        qformer_text = sample.get("qformer_text")
        if qformer_text is not None and not isinstance(qformer_text, str):
            raise ValueError(f"`qformer_text` must be a string, got {type(qformer_text).__name__}")
        family = sample.get("task_family")
        if family not in TASK_FAMILIES:
            raise ValueError(f"unknown task_family {family!r} (expected one of {', '.join(TASK_FAMILIES)})")
        answers = _strings(sample.get("answers"), "answers")
        return {
            "images": images,
            "instruction": sample["instruction"],
            "qformer_text": qformer_text if qformer_text else sample["instruction"],
            "target": sample["target"],
            "candidates": _strings(sample.get("candidates"), "candidates"),
            "ocr_tokens": _strings(sample.get("ocr_tokens"), "ocr_tokens"),
            "answers": answers or ([sample["target"]] if sample["target"] else []),
            "task_family": family,
            "dataset": sample.get("dataset") or dataset,
            "held_out": bool(sample.get("held_out", False)),
        }
    except ValueError as error:
        raise BadSampleError(dataset, index, str(error)) from None


def make_sample(
    *,
    images: Any,
    instruction: str,
    target: str,
    task_family: str,
    dataset: str,
    held_out: bool = False,
    qformer_text: str | None = None,
    candidates: Sequence[str] = (),
    ocr_tokens: Sequence[str] = (),
    answers: Sequence[str] = (),
    index: int = 0,
    require_target: bool = True,
) -> dict[str, Any]:
    """Build and validate one unified sample (raises `BadSampleError` naming ``dataset`` and ``index``)."""
    return validate_sample(
        {
            "images": images,
            "instruction": instruction,
            "qformer_text": qformer_text,
            "target": target,
            "candidates": list(candidates),
            "ocr_tokens": list(ocr_tokens),
            "answers": list(answers),
            "task_family": task_family,
            "dataset": dataset,
            "held_out": held_out,
        },
        dataset,
        index,
        require_target=require_target,
    )
