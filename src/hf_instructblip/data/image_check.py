"""Every image of a user's dataset opened once, where the data enters, instead of when its batch is drawn.

A missing or undecodable image file otherwise surfaces mid-training, at whatever step its batch comes up, as a
traceback from PIL that names neither the dataset nor the row. `find_bad_images` reads each row's images (files by
path, images stored as bytes) before conversion: with ``on_bad_sample="raise"`` the first bad one is a
`BadSampleError` naming the dataset, the row of the user's file and the file; with ``"skip"`` the rows are counted
in the `BadSampleReport` and `drop_samples_with_images` removes their samples after conversion.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import datasets
from PIL import Image
from tqdm.auto import tqdm

from .schema import BadSampleError, BadSampleReport, OnBadSample

__all__ = ["drop_samples_with_images", "find_bad_images", "image_key", "image_problem"]

#: Show a progress bar from this many rows on (thousands of images take seconds to minutes).
PROGRESS_FROM_ROWS = 1000


def _parts(image: Any) -> tuple[bytes | None, str | None]:
    if isinstance(image, dict):
        return image.get("bytes"), image.get("path")
    if isinstance(image, bytes):
        return image, None
    return None, os.fspath(image) if isinstance(image, (str, os.PathLike)) else None


def image_key(image: Any) -> str | None:
    """What identifies a stored image across conversion: its path, else a digest of its bytes (None: in memory)."""
    data, path = _parts(image)
    if path:
        return path
    return hashlib.sha1(data).hexdigest() if data is not None else None


def image_problem(image: Any) -> str | None:
    """What is wrong with one image (a path, bytes or a ``{"bytes", "path"}`` dict), or None when it decodes."""
    if isinstance(image, Image.Image):
        return None  # decoded already
    data, path = _parts(image)
    if data is None and not path:
        return f"no image (got {type(image).__name__})"
    if data is None and "://" in str(path):
        return None  # a URL or remote file system: read when used
    if data is None and os.path.isdir(str(path)):
        return f"image path '{path}' is a directory, not an image file"
    if data is None and not os.path.isfile(str(path)):
        return f"image file '{path}' does not exist"
    try:
        with Image.open(io.BytesIO(data) if data is not None else str(path)) as opened:
            opened.draft("RGB", (64, 64))  # JPEG: decode at a reduced size; a truncated file still fails
            opened.load()
    except Exception as error:  # PIL raises many types for undecodable data
        where = f"image file '{path}'" if data is None else "the image bytes"
        return f"{where} cannot be decoded ({type(error).__name__}: {error})"
    return None


def find_bad_images(
    rows: Iterable[tuple[int, Sequence[Any]]],
    name: str,
    total: int,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
) -> dict[int, set[str]]:
    """Open every image of every row; the bad rows, each with the keys (`image_key`) of its bad images.

    Args:
        rows: ``(row index, that row's images)`` for each row of the user's data.
        name: The dataset's name, for errors and the report.
        total: How many rows there are (for the progress bar, shown from `PROGRESS_FROM_ROWS` rows).
        on_bad_sample: ``"raise"``: a `BadSampleError` naming the dataset, the row and the file at the first bad
            image. ``"skip"``: each bad row is counted in ``report``.
        report: Where skipped rows are counted.
    """
    bad: dict[int, set[str]] = {}
    with tqdm(rows, total=total, desc=f"Checking the images of {name}", disable=total < PROGRESS_FROM_ROWS) as bar:
        for index, images in bar:
            problems = [(image, problem) for image in images if (problem := image_problem(image))]
            if not problems:
                continue
            error = BadSampleError(name, index, problems[0][1])
            if on_bad_sample == "raise":
                raise error
            if report is not None:
                report.add(error)
            bad[index] = {key for image, _ in problems if (key := image_key(image)) is not None}
    return bad


def drop_samples_with_images(dataset: datasets.Dataset, keys: set[str]) -> datasets.Dataset:
    """``dataset`` (unified schema) without the samples holding an image whose `image_key` is in ``keys``."""
    if not keys:
        return dataset
    images = dataset.select_columns(["images"]).with_format("arrow")["images"].to_pylist()  # {"bytes", "path"}
    keep = [i for i, sample in enumerate(images) if not any(image_key(image) in keys for image in sample)]
    return dataset.select(keep)
