"""Bad input gets a clear error naming the argument and the sample, or a correct conversion (table-driven)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NUM_QUERY, make_processor
from hf_instructblip import to_rgb_image

RGB = np.array([[[10, 20, 30], [200, 100, 50]], [[0, 0, 0], [255, 255, 255]]], dtype=np.uint8)  # (2, 2, 3)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(RGB).save(good)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    return {"good": good, "corrupt": corrupt, "truncated": truncated, "missing": tmp_path / "nope.png"}


def _ok():
    return Image.fromarray(RGB)


# (case id, processor kwargs built from the `files` fixture, exception, message pattern)
ERROR_CASES = [
    (
        "corrupt file",
        lambda f: {"images": [_ok(), f["corrupt"]], "text": ["a", "b"]},
        ValueError,
        r"`images` sample 1: cannot decode the image '.*corrupt\.jpg'",
    ),
    (
        "truncated file",
        lambda f: {"images": [f["truncated"]], "text": ["a"]},
        ValueError,
        r"`images` sample 0: cannot decode",
    ),
    (
        "corrupt bytes",
        lambda f: {"images": [_ok(), b"GIF89a garbage"], "text": ["a", "b"]},
        ValueError,
        r"`images` sample 1: cannot decode the image bytes",
    ),
    (
        "empty bytes",
        lambda f: {"images": [b""], "text": ["a"]},
        ValueError,
        r"`images` sample 0: the image bytes are empty",
    ),
    (
        "missing path",
        lambda f: {"images": [_ok(), _ok(), str(f["missing"])], "text": ["a", "b", "c"]},
        FileNotFoundError,
        r"`images` sample 2: image file '.*nope\.png' does not exist",
    ),
    (
        "empty text, no image",
        lambda f: {"text": ["fine", ""]},
        ValueError,
        r"`text` sample 1 is empty and there is no image",
    ),
    (
        "too long, no truncation",
        lambda f: {"images": [_ok(), _ok()], "text": ["a", "word " * 40], "max_length": 20},
        ValueError,
        r"`text` sample 1 has \d+ tokens; with 4 image tokens that exceeds the maximum length 20",
    ),
    (
        "fewer images than prompts",
        lambda f: {"images": [_ok(), _ok()], "text": ["a", "b", "c"]},
        ValueError,
        r"`images` has 2 samples but `text` has 3 prompts",
    ),
    (
        "more images than one prompt",
        lambda f: {"images": [_ok(), _ok()], "text": "a"},
        ValueError,
        r"`images` has 2 images but `text` has 1 prompt.*nested list",
    ),
    (
        "empty frame list",
        lambda f: {"images": [[_ok()], []], "text": ["a", "b"]},
        ValueError,
        r"`images` sample 1 is an empty list of frames",
    ),
    (
        "ragged frame counts",
        lambda f: {"images": [[_ok()], [_ok(), _ok()]], "text": ["a", "b"]},
        ValueError,
        r"same number of frames \(sample 0: 1, sample 1: 2\)",
    ),
    (
        "bad frame inside a video",
        lambda f: {"images": [[_ok(), _ok()], [_ok(), f["corrupt"]]], "text": ["a", "b"]},
        ValueError,
        r"`images` sample 1 frame 1: cannot decode",
    ),
    ("no images list", lambda f: {"images": [], "text": ["a"]}, ValueError, r"`images` is an empty list"),
    (
        "non-string text",
        lambda f: {"images": [_ok(), _ok()], "text": ["a", 3]},
        TypeError,
        r"`text` sample 1 must be a string, got int",
    ),
    ("text not a list", lambda f: {"text": 3.5}, TypeError, r"`text` must be a string or a list of strings"),
    (
        "image of a wrong type",
        lambda f: {"images": [_ok(), 42], "text": ["a", "b"]},
        TypeError,
        r"`images` sample 1: expected a PIL image, a path, bytes, a NumPy array or a torch tensor; got int",
    ),
    (
        "array with 5 channels",
        lambda f: {"images": [np.zeros((8, 8, 5), np.uint8)], "text": ["a"]},
        ValueError,
        r"`images` sample 0: an image array needs 1, 3 or 4 channels",
    ),
    (
        "array of wrong rank",
        lambda f: {"images": [np.zeros((2, 8, 8, 3, 1), np.uint8)], "text": ["a"]},
        ValueError,
        r"`images` sample 0: an image array must have 2 or 3 dimensions",
    ),
    (
        "normalised float tensor",
        lambda f: {"images": [torch.randn(3, 8, 8) * 3], "text": ["a"]},
        ValueError,
        r"`images` sample 0: float pixel values must lie in \[0, 1\] or \[0, 255\]",
    ),
    (
        "NaN pixels",
        lambda f: {"images": [np.full((4, 4, 3), np.nan)], "text": ["a"]},
        ValueError,
        r"`images` sample 0: the image array holds NaN",
    ),
    (
        "empty array",
        lambda f: {"images": [np.zeros((0, 4, 3), np.uint8)], "text": ["a"]},
        ValueError,
        r"`images` sample 0: the image array is empty",
    ),
    (
        "placeholder typed by the user",
        lambda f: {"images": [_ok()], "text": ["look <image> here"]},
        ValueError,
        r"`text` sample 0 contains the image placeholder '<image>'",
    ),
    ("video argument", lambda f: {"videos": [[_ok()]], "text": ["a"]}, ValueError, r"list of frames"),
    ("nothing at all", lambda f: {}, ValueError, r"Pass `images`, `text` or both"),
]


@pytest.mark.parametrize(("case", "build", "error", "pattern"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_input_is_a_clear_error(processor, files, case, build, error, pattern):
    with pytest.raises(error, match=pattern):
        processor(**build(files))


def _mode(mode: str) -> Image.Image:
    return Image.fromarray(RGB).convert(mode)


# (case id, image in some form, the RGB array it must become)
CONVERSION_CASES = [
    ("L", _mode("L"), np.repeat(np.asarray(_mode("L"))[..., None], 3, axis=-1)),
    ("RGBA opaque", _mode("RGBA"), RGB),
    ("RGBA transparent over white", Image.new("RGBA", (2, 2), (10, 20, 30, 0)), np.full((2, 2, 3), 255, np.uint8)),
    ("LA", _mode("LA"), np.repeat(np.asarray(_mode("L"))[..., None], 3, axis=-1)),
    ("P", _mode("P"), np.asarray(_mode("P").convert("RGB"))),
    ("CMYK white", Image.new("CMYK", (2, 2), (0, 0, 0, 0)), np.full((2, 2, 3), 255, np.uint8)),
    ("CMYK black", Image.new("CMYK", (2, 2), (0, 0, 0, 255)), np.zeros((2, 2, 3), np.uint8)),
    (
        "I;16 full range",
        Image.fromarray(np.array([[0, 65535], [32896, 257]], dtype=np.uint16)),
        np.repeat(np.array([[0, 255], [128, 1]], np.uint8)[..., None], 3, axis=-1),
    ),
    ("numpy HWC uint8", RGB, RGB),
    ("numpy CHW uint8", RGB.transpose(2, 0, 1).copy(), RGB),
    ("numpy HWC float in [0, 1]", RGB / 255.0, RGB),
    ("numpy grayscale HW", RGB[..., 0], np.repeat(RGB[..., :1], 3, axis=-1)),
    ("torch CHW uint8", torch.from_numpy(RGB).permute(2, 0, 1), RGB),
    ("torch HWC float in [0, 255]", torch.from_numpy(RGB).float(), RGB),
    ("torch CHW float in [0, 1]", torch.from_numpy(RGB).permute(2, 0, 1).float() / 255, RGB),
    ("PNG bytes", _png_bytes(Image.fromarray(RGB)), RGB),
    ("1x1", Image.new("RGB", (1, 1), (9, 8, 7)), np.array([[[9, 8, 7]]], np.uint8)),
]


@pytest.mark.parametrize(("case", "image", "expected"), CONVERSION_CASES, ids=[c[0] for c in CONVERSION_CASES])
def test_inputs_are_converted_to_the_right_rgb(processor, case, image, expected):
    converted = to_rgb_image(image)
    assert converted.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(converted), expected)
    # and through the processor: the same pixel values as the equivalent RGB image
    out = processor(images=[image], text=["what?"])
    reference = processor(images=[Image.fromarray(expected)], text=["what?"])
    assert torch.equal(out["pixel_values"], reference["pixel_values"])
    assert (out["input_ids"] == processor.image_token_id).sum() == NUM_QUERY


def test_path_and_str_and_batched_array_inputs(processor, files):
    from_path = processor(images=[files["good"], str(files["good"])], text=["a", "b"], padding=True)
    reference = processor(images=[Image.fromarray(RGB)] * 2, text=["a", "b"], padding=True)
    assert torch.equal(from_path["pixel_values"], reference["pixel_values"])
    batched = processor(images=np.stack([RGB, RGB]), text=["a", "b"], padding=True)  # (B, H, W, C)
    assert torch.equal(batched["pixel_values"], reference["pixel_values"])


def test_huge_image_is_resized_without_a_full_size_array(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs, image_size=224)
    huge = Image.new("RGB", (10_000, 10_000), (120, 60, 30))  # 300 MB of pixels in PIL's own memory
    tracemalloc.start()
    out = processor(images=huge, text="what?")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out["pixel_values"].shape == (1, 3, 224, 224)
    assert peak < 50 * 2**20  # NumPy never held a full-size copy (a float32 one would be 1.2 GB)
    small = processor(images=Image.new("RGB", (224, 224), (120, 60, 30)), text="what?")
    torch.testing.assert_close(out["pixel_values"], small["pixel_values"], atol=1e-5, rtol=0)


def test_empty_prompt_with_an_image_is_fine(processor):
    out = processor(images=[_ok(), _ok()], text=["", "what?"], padding=True)
    assert ((out["input_ids"] == processor.image_token_id).sum(1) == NUM_QUERY).all()
