"""LAVIS' training image transform (`blip2_image_train`: random resized crop, area 0.5-1, bicubic, then a horizontal
flip) as `RandomResizedCrop`, and `HfInstructBlipProcessor.pixel_values(train_transform=..., seeds=...)`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_processor
from hf_instructblip.image_processing_instructblip import RandomResizedCrop

SEEDS = range(2000)


def _image(width: int = 50, height: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


def _torchvision_get_params(width: int, height: int, n: int) -> tuple[list[float], list[float]]:
    """Area fractions and aspect ratios of ``n`` crops by torchvision's ``RandomResizedCrop.get_params`` (scale
    0.5-1, ratio 3/4-4/3), transcribed with NumPy's random generator."""
    rng = np.random.default_rng(0)
    areas, aspects = [], []
    for _ in range(n):
        for _ in range(10):
            target = width * height * rng.uniform(0.5, 1.0)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                areas.append(w * h / (width * height))
                aspects.append(w / h)
                break
    return areas, aspects


def test_crops_lie_in_the_image_with_lavis_area_and_aspect_ratio():
    transform = RandomResizedCrop()  # LAVIS: scale (0.5, 1.0); torchvision's ratio (3/4, 4/3)
    width, height = 400, 300
    areas, aspects = [], []
    for seed in SEEDS:
        left, top, right, bottom = transform.crop_box(width, height, seed)
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
        areas.append((right - left) * (bottom - top) / (width * height))
        aspects.append((right - left) / (bottom - top))
    # rounding the sides to pixels moves area and aspect ratio by well under 1%
    assert min(areas) >= 0.5 * 0.99 and max(areas) <= 1.0
    assert min(aspects) >= 0.75 * 0.99 and max(aspects) <= 4 / 3 * 1.01
    # the distribution of torchvision's get_params (LAVIS' crop), drawn with NumPy's generator: tries that do not fit
    # are redrawn, which favours smaller areas than a uniform 0.5-1
    reference_areas, reference_aspects = _torchvision_get_params(width, height, 20_000)
    assert np.mean(areas) == pytest.approx(np.mean(reference_areas), abs=0.01)
    assert np.mean(aspects) == pytest.approx(np.mean(reference_aspects), abs=0.02)
    assert len({transform.crop_box(width, height, seed)[:2] for seed in SEEDS}) > 1000  # positions vary


def test_no_fitting_crop_falls_back_to_the_central_one():
    """torchvision's fallback: after 10 tries, the largest central crop with an allowed aspect ratio."""
    assert RandomResizedCrop().crop_box(1000, 10, seed=0) == (493, 0, 506, 10)  # 13 x 10 = 4/3, centred


def test_same_seed_same_crop_and_flip_other_seeds_others():
    transform, image = RandomResizedCrop(), _image()
    out = transform(image, (30, 30), seed=7)
    assert out.size == (30, 30)
    assert np.array_equal(np.asarray(out), np.asarray(transform(image, (30, 30), seed=7)))
    outputs = {np.asarray(transform(image, (30, 30), seed)).tobytes() for seed in range(20)}
    assert len(outputs) == 20


def test_flip_probability():
    flips = [RandomResizedCrop().flips(seed) for seed in SEEDS]
    assert 0.45 < np.mean(flips) < 0.55  # LAVIS' 0.5
    assert not any(RandomResizedCrop(hflip=0.0).flips(seed) for seed in SEEDS)
    assert all(RandomResizedCrop(hflip=1.0).flips(seed) for seed in SEEDS)


def test_the_whole_image_flipped_is_the_mirrored_resize():
    image = _image()
    whole = RandomResizedCrop(scale=(1.0, 1.0), ratio=(50 / 40, 50 / 40), hflip=1.0)
    assert whole.crop_box(50, 40, seed=3) == (0, 0, 50, 40)
    expected = image.resize((30, 30), resample=Image.Resampling.BICUBIC).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    assert np.array_equal(np.asarray(whole(image, (30, 30), seed=3)), np.asarray(expected))


def test_processor_pixel_values_with_the_train_transform(processor):
    transform = RandomResizedCrop()
    assert processor.pixel_values([_image(seed=1)], train_transform=transform, seeds=[0]).shape == (1, 3, 30, 30)
    frames = [[_image(seed=2), _image(seed=2)], [_image(seed=3), _image(seed=4)]]
    first = processor.pixel_values(frames, train_transform=transform, seeds=[5, 6])
    assert first.shape == (2, 2, 3, 30, 30)
    assert torch.equal(first, processor.pixel_values(frames, train_transform=transform, seeds=[5, 6]))
    assert torch.equal(first[0, 0], first[0, 1])  # the frames of a sample share its crop and flip
    assert not torch.equal(first, processor.pixel_values(frames, train_transform=transform, seeds=[5, 7]))
    assert not torch.equal(first, processor.pixel_values(frames))  # the default is the evaluation transform


def test_bad_arguments_are_named(processor):
    image = _image()
    with pytest.raises(ValueError, match=r"`seeds` must give one int per sample.*no seeds"):
        processor.pixel_values([image], train_transform=RandomResizedCrop())
    with pytest.raises(ValueError, match="2 samples, 1 seeds"):
        processor.pixel_values([image, image], train_transform=RandomResizedCrop(), seeds=[0])
    with pytest.raises(TypeError, match="a seed must be an int"):
        RandomResizedCrop().flips(0.5)  # type: ignore[arg-type]
    for bad in ({"scale": (0.0, 1.0)}, {"scale": (0.9, 0.5)}, {"ratio": (2.0, 1.0)}, {"hflip": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RandomResizedCrop(**bad)
