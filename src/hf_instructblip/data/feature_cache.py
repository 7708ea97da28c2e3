"""A disk cache of the frozen vision tower's features, so instruction tuning skips the tower's forward pass.

The vision tower is frozen during instruction tuning (arXiv 2305.06500 §2.6); only its output LayerNorm trains. Its
``get_vision_features`` output (the chosen hidden state, *before* that LayerNorm) is therefore a fixed function of
each image: compute it once per unique image, store it, and train with ``forward(image_embeds=...)``, which gives
the same result as ``forward(pixel_values=...)`` without running the tower.

Layout of a cache directory:

* ``feature_cache.json``: the format version, the fingerprint of what the features depend on (vision tower config
  and a hash of its weights, ``vision_feature_layer``, the image processor's settings, dtype), the feature shape
  and the list of committed shards;
* ``shard-00000.safetensors``, ...: one tensor ``(N, D)`` per image, named by the image's content hash, in the
  tower's dtype: a tower held in bf16 (``training.frozen_dtype``, `hold_frozen_in`) halves the cache on disk and in
  memory, and its cache is not an fp32 tower's (the dtype is in the fingerprint).

A shard is written under a temporary name, renamed, and only then listed in ``feature_cache.json`` (itself replaced
atomically), so a build killed at any point leaves a cache that loads with the shards committed so far; rerunning
the build computes only the missing images. Reads go through ``safetensors.safe_open`` (memory-mapped), so the
features are never all in RAM.

Example:

```python
>>> from hf_instructblip.data import InstructBlipDataCollator, VisionFeatureCache
>>> cache = VisionFeatureCache.build(model, processor, train_dataset, "features/")  # doctest: +SKIP
>>> collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)  # doctest: +SKIP
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from transformers.utils.logging import tqdm

from ..image_processing_instructblip import _array_to_image, _open
from ..modeling_vision import tower_dtype
from .schema import BadSampleError, BadSampleReport, OnBadSample

__all__ = ["MissingFeaturesError", "VisionFeatureCache"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "feature_cache.json"
_FORMAT = "hf_instructblip.vision_feature_cache"
_VERSION = 1
# Config entries that do not change what the vision tower computes (bookkeeping, output options, init scale).
_IGNORED_CONFIG_KEYS = frozenset(
    {
        "transformers_version",
        "architectures",
        "output_hidden_states",
        "output_attentions",
        "return_dict",
        "dtype",
        "torch_dtype",
        "id2label",
        "label2id",
        "problem_type",
        "initializer_range",
        "initializer_factor",
        "chunk_size_feed_forward",
    }
)
_IGNORED_PROCESSOR_KEYS = frozenset({"processor_class", "auto_map"})
_OPEN_SHARDS = 32  # safe_open handles kept open at once (least recently used are closed)


class MissingFeaturesError(KeyError):
    """An image has no features in the cache (a `KeyError` whose message reads as written)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ----- fingerprint: everything the cached features depend on ----------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Tuples -> lists, enums -> ints, anything else JSON cannot hold -> str: the form the manifest stores."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _vision_weights_sha256(model: Any) -> str:
    """SHA-256 of the vision tower's weights (names, dtypes, shapes, bytes), without its trained output LayerNorm."""
    norm_prefix = model.vision_norm_name.removeprefix("vision_model.") + "."
    digest = hashlib.sha256()
    for name, tensor in sorted(model.vision_model.state_dict().items()):
        if name.startswith(norm_prefix):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name};{tensor.dtype};{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _vision_dtype(model: Any) -> torch.dtype:
    """The tower's dtype, the features' too: a tower held in half precision (`hold_frozen_in`) stores half the bytes."""
    return tower_dtype(model.vision_model)


def model_fingerprint(model: Any) -> dict[str, Any]:
    """The parts of ``model`` that determine its vision features."""
    config = model.config.vision_config.to_dict()
    return {
        "vision_config": _jsonable({k: v for k, v in config.items() if k not in _IGNORED_CONFIG_KEYS}),
        "vision_weights_sha256": _vision_weights_sha256(model),
        "vision_feature_layer": model.config.vision_feature_layer,
        "dtype": str(_vision_dtype(model)).removeprefix("torch."),
    }


def processor_fingerprint(processor: Any) -> dict[str, Any]:
    """The image processor settings that determine the pixels (size, resample, rescale, mean/std, class)."""
    settings = processor.image_processor.to_dict()
    return {"image_processor": _jsonable({k: v for k, v in settings.items() if k not in _IGNORED_PROCESSOR_KEYS})}


def _differences(cached: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names of the fields that differ: top-level keys, or ``group.key`` inside the config/processor groups."""
    found = []
    for key in current:
        old, new = cached.get(key), current[key]
        if isinstance(old, dict) and isinstance(new, dict):
            found += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            found.append(key)
    return found


def _short(value: Any, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lookup(fingerprint: Mapping[str, Any], dotted: str) -> Any:
    value: Any = fingerprint
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# ----- images -> content keys ------------------------------------------------------------------------------------------
def _decode(image: Any) -> Image.Image:
    """The image as the processor would decode it, before any conversion (PIL mode kept)."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, Mapping):  # a `datasets.Image` value that was not decoded: {"bytes": ..., "path": ...}
        source = image.get("bytes") or image.get("path")
        if not source:
            raise ValueError("an image dict (datasets.Image) needs 'bytes' or 'path'; this one has neither")
        image = source
    if isinstance(image, (str, os.PathLike, bytes)):
        return _open(image, "image")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_image(image, "image")
    raise TypeError(
        f"expected a PIL image, a path, bytes, a datasets.Image dict, a NumPy array or a tensor; got "
        f"{type(image).__name__}"
    )


def _pixels_digest(image: Image.Image) -> str:
    digest = hashlib.sha256(f"{image.mode};{image.width}x{image.height};".encode())
    if image.mode in ("P", "PA"):  # palette images: the indices mean nothing without the palette
        digest.update(bytes(image.getpalette() or []))
        digest.update(repr(image.info.get("transparency")).encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


# ----- datasets -> rows of images --------------------------------------------------------------------------------------
def _named_parts(dataset: Any) -> list[tuple[str, Any]]:
    if isinstance(dataset, Mapping):
        return list(dataset.items())
    return [("dataset", dataset)]


def _image_rows(name: str, part: Any) -> Iterator[tuple[str, int, Any]]:
    """(dataset name, row index, the row's images) for every row of one dataset."""
    columns = getattr(part, "column_names", None)
    if columns is not None:
        if "images" not in columns:
            raise ValueError(f"dataset {name!r} has no `images` column (columns: {', '.join(columns)}).")
        part = part.select_columns([c for c in ("images", "dataset") if c in columns])  # decode the images only
    for index, row in enumerate(part):
        if not isinstance(row, Mapping) or "images" not in row:
            raise ValueError(f"dataset {name!r}, row {index}: not a unified sample with an `images` field.")
        label = row.get("dataset")
        yield (label if isinstance(label, str) and label else name), index, row["images"]


def _as_list(images: Any) -> list[Any]:
    if images is None:
        return []
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, Mapping, np.ndarray, torch.Tensor)):
        return [images]
    return list(images)


def _total_rows(parts: list[tuple[str, Any]]) -> int | None:
    try:
        return sum(len(part) for _, part in parts)
    except TypeError:  # an iterable dataset has no length
        return None


class _FeatureWriter:
    """Runs the vision tower over batches of new images and commits the features to the cache in shards."""

    def __init__(self, cache: VisionFeatureCache, model: Any, processor: Any, batch_size: int, shard_bytes: int):
        self.cache, self.model, self.processor = cache, model, processor
        self.batch_size, self.shard_bytes = batch_size, shard_bytes
        self.pending: dict[str, Image.Image] = {}  # decoded images waiting for the tower
        self.computed: dict[str, torch.Tensor] = {}  # features waiting for a shard
        self.computed_bytes = 0
        self.num_computed = 0

    def wants(self, key: str) -> bool:
        return key not in self.cache and key not in self.pending and key not in self.computed

    def add(self, key: str, image: Image.Image) -> None:
        self.pending[key] = image
        if len(self.pending) >= self.batch_size:
            self._compute()

    def finish(self) -> None:
        if self.pending:
            self._compute()
        if self.computed:
            self._commit()

    def _compute(self) -> None:
        keys = list(self.pending)
        pixel_values = self.processor.pixel_values([[self.pending[k]] for k in keys])  # (B, C, H, W)
        vision = self.model.vision_model
        pixel_values = pixel_values.to(device=next(vision.parameters()).device, dtype=_vision_dtype(self.model))
        with torch.no_grad():
            features = self.model.get_vision_features(pixel_values).cpu()  # (B, N, D)
        for key, feature in zip(keys, features):
            self.computed[key] = feature.clone()  # its own storage: safetensors refuses shared tensors
        self.computed_bytes += features.numel() * features.element_size()
        self.num_computed += len(keys)
        self.pending.clear()
        if self.computed_bytes >= self.shard_bytes:
            self._commit()

    def _commit(self) -> None:
        self.cache._commit_shard(self.computed)
        self.computed, self.computed_bytes = {}, 0


class VisionFeatureCache:
    """Frozen vision-tower features of every unique image of a dataset, on disk, keyed by image content.

    Create one with [`build`] (incremental: rerunning it on the same directory computes only new images) or open
    one with [`load`]. Give it to `InstructBlipDataCollator(..., feature_cache=cache)` and batches carry
    ``image_embeds`` instead of ``pixel_values``.

    The cache is valid for one vision tower (config and weights), ``vision_feature_layer``, dtype and image
    processing (size, resample, rescale, mean/std); [`check_compatible`] refuses any other, naming the field.
    The features are computed with the tower in eval mode; the stock path equals them when the tower has no
    dropout (true of the BLIP/CLIP/SigLIP/ViT towers InstructBLIP uses, whose dropout is 0).
    """

    def __init__(self, directory: str | os.PathLike, manifest: dict[str, Any]):
        """Use [`build`] or [`load`]; this wraps an already-read manifest."""
        self.directory = Path(directory)
        self._manifest = manifest
        self._locations: dict[str, int] = {}  # image key -> shard number
        self._handles: OrderedDict[int, Any] = OrderedDict()

    # ----- construction ---------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: Any,
        processor: Any,
        dataset: Any,
        directory: str | os.PathLike,
        *,
        batch_size: int = 32,
        on_bad_sample: OnBadSample = "raise",
        shard_bytes: int = 512 * 2**20,
    ) -> VisionFeatureCache:
        """Compute and store the vision features of every image of ``dataset`` that the cache does not hold yet.

        Run it on one process (e.g. under ``training_args.main_process_first()``): concurrent builds into one
        directory are not supported.

        Args:
            model: An `InstructBlipForConditionalGeneration` (its vision tower runs under ``torch.no_grad``, in
                eval mode, on the model's device and dtype).
            processor: The processor whose image processor makes the pixels, as in training.
            dataset: Unified samples (see `data/schema.py`): a ``datasets.Dataset``, a list of samples, or a dict
                name -> dataset. Only the ``images`` column is read.
            directory: The cache directory; created if missing, extended if it holds a compatible cache.
            batch_size: Images per vision-tower forward pass.
            on_bad_sample: ``"raise"`` a `BadSampleError` at the first undecodable image, or ``"skip"`` it (the
                skipped rows are logged as a warning; the collator later reports them as missing).
            shard_bytes: Features held in memory before they are written as one shard.

        Raises:
            ValueError: ``directory`` holds a cache for another model or processor (the message names the field),
                or bad arguments.
            BadSampleError: an image cannot be decoded and ``on_bad_sample="raise"``.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"VisionFeatureCache.build: batch_size must be an int >= 1, got {batch_size!r}.")
        if on_bad_sample not in ("raise", "skip"):
            raise ValueError(
                f"VisionFeatureCache.build: on_bad_sample must be 'raise' or 'skip', got {on_bad_sample!r}."
            )
        cache = cls._open_or_create(Path(directory), {**model_fingerprint(model), **processor_fingerprint(processor)})
        writer = _FeatureWriter(cache, model, processor, batch_size, shard_bytes)
        vision = model.vision_model
        was_training = vision.training
        vision.eval()  # the features must not depend on dropout
        try:
            report = cache._add_images(dataset, writer, on_bad_sample)
            writer.finish()
        finally:
            vision.train(was_training)
        if report.total:
            logger.warning("VisionFeatureCache.build %s", report.summary())
        logger.info("VisionFeatureCache.build: %d new image(s), %d in %s", writer.num_computed, len(cache), directory)
        return cache

    @classmethod
    def _open_or_create(cls, directory: Path, fingerprint: dict[str, Any]) -> VisionFeatureCache:
        if (directory / MANIFEST_NAME).exists():
            cache = cls.load(directory)
            cache._check(fingerprint, "the model and processor given to build()")
            return cache
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"format": _FORMAT, "version": _VERSION, "fingerprint": fingerprint, "feature_shape": None}
        cache = cls(directory, {**manifest, "shards": []})
        cache._save_manifest()
        return cache

    def _add_images(self, dataset: Any, writer: _FeatureWriter, on_bad_sample: OnBadSample) -> BadSampleReport:
        report = BadSampleReport()
        parts = _named_parts(dataset)
        total = _total_rows(parts)
        rows = (row for name, part in parts for row in _image_rows(name, part))
        progress = tqdm(
            rows, total=total, desc="vision features", unit="row", disable=total is not None and total < 1000
        )
        for name, index, images in progress:
            try:
                decoded = self._decode_row(images)
            except ValueError as error:
                bad = BadSampleError(name, index, str(error))
                if on_bad_sample == "raise":
                    raise bad from None
                report.add(bad)
                continue
            for key, image in decoded:
                if writer.wants(key):
                    writer.add(key, image)
        return report

    @classmethod
    def _decode_row(cls, images: Any) -> list[tuple[str, Image.Image]]:
        frames = _as_list(images)
        if not frames:
            raise ValueError("no image")
        decoded = []
        for t, image in enumerate(frames):
            try:
                pil = _decode(image)
            except (ValueError, TypeError, OSError) as error:
                raise ValueError(f"image {t}: {error}") from None
            decoded.append((_pixels_digest(pil), pil))
        return decoded

    @classmethod
    def load(cls, directory: str | os.PathLike, model: Any = None, processor: Any = None) -> VisionFeatureCache:
        """Open the cache in ``directory``; with ``model`` and/or ``processor``, refuse it unless it matches them.

        Raises:
            FileNotFoundError: no cache in ``directory``.
            ValueError: a damaged cache (the message names the file), or one that does not match ``model`` /
                ``processor`` (the message names the field).
        """
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"No vision feature cache in {str(directory)!r} (no {MANIFEST_NAME}). Build one with "
                "VisionFeatureCache.build(model, processor, dataset, directory)."
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); rebuild the cache.") from error
        if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a vision feature cache manifest (no 'format': {_FORMAT!r}).")
        if manifest.get("version") != _VERSION:
            raise ValueError(
                f"{path} has cache format version {manifest.get('version')!r}; this hf_instructblip reads version "
                f"{_VERSION}. Rebuild the cache."
            )
        for key in ("fingerprint", "shards"):
            if key not in manifest:
                raise ValueError(f"{path} lacks the key {key!r}; rebuild the cache.")
        cache = cls(directory, manifest)
        cache._index_shards()
        if model is not None or processor is not None:
            cache.check_compatible(model, processor)
        return cache

    def _index_shards(self) -> None:
        expected = self._manifest.get("feature_shape")
        for number, name in enumerate(self._manifest["shards"]):
            path = self.directory / name
            if not path.is_file():
                raise ValueError(f"{path} is listed in {MANIFEST_NAME} but missing: the cache is damaged; rebuild it.")
            try:
                with safe_open(str(path), framework="pt") as shard:
                    metadata = shard.metadata() or {}
                    keys = list(shard.keys())
            except SafetensorError as error:
                raise ValueError(f"{path} is not a readable safetensors file ({error}); rebuild the cache.") from error
            if json.loads(metadata.get("feature_shape", "null")) != expected:
                raise ValueError(
                    f"{path} holds features of shape {metadata.get('feature_shape')} but {MANIFEST_NAME} says "
                    f"{expected}: the cache is damaged; rebuild it."
                )
            for key in keys:
                self._locations[key] = number

    # ----- compatibility --------------------------------------------------------------------------------------------
    def check_compatible(self, model: Any, processor: Any) -> None:
        """Raise `ValueError` naming every field in which the cache differs from ``model`` / ``processor``.

        Either may be ``None`` to check only the other (the collator checks the processor on its own).
        """
        current: dict[str, Any] = {}
        if model is not None:
            current.update(model_fingerprint(model))
        if processor is not None:
            current.update(processor_fingerprint(processor))
        what = " and ".join(n for n, v in (("model", model), ("processor", processor)) if v is not None)
        self._check(current, f"the {what}")

    def _check(self, current: Mapping[str, Any], what: str) -> None:
        cached = self._manifest["fingerprint"]
        fields = _differences(cached, current)
        if not fields:
            return
        details = "; ".join(
            f"{f} (cache: {_short(_lookup(cached, f))}, now: {_short(_lookup(current, f))})" for f in fields
        )
        raise ValueError(
            f"The vision feature cache in {str(self.directory)!r} does not match {what}: {details}. Its features "
            "would differ from the vision tower's; build a cache for this model and processor in another directory "
            "with VisionFeatureCache.build(...)."
        )

    # ----- reading --------------------------------------------------------------------------------------------------
    @staticmethod
    def image_key(image: Any) -> str:
        """Content key of an image: SHA-256 of its decoded pixels, PIL mode and size (plus palette, if any).

        The same picture given as a path, encoded bytes, a ``datasets.Image`` dict, a PIL image or an array gets the
        same key. The pixels are hashed as decoded, before RGB conversion, because conversion can merge different
        images (e.g. alpha composited away) that the processor's resizing would still tell apart.
        """
        return _pixels_digest(_decode(image))

    def features(self, images: Sequence[Any]) -> torch.Tensor:
        """``(T, N, D)`` features of one sample's ``T`` images/frames, in order.

        Raises:
            MissingFeaturesError: an image is not in the cache.
        """
        if isinstance(images, (str, bytes, Image.Image, Mapping)) or not isinstance(images, Sequence):
            raise TypeError(f"features() takes the list of one sample's images, got {type(images).__name__}.")
        if not images:
            raise ValueError("features() got an empty list of images.")
        tensors = []
        for t, image in enumerate(images):
            key = self.image_key(image)
            number = self._locations.get(key)
            if number is None:
                raise MissingFeaturesError(
                    f"image {t} (key {key[:16]}...) is not in the vision feature cache {str(self.directory)!r}. "
                    "Build the cache over this data first: VisionFeatureCache.build(model, processor, dataset, "
                    "directory)."
                )
            tensors.append(self._shard(number).get_tensor(key))
        return torch.stack(tensors)  # (T, N, D)

    def _shard(self, number: int) -> Any:
        handle = self._handles.get(number)
        if handle is None:
            handle = safe_open(str(self.directory / self._manifest["shards"][number]), framework="pt")
            self._handles[number] = handle
            if len(self._handles) > _OPEN_SHARDS:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(number)
        return handle

    @property
    def feature_shape(self) -> tuple[int, ...] | None:
        """``(N, D)`` of every stored feature (``None`` while the cache is empty)."""
        shape = self._manifest.get("feature_shape")
        return tuple(shape) if shape is not None else None

    def __contains__(self, key: object) -> bool:
        """Whether the cache holds the image with this `image_key`."""
        return key in self._locations

    def __len__(self) -> int:
        return len(self._locations)

    def __repr__(self) -> str:
        dtype = self._manifest["fingerprint"].get("dtype")
        return f"VisionFeatureCache({str(self.directory)!r}, {len(self)} images, shape={self.feature_shape}, {dtype})"

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers pickle the collator and its cache; file handles do not pickle, each worker reopens.
        return {**self.__dict__, "_handles": OrderedDict()}

    # ----- writing --------------------------------------------------------------------------------------------------
    def _commit_shard(self, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` as a new shard, then list it in the manifest (a crash in between leaves it unlisted)."""
        shape = list(next(iter(tensors.values())).shape)
        if self._manifest["feature_shape"] not in (None, shape):
            raise ValueError(
                f"New features have shape {shape} but the cache {str(self.directory)!r} holds "
                f"{self._manifest['feature_shape']}."
            )
        number = len(self._manifest["shards"])
        name = f"shard-{number:05d}.safetensors"
        temporary = self.directory / f"{name}.tmp"
        save_file(tensors, str(temporary), metadata={"format": "pt", "feature_shape": json.dumps(shape)})
        _fsync(temporary)
        os.replace(temporary, self.directory / name)  # an unlisted leftover of a killed build is replaced
        self._manifest = {**self._manifest, "feature_shape": shape, "shards": [*self._manifest["shards"], name]}
        self._save_manifest()
        for key in tensors:
            self._locations[key] = number

    def _save_manifest(self) -> None:
        path = self.directory / MANIFEST_NAME
        temporary = path.with_name(f"{MANIFEST_NAME}.tmp")
        temporary.write_text(json.dumps(self._manifest, indent=2, sort_keys=True), encoding="utf-8")
        _fsync(temporary)
        os.replace(temporary, path)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
