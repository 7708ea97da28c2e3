"""Images in any form -> RGB -> InstructBLIP pixel values.

224 px (arXiv 2305.06500 §2.6), bicubic resize and CLIP mean/std (LAVIS `blip_processors.py`).

[`to_rgb_image`] turns whatever a user passes (a PIL image, a path, bytes, a NumPy array or a torch tensor in HWC
or CHW layout, any PIL mode) into an RGB PIL image, or raises an error naming the argument and the sample. It
shrinks huge images before converting them, so a 10000 x 10000 photo never becomes a full-size float array.

[`InstructBlipImageProcessor`] is a PIL-backend image processor with the paper's defaults. It keeps PIL images
as PIL until after the resize and normalises the whole batch in one fused NumPy operation. That plain resize is
LAVIS' evaluation transform (``blip_image_eval``); [`RandomResizedCrop`] is its training transform
(``blip2_image_train``: random resized crop, scale 0.5-1, bicubic, then a horizontal flip), applied to the PIL
images before the image processor (`HfInstructBlipProcessor.pixel_values` with ``train_transform=``).

This file is pushed next to the weights for ``trust_remote_code``; it imports nothing from ``hf_instructblip``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

__all__ = ["InstructBlipImageProcessor", "RandomResizedCrop", "to_rgb_image"]

_CHANNELS = (1, 3, 4)


def _where(argument: str, index: int | tuple[int, ...] | None) -> str:
    if index is None:
        return f"`{argument}`"
    if isinstance(index, tuple):
        return f"`{argument}` sample {index[0]} frame {index[1]}"
    return f"`{argument}` sample {index}"


def _open(source: str | os.PathLike | bytes, where: str) -> Image.Image:
    try:
        if isinstance(source, bytes):
            if not source:
                raise ValueError(f"{where}: the image bytes are empty.")
            image = Image.open(io.BytesIO(source))
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"{where}: image file {str(path)!r} does not exist.")
            image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        what = "bytes" if isinstance(source, bytes) else repr(str(source))
        raise ValueError(f"{where}: cannot decode the image {what}: {error}") from error
    return image


def _array_to_image(array: np.ndarray, where: str) -> Image.Image:
    """HWC or CHW (or HW) array, uint8 or float in [0, 1] / [0, 255] -> PIL image."""
    if array.ndim == 3:
        first, last = array.shape[0] in _CHANNELS, array.shape[-1] in _CHANNELS
        if first and not last:
            array = np.moveaxis(array, 0, -1)  # CHW -> HWC
        elif not first and not last:
            raise ValueError(
                f"{where}: an image array needs 1, 3 or 4 channels first (CHW) or last (HWC); got shape "
                f"{tuple(array.shape)}."
            )
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"{where}: an image array must have 2 or 3 dimensions, got shape {tuple(array.shape)}.")
    if array.size == 0:
        raise ValueError(f"{where}: the image array is empty (shape {tuple(array.shape)}).")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: the image array holds NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 255:
            raise ValueError(
                f"{where}: float pixel values must lie in [0, 1] or [0, 255], got [{low:g}, {high:g}]. Pass raw "
                "pixels, not normalised tensors."
            )
        array = np.rint(array * 255 if high <= 1.0 else array).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ValueError(f"{where}: integer pixel values must lie in [0, 255] (dtype {array.dtype}).")
        array = array.astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    """Box-reduce by an integer factor while the image stays >= max_side: cheap, and bounds later memory use."""
    if max_side is None:
        return image
    factor = min(image.size) // max_side
    if factor < 2:
        return image
    try:
        return image.reduce(factor)
    except ValueError:  # modes Image.reduce does not support (e.g. "I;16"): convert first
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited over white; 16/32-bit and float images are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.uint16)
        return Image.fromarray((array // 257).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        return Image.fromarray(np.rint((array - low) * scale).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def to_rgb_image(
    image: Any, argument: str = "images", index: int | tuple[int, int] | None = None, max_side: int | None = None
) -> Image.Image:
    """Turn one user-supplied image into an RGB PIL image, or raise a `ValueError` that says which one and why.

    Args:
        image: PIL image, path (str / PathLike), encoded bytes, NumPy array or torch tensor (HWC, CHW or HW).
        argument: Argument name for error messages.
        index: Sample index (or ``(sample, frame)``) for error messages.
        max_side: If given, images whose shorter side is at least twice this are box-reduced by an integer factor
            first (keeping the shorter side >= ``max_side``), so huge images are never converted at full size.
    """
    where = _where(argument, index)
    if isinstance(image, (str, os.PathLike, bytes)):
        image = _open(image, where)
    elif type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        image = _array_to_image(image, where)
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"{where}: expected a PIL image, a path, bytes, a NumPy array or a torch tensor; got {type(image).__name__}."
        )
    if image.width < 1 or image.height < 1:
        raise ValueError(f"{where}: the image has no pixels ({image.width} x {image.height}).")
    return _to_rgb(_shrink(image, max_side))


def _uniform(seed: int, stream: str, k: int) -> float:
    """The ``k``-th number in [0, 1) of ``stream`` for ``seed``: a pure function, the same on every platform."""
    key = f"{_seed_int(seed)}/{stream}/{k}".encode()
    return (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 11) * 2.0**-53


def _seed_int(value: int) -> int:
    """``value`` as an int (a bool or float seed is an error, not silently a different seed)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"a seed must be an int, got {type(value).__name__}.")
    return int(value)


@dataclass(frozen=True)
class RandomResizedCrop:
    """LAVIS' training image transform: a random resized crop, then a random horizontal flip.

    LAVIS `blip_processors.py` ``blip2_image_train``: torchvision's ``RandomResizedCrop(224, scale=(0.5, 1.0),
    interpolation=BICUBIC)`` then ``RandomHorizontalFlip()`` (probability 0.5, for every dataset, text in the image
    and left/right questions included). This is the same crop (torchvision's ``get_params``: up to 10 tries at a
    random area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``, else a central crop) with PIL and
    NumPy only, driven by a seed instead of a global random state: the same seed gives the same crop and flip, on any
    platform, in any process and any order.

    Flipping mirrors text and swaps left and right, so ``hflip`` is configurable: 0.5 is LAVIS'; 0 suits data whose
    answers read text in the image (OCR-VQA, TextCaps) or name a side. (The synthetic tasks train without this
    transform at all: a crop can also cut a shape out of their small scenes.)

    Args:
        scale: Range of the crop's area, as a fraction of the image's (LAVIS: 0.5-1.0).
        ratio: Range of the crop's aspect ratio, width / height (torchvision's default, 3/4-4/3).
        hflip: Probability of a horizontal flip (LAVIS: 0.5; 0 never flips).
    """

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"RandomResizedCrop: scale must satisfy 0 < min <= max <= 1, got {tuple(self.scale)}.")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"RandomResizedCrop: ratio must satisfy 0 < min <= max, got {tuple(self.ratio)}.")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"RandomResizedCrop: hflip is a probability in [0, 1], got {self.hflip}.")

    def crop_box(self, width: int, height: int, seed: int) -> tuple[int, int, int, int]:
        """The crop ``(left, top, right, bottom)`` for an image of this size (torchvision's ``get_params``)."""
        area = width * height
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for attempt in range(10):
            u = [_uniform(seed, "crop", 4 * attempt + k) for k in range(4)]
            target_area = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_low + (log_high - log_low) * u[1])
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(u[2] * (height - h + 1))
                left = int(u[3] * (width - w + 1))
                return left, top, left + w, top + h
        ratio = width / height  # no try fitted: the largest central crop with an allowed aspect ratio
        if ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def flips(self, seed: int) -> bool:
        """Whether the image of this seed is flipped."""
        return self.hflip > 0 and _uniform(seed, "flip", 0) < self.hflip

    def __call__(
        self, image: Image.Image, size: tuple[int, int], seed: int, resample: Any = PILImageResampling.BICUBIC
    ) -> Image.Image:
        """Crop, resize to ``size`` = ``(height, width)`` (bicubic, as LAVIS) and maybe flip one RGB PIL image.

        The frames of one sample take the same ``seed``, so they are cropped alike (relative to their size) and
        flipped together.
        """
        box = self.crop_box(image.width, image.height, seed)
        # crop, then resize: torchvision's resized_crop on PIL (resizing with ``box=`` would read pixels outside it)
        image = image.crop(box).resize((size[1], size[0]), resample=resample)
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flips(seed) else image


class InstructBlipImageProcessor(PilBackend):
    r"""Image processor with InstructBLIP's defaults: RGB, bicubic resize to 224 x 224, CLIP mean/std.

    Accepts what [`to_rgb_image`] accepts. Equivalent to transformers' BLIP image processor configured the same
    way (same PIL resize, same normalisation), but resizes before converting to arrays and normalises the batch in
    one pass.
    """

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def process_image(self, image: Any, *args: Any, **kwargs: Any) -> Image.Image:  # type: ignore[override]
        """Any supported input -> RGB PIL image (kept as PIL until the resize)."""
        return to_rgb_image(image, max_side=2 * max(self._target_size()))

    def _target_size(self) -> tuple[int, int]:
        size = self.size
        height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        width = size.get("width") if isinstance(size, dict) else getattr(size, "width", None)
        if not (height and width):
            raise ValueError(f"InstructBlipImageProcessor needs size with 'height' and 'width', got {size}.")
        return int(height), int(width)

    def _preprocess(  # type: ignore[override]
        self,
        images: list[Image.Image],
        do_resize: bool,
        size: Any,
        resample: PILImageResampling | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        return_tensors: Any,
        **kwargs: Any,
    ) -> BatchFeature:
        arrays = []
        for image in images:
            if do_resize and (image.height, image.width) != (size.height, size.width):
                image = image.resize((size.width, size.height), resample=resample or PILImageResampling.BICUBIC)
            arrays.append(np.asarray(image))
        if len({a.shape for a in arrays}) > 1:
            raise ValueError("Images of different sizes cannot be batched; enable do_resize.")
        batch = np.stack(arrays).astype(np.float32)  # (B, H, W, 3)
        # Fused rescale + normalise: (x * r - mean) / std == x * (r / std) - mean / std
        scale = np.full(3, rescale_factor if do_rescale else 1.0, dtype=np.float32)
        offset = np.zeros(3, dtype=np.float32)
        if do_normalize:
            std = np.broadcast_to(np.asarray(image_std, dtype=np.float32), (3,))
            offset = np.broadcast_to(np.asarray(image_mean, dtype=np.float32), (3,)) / std
            scale = scale / std
        batch *= scale
        batch -= offset
        pixel_values = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))  # (B, 3, H, W)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
