"""Synthetic tasks: deterministic by (task, seed, index), valid unified samples, targets true of the rendered scene.

Targets are checked against an oracle written here independently of the module's phrasing code: the question is
parsed back out of the instruction, its referring expression resolved in the scene description, and (where the
answer is visible in pixels: counts, colours, the word) checked against the rendered image itself.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from hf_instructblip.data.schema import INSTRUCTION_FEATURES, TASK_FAMILIES, validate_sample
from hf_instructblip.data.synthetic import (
    BACKGROUND,
    COLORS,
    SHAPES,
    SYNTHETIC_HELD_IN,
    SYNTHETIC_HELD_OUT,
    Scene,
    SceneShape,
    synthetic_dataset,
    synthetic_iterable,
    synthetic_mixture,
    synthetic_sample,
    synthetic_scene,
)

ALL_TASKS = SYNTHETIC_HELD_IN + SYNTHETIC_HELD_OUT
EXPECTED = {  # dataset name -> (task family, held out)
    "synthetic_captioning": ("captioning", False),
    "synthetic_vqa": ("short_vqa", False),
    "synthetic_counting": ("short_vqa", False),
    "synthetic_ocr": ("ocr_vqa", False),
    "synthetic_question_generation": ("question_generation", False),
    "synthetic_yes_no": ("binary", True),
    "synthetic_spatial": ("binary", True),
    "synthetic_multiple_choice": ("multiple_choice", True),
    "synthetic_classification": ("classification", True),
}
N = 40  # samples per task in the content checks: every question form shows up, the suite stays fast


def _image(sample: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample["images"][0]["bytes"])))


def _blobs(mask: np.ndarray) -> int:
    """Number of 4-connected components of True pixels (an iterative flood fill; images are tiny)."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            y, x = stack.pop()
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def _color_mask(pixels: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return (pixels == np.array(color, dtype=np.uint8)).all(axis=-1)


# ----- the oracle: questions parsed back and answered from the scene -----------------------------------------------
def _resolve(scene: Scene, phrase: str) -> SceneShape:
    """'the circle', 'the red object at the center', 'the shape at the top left', 'the red circle' -> that shape."""
    head, _, position = phrase.partition(" at the ")
    words = head.split()
    assert words[0].lower() == "the", phrase
    matches = [
        shape
        for shape in scene.shapes
        if all(word not in COLORS or shape.color == word for word in words[1:])
        and all(word not in SHAPES or shape.kind == word for word in words[1:])
        and (not position or shape.position == position)
    ]
    assert len(matches) == 1, f"{phrase!r} refers to {len(matches)} shapes in {scene}"
    return matches[0]


def _answer(scene: Scene, question: str) -> str:
    """The answer to a colour / shape / counting question, computed from the scene description."""
    if match := re.fullmatch(r"what color is (.+)\?", question, re.IGNORECASE):
        return _resolve(scene, match[1]).color
    if match := re.fullmatch(r"what shape is at the (.+)\?", question, re.IGNORECASE):
        return _resolve(scene, f"the shape at the {match[1]}").kind
    if match := re.fullmatch(r"what shape is (.+)\?", question, re.IGNORECASE):
        return _resolve(scene, match[1]).kind
    if match := re.fullmatch(r"how many (?:(\w+) )?(\w+?)s are there\?", question, re.IGNORECASE):
        adjective, noun = match[1], match[2]
        shapes = [s for s in scene.shapes if (adjective is None or s.color == adjective)]
        return str(sum(noun == "shape" or s.kind == noun for s in shapes))
    raise AssertionError(f"the oracle does not know the question {question!r}")


QUESTION = re.compile(r"(What (?:color|shape) is [^?]+\?|How many [^?]+\?|Is there a [^?]+\?)")


def _question_in(instruction: str) -> str:
    found = QUESTION.findall(instruction)
    assert len(found) == 1, instruction
    return found[0]


def _check_captioning(scene: Scene, sample: dict) -> None:
    mentioned = re.findall(r"an? (\w+) (\w+)", sample["target"])
    assert sorted(f"{c} {k}" for c, k in mentioned) == sorted(s.name for s in scene.shapes)
    assert _blobs(~_color_mask(_image(sample), BACKGROUND)) == len(mentioned)


def _check_short_answer(scene: Scene, sample: dict) -> None:
    assert sample["target"] == _answer(scene, _question_in(sample["instruction"]))


def _check_ocr(scene: Scene, sample: dict) -> None:
    assert sample["target"] == scene.text and sample["ocr_tokens"] == [scene.text]
    assert f"OCR tokens: {scene.text}" in sample["instruction"]
    assert sample["qformer_text"] == sample["instruction"]  # LAVIS: the Q-Former reads what the LLM reads


def _check_question_generation(scene: Scene, sample: dict) -> None:
    given = re.search(r"answer(?: is)?:? \"?([^\".]+)", sample["instruction"])
    assert given, sample["instruction"]
    assert _answer(scene, sample["target"]) == given[1]


def _check_yes_no(scene: Scene, sample: dict) -> None:
    name = re.fullmatch(r"Is there a (.+) in the image\?", _question_in(sample["instruction"]))[1]
    assert sample["target"] == ("yes" if name in {s.name for s in scene.shapes} else "no")


def _check_spatial(scene: Scene, sample: dict) -> None:
    relations = "to the left of|to the right of|above|below"
    match = re.search(rf"The (\w+ \w+) is ({relations}) the (\w+ \w+)", sample["instruction"])
    first, second = _resolve(scene, f"the {match[1]}"), _resolve(scene, f"the {match[3]}")
    # Judge by pixel coordinates: every shape lies inside its own grid cell.
    holds = {
        "to the left of": first.x < second.x and first.column != second.column,
        "to the right of": first.x > second.x and first.column != second.column,
        "above": first.y < second.y and first.row != second.row,
        "below": first.y > second.y and first.row != second.row,
    }[match[2]]
    assert sample["target"] == ("true" if holds else "false")


def _check_multiple_choice(scene: Scene, sample: dict) -> None:
    _check_short_answer(scene, sample)


def _check_classification(scene: Scene, sample: dict) -> None:
    assert len(scene.shapes) == 1 and sample["target"] == scene.shapes[0].kind
    assert _blobs(~_color_mask(_image(sample), BACKGROUND)) == 1


CHECKS = {
    "synthetic_captioning": _check_captioning,
    "synthetic_vqa": _check_short_answer,
    "synthetic_counting": _check_short_answer,
    "synthetic_ocr": _check_ocr,
    "synthetic_question_generation": _check_question_generation,
    "synthetic_yes_no": _check_yes_no,
    "synthetic_spatial": _check_spatial,
    "synthetic_multiple_choice": _check_multiple_choice,
    "synthetic_classification": _check_classification,
}


def _samples(task: str, n: int = N, seed: int = 0) -> list[tuple[Scene, dict]]:
    return [(synthetic_scene(task, seed, i), synthetic_sample(task, seed, i)) for i in range(n)]


# ----- tests ------------------------------------------------------------------------------------------------------
def test_registry_lists_every_task_once():
    assert set(ALL_TASKS) == set(EXPECTED) == set(CHECKS)
    assert len(ALL_TASKS) == len(set(ALL_TASKS))


@pytest.mark.parametrize("task", ALL_TASKS)
def test_same_arguments_same_sample_and_new_index_new_scene(task):
    a, b = synthetic_sample(task, 7, 3), synthetic_sample(task, 7, 3)
    assert a["images"][0]["bytes"] == b["images"][0]["bytes"]
    assert a == b
    images = {synthetic_sample(task, 7, i)["images"][0]["bytes"] for i in range(30)}
    assert len(images) >= 27  # a one-shape scene may repeat by chance; a stuck generator would not pass
    assert synthetic_sample(task, 8, 3)["images"][0]["bytes"] != a["images"][0]["bytes"]  # the seed matters


def test_same_output_in_another_process_with_another_hash_seed():
    """No salted `hash()` or set order leaks in: a fresh interpreter with another PYTHONHASHSEED agrees."""
    src = Path(__file__).resolve().parents[2] / "src" / "hf_instructblip"
    # Import only the data sub-package (a stub parent package skips torch/transformers): seconds, not ten.
    code = (
        "import hashlib, json, sys, types\n"
        f"package = types.ModuleType('hf_instructblip'); package.__path__ = [{str(src)!r}]\n"
        "sys.modules['hf_instructblip'] = package\n"
        "from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_sample\n"
        "out = {}\n"
        "for task in SYNTHETIC_HELD_IN + SYNTHETIC_HELD_OUT:\n"
        "    for i in range(5):\n"
        "        s = synthetic_sample(task, 11, i)\n"
        "        out[f'{task}/{i}'] = [hashlib.sha256(s['images'][0]['bytes']).hexdigest(), s['instruction'], s['target']]\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for key, (digest, instruction, target) in theirs.items():
        task, index = key.split("/")
        ours = synthetic_sample(task, 11, int(index))
        assert hashlib.sha256(ours["images"][0]["bytes"]).hexdigest() == digest, key
        assert (ours["instruction"], ours["target"]) == (instruction, target), key


@pytest.mark.parametrize("task", ALL_TASKS)
def test_rows_are_valid_unified_samples(task):
    dataset = synthetic_dataset(task, num_samples=12, seed=1)
    assert dataset.features == INSTRUCTION_FEATURES
    assert len(dataset) == 12
    family, held_out = EXPECTED[task]
    for index, row in enumerate(dataset):
        validate_sample(row, task, index)  # raises BadSampleError if not
        assert (row["task_family"], row["dataset"], row["held_out"]) == (family, task, held_out)
        assert family in TASK_FAMILIES
        image = row["images"][0]
        assert len(row["images"]) == 1 and image.mode == "RGB" and image.size == (64, 64)
        target = row["target"]
        assert target and target == target.lower() and len(target.split()) <= 13, target  # 4-shape caption: 13 words
        assert row["answers"] == [target]


@pytest.mark.parametrize("task", ALL_TASKS)
def test_targets_are_true_of_the_scene(task):
    for scene, sample in _samples(task):
        CHECKS[task](scene, sample)


def test_counts_match_the_shapes_in_the_pixels():
    checked = 0
    for _, sample in _samples("synthetic_counting", 60):
        pixels = _image(sample)
        question = _question_in(sample["instruction"])
        if question == "How many shapes are there?":
            assert int(sample["target"]) == _blobs(~_color_mask(pixels, BACKGROUND))
            checked += 1
        elif match := re.fullmatch(r"How many (\w+) shapes are there\?", question):
            assert int(sample["target"]) == _blobs(_color_mask(pixels, COLORS[match[1]]))
            checked += 1
    assert checked >= 20  # both pixel-checkable forms occur


def test_every_shape_is_drawn_in_its_colour_inside_its_cell():
    for task in ("synthetic_vqa", "synthetic_spatial", "synthetic_multiple_choice"):
        for scene, sample in _samples(task, 20):
            pixels = _image(sample)
            for shape in scene.shapes:
                assert tuple(pixels[shape.y, shape.x]) == COLORS[shape.color]
                assert (shape.x * 3 // scene.size, shape.y * 3 // scene.size) == (shape.column, shape.row)


def _ink(mask: np.ndarray) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


def test_ocr_image_spells_the_target_in_ocr_tokens_at_a_legible_scale():
    font = ImageFont.load_default_imagefont()
    for _, sample in _samples("synthetic_ocr", 20):
        assert sample["target"] in sample["ocr_tokens"]
        reference = Image.new("L", (64, 16))
        ImageDraw.Draw(reference).text((0, 0), sample["target"], fill=255, font=font)
        glyphs = _ink(np.asarray(reference) > 0)
        black = _color_mask(_image(sample), (0, 0, 0))
        assert not black[: black.shape[0] // 3].any()  # the top row is the shapes' (they would hide letters)
        drawn = _ink(black)
        scale = drawn.shape[0] // glyphs.shape[0]
        assert scale >= 2, "a 64-px image must show the 1-bit glyphs at least 2x: smaller is hard to read"
        assert np.array_equal(drawn, np.kron(glyphs, np.ones((scale, scale), dtype=bool))), sample["target"]


def test_held_out_tasks_are_task_types_never_trained_on():
    held_in_families = {EXPECTED[name][0] for name in SYNTHETIC_HELD_IN}
    held_out_families = {EXPECTED[name][0] for name in SYNTHETIC_HELD_OUT}
    assert not held_in_families & held_out_families
    assert held_out_families == {"binary", "multiple_choice", "classification"}
    for task in ALL_TASKS:
        sample = synthetic_sample(task, 0, 0)
        assert sample["held_out"] is (task in SYNTHETIC_HELD_OUT)
        assert sample["task_family"] == EXPECTED[task][0]


def test_multiple_choice_lists_the_candidates_with_the_target_once():
    targets_at = set()
    for _, sample in _samples("synthetic_multiple_choice"):
        candidates = sample["candidates"]
        assert candidates.count(sample["target"]) == 1 and len(set(candidates)) == len(candidates) >= 4
        listed = " ".join(f"({letter}) {option}" for letter, option in zip("abcd", candidates))
        assert listed in sample["instruction"]
        targets_at.add(candidates.index(sample["target"]))
    assert targets_at == {0, 1, 2, 3}  # the answer is not always option (a)


@pytest.mark.parametrize(
    ("task", "candidates"),
    [
        ("synthetic_yes_no", ["yes", "no"]),
        ("synthetic_spatial", ["true", "false"]),
        ("synthetic_classification", list(SHAPES)),
    ],
)
def test_candidate_tasks_rank_over_a_fixed_set_and_are_not_one_sided(task, candidates):
    targets = [sample["target"] for _, sample in _samples(task, 100)]
    assert all(sample["candidates"] == candidates for _, sample in _samples(task, 5))
    for candidate in candidates:  # a constant answer would make accuracy meaningless
        assert targets.count(candidate) >= 100 // (2 * len(candidates)), (candidate, targets.count(candidate))


def test_iterable_is_endless_and_equals_the_map_style_rows():
    task = "synthetic_multiple_choice"
    rows = list(synthetic_iterable(task, seed=5).take(1000))
    assert len(rows) == 1000
    expected = synthetic_dataset(task, 100, seed=5)
    assert synthetic_iterable(task).features == expected.features
    for streamed, stored in zip(rows, expected):
        assert np.array_equal(np.asarray(streamed.pop("images")[0]), np.asarray(stored.pop("images")[0]))
        assert streamed == stored
    assert rows[999]["target"] == synthetic_sample(task, 5, 999)["target"]


def test_mixture_has_one_dataset_per_task_with_its_own_scenes():
    mixture = synthetic_mixture(["synthetic_captioning", "synthetic_yes_no"], num_samples_per_task=5, seed=2)
    assert list(mixture) == ["synthetic_captioning", "synthetic_yes_no"]
    for name, dataset in mixture.items():
        assert len(dataset) == 5 and set(dataset["dataset"]) == {name}
        assert dataset[3]["target"] == synthetic_sample(name, 2, 3)["target"]
    # The task name seeds the scene too: tasks of one mixture do not all show the same images.
    first = [np.asarray(image[0]) for image in mixture["synthetic_captioning"]["images"]]
    second = [np.asarray(image[0]) for image in mixture["synthetic_yes_no"]["images"]]
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("size", [32, 96, 224])
def test_image_size_is_configurable(size):
    sample = synthetic_sample("synthetic_ocr", 0, 0, image_size=size)
    assert Image.open(io.BytesIO(sample["images"][0]["bytes"])).size == (size, size)
    assert synthetic_dataset("synthetic_counting", 2, image_size=size)[0]["images"][0].size == (size, size)
    scene = synthetic_scene("synthetic_vqa", 0, 1, image_size=size)
    assert all(0 < shape.x < size and 0 < shape.y < size for shape in scene.shapes)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: synthetic_sample("vqav2", 0, 0), "known tasks: synthetic_captioning, synthetic_vqa"),
        (lambda: synthetic_dataset("nope", 3), "Unknown synthetic task 'nope'"),
        (lambda: synthetic_iterable("nope"), "Unknown synthetic task"),
        (lambda: synthetic_mixture(["synthetic_vqa", "nope"], 3), "Unknown synthetic task 'nope'"),
        (lambda: synthetic_mixture("synthetic_vqa", 3), "sequence of task names"),
        (lambda: synthetic_mixture(["synthetic_vqa", "synthetic_vqa"], 3), "more than once"),
        (lambda: synthetic_sample("synthetic_vqa", 0, -1), "`index` must be an int >= 0"),
        (lambda: synthetic_sample("synthetic_vqa", 0, 0, image_size=16), "`image_size` must be an int >= 32"),
        (lambda: synthetic_dataset("synthetic_vqa", -1), "`num_samples` must be an int >= 0"),
    ],
)
def test_bad_arguments_say_what_is_wrong(call, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        call()
