"""Built-in synthetic instruction tasks: deterministic rendered scenes, infinite by seed, no downloads.

Used by the tests, the ``make demo`` training run and the benchmarks. Every sample is a pure function of
``(task, seed, index)``: a scene of 1-4 coloured shapes on a 3x3 grid (or a short rendered word or number for the
OCR task) is drawn with PIL, and a question about it is phrased from a small set of instructions. Targets are
derived from the scene description, so accuracy on them is exactly defined.

| dataset name                      | task family           | held out | what is asked                                  |
|-----------------------------------|-----------------------|----------|------------------------------------------------|
| `synthetic_captioning`            | `captioning`          | no       | "a red circle and a blue square"               |
| `synthetic_vqa`                   | `short_vqa`           | no       | colour / shape of an object                    |
| `synthetic_counting`              | `short_vqa`           | no       | how many (red / circle) shapes                 |
| `synthetic_ocr`                   | `ocr_vqa`             | no       | the rendered word or number                    |
| `synthetic_question_generation`   | `question_generation` | no       | the question whose answer is given             |
| `synthetic_yes_no`                | `binary`              | yes      | is there a red circle? (yes / no)              |
| `synthetic_spatial`               | `binary`              | yes      | "the red circle is above the ..." (true/false) |
| `synthetic_multiple_choice`       | `multiple_choice`     | yes      | colour / shape / count, options (a) ... (d)    |
| `synthetic_classification`        | `classification`      | yes      | which shape is this? (one of the shape names)  |

As in the paper (arXiv 2305.06500 §2.1), the held-out tasks are task *types* never trained on: no held-in task uses the
``binary``, ``multiple_choice`` or ``classification`` families.

Train on these without LAVIS' random crops and flips (``augment_images: false``, as ``examples/configs/tiny.yaml`` and
the demo do): a crop can cut a shape out of a scene (wrong counts and captions), a flip mirrors the OCR task's text
and swaps left and right (``synthetic_spatial`` asks about sides).

Example:

```python
>>> from hf_instructblip.data.synthetic import synthetic_dataset
>>> ds = synthetic_dataset("synthetic_counting", num_samples=100, seed=0)
>>> ds[0]["task_family"], ds[0]["images"][0].size
('short_vqa', (64, 64))

```
"""

from __future__ import annotations

import functools
import io
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
from PIL import Image, ImageDraw, ImageFont

from .schema import INSTRUCTION_FEATURES, make_sample
from .templates import format_ocr_tokens

__all__ = [
    "COLORS",
    "POSITIONS",
    "SHAPES",
    "SYNTHETIC_HELD_IN",
    "SYNTHETIC_HELD_OUT",
    "Scene",
    "SceneShape",
    "render_scene",
    "synthetic_dataset",
    "synthetic_iterable",
    "synthetic_mixture",
    "synthetic_sample",
    "synthetic_scene",
]

# ----- vocabulary -------------------------------------------------------------------------------------------------
#: Colour name -> RGB. Far apart in RGB so a colour is unambiguous even after resizing and JPEG-like blur.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 200, 20),
    "purple": (140, 40, 180),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
#: Names of the 3x3 grid cells, row-major (cell = 3 * row + column).
POSITIONS: tuple[str, ...] = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)
# At most 4 characters: 4 glyphs of the 6-px bitmap font, upscaled 2x, fit a 64-px canvas.
WORDS: tuple[str, ...] = (
    "cat", "dog", "sun", "box", "cup", "hat", "map", "pen", "bus", "car", "egg", "key", "red", "sky",
    "stop", "open", "milk", "book", "tree", "fish", "bird", "cake", "road", "star", "moon", "door",
    "lamp", "ship", "rain", "snow", "exit", "sale", "taxi", "bank", "park", "shop", "menu", "cafe",
)  # fmt: skip
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
MIN_IMAGE_SIZE = 32


# ----- scenes -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneShape:
    """One filled shape; ``cell`` is its 3x3 grid cell (row-major), ``(x, y, radius)`` its pixel geometry."""

    kind: str
    color: str
    cell: int
    x: int
    y: int
    radius: int

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def column(self) -> int:
        return self.cell % 3

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """What an image shows: shapes in row-major cell order, each (colour, kind) pair at most once, and ``text``."""

    size: int
    shapes: tuple[SceneShape, ...]
    text: str = ""


@dataclass(frozen=True)
class _SceneSpec:
    min_shapes: int = 1
    max_shapes: int = 4
    cells: tuple[int, ...] = tuple(range(9))
    text: bool = False


def _rng(task: str, seed: int, index: int) -> random.Random:
    # A string seed goes through SHA-512 in `random.seed`: stable across processes, unlike the salted `hash()`.
    return random.Random(f"{task}/{seed}/{index}")


def _sample_shapes(rng: random.Random, spec: _SceneSpec, size: int) -> tuple[SceneShape, ...]:
    count = rng.randint(spec.min_shapes, spec.max_shapes)
    cells = sorted(rng.sample(spec.cells, count))
    pairs = rng.sample([(kind, color) for kind in SHAPES for color in COLORS], count)  # unique: "the red circle"
    cell_size = size / 3
    shapes = []
    for cell, (kind, color) in zip(cells, pairs):
        # Radius <= 0.34 and jitter <= 0.06 of a cell keep a gap of >= 0.2 cell between neighbours (separate blobs).
        radius = cell_size * rng.uniform(0.26, 0.34)
        x = cell_size * (cell % 3 + 0.5 + rng.uniform(-0.06, 0.06))
        y = cell_size * (cell // 3 + 0.5 + rng.uniform(-0.06, 0.06))
        shapes.append(SceneShape(kind, color, cell, round(x), round(y), max(2, round(radius))))
    return tuple(shapes)


def _sample_text(rng: random.Random) -> str:
    return rng.choice(WORDS) if rng.random() < 0.7 else str(rng.randint(1, 999))


# ----- rendering --------------------------------------------------------------------------------------------------
@functools.cache
def _font() -> ImageFont.ImageFont:
    # Pillow's built-in bitmap font: ships with Pillow, renders identically everywhere, 1-bit so no anti-aliasing.
    return ImageFont.load_default_imagefont()


def _draw_shape(draw: ImageDraw.ImageDraw, shape: SceneShape) -> None:
    x, y, r = shape.x, shape.y, shape.radius
    fill = COLORS[shape.color]
    if shape.kind == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape.kind == "square":
        side = round(r * 0.85)  # same visual area as the circle, roughly
        draw.rectangle((x - side, y - side, x + side, y + side), fill=fill)
    elif shape.kind == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    else:  # diamond
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)


def _draw_text(image: Image.Image, text: str) -> None:
    """Render ``text`` small with the bitmap font, upscale it (nearest) until legible, paste it below the top row."""
    left, top, right, bottom = _font().getbbox(text)
    glyphs = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(glyphs).text((-left, -top), text, fill=255, font=_font())
    size = image.width
    scale = max(1, min(int(0.9 * size) // glyphs.width, int(0.45 * size) // glyphs.height))
    glyphs = glyphs.resize((glyphs.width * scale, glyphs.height * scale), Image.Resampling.NEAREST)
    # Centred in the lower two thirds: the top row of the grid stays free for shapes.
    x = (size - glyphs.width) // 2
    y = size // 3 + (2 * size // 3 - glyphs.height) // 2
    image.paste(TEXT_COLOR, (x, y, x + glyphs.width, y + glyphs.height), mask=glyphs)


def render_scene(scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image of ``scene.size`` x ``scene.size`` pixels (no anti-aliasing: exact colours)."""
    image = Image.new("RGB", (scene.size, scene.size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape)
    if scene.text:
        _draw_text(image, scene.text)
    return image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # compress_level=1: these flat images compress well anyway, and level 6 costs more time than it saves space.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# ----- phrasing -----------------------------------------------------------------------------------------------------
CAPTION_PROMPTS = (
    "A short image caption:",
    "A short image description:",
    "Write a short description for the image.",
    "Briefly describe the content of the image.",
    "Please provide a short depiction of the picture.",
    "Provide a description of what is presented in the photo.",
    "Can you briefly explain what you see in the image?",
    # plain questions, as people ask them (the paper's VQA templates include the bare "{Question}")
    "What is in the photo?",
    "What is in the image?",
    "What do you see?",
    "Describe the image.",
    "Describe the photo.",
)
VQA_PROMPTS = (
    "{q}",
    "Question: {q}",
    "Q: {q} A:",
    "Question: {q} Short answer:",
    "Given the image, answer the following question with no more than three words. {q}",
)
QG_PROMPTS = (
    "Given the image, generate a question whose answer is: {a}. Question:",
    "Based on the image, provide a question with the answer: {a}. Question:",
    'Given the visual representation, create a question for which the answer is "{a}".',
    "Considering the picture, come up with a question where the answer is: {a}.",
)
YES_NO_PROMPTS = ("{q}", "Question: {q} Answer yes or no.", "{q} Please answer yes or no.")
TRUE_FALSE_PROMPTS = (
    "{s}. True or false?",
    "Is the following statement true or false? {s}.",
    "Statement: {s}. Answer true or false.",
)
CHOICE_PROMPTS = (
    "Question: {q} Options: {o}. Answer:",
    "{q} Choose one of the options: {o}.",
    "Answer the question by choosing one option. {q} Options: {o}.",
)
CLASSIFY_PROMPTS = (
    "Which shape is this?",
    "What kind of shape is shown in the image? Choose from: {c}.",
    "Classify the shape in the image as one of: {c}.",
)
RELATIONS: dict[str, Callable[[SceneShape, SceneShape], bool]] = {
    "to the left of": lambda a, b: a.column < b.column,
    "to the right of": lambda a, b: a.column > b.column,
    "above": lambda a, b: a.row < b.row,
    "below": lambda a, b: a.row > b.row,
}


def _join(phrases: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def _caption(scene: Scene) -> str:
    return _join([f"a {shape.name}" for shape in scene.shapes])


def _by_kind(scene: Scene, shape: SceneShape) -> str:
    """Refer to a shape without naming its colour: 'the circle', or 'the circle at the top left' if ambiguous."""
    unique = sum(other.kind == shape.kind for other in scene.shapes) == 1
    return f"the {shape.kind}" if unique else f"the {shape.kind} at the {shape.position}"


def _by_color(scene: Scene, shape: SceneShape) -> str:
    """Refer to a shape without naming its kind: 'the red object', or '... at the top left' if ambiguous."""
    unique = sum(other.color == shape.color for other in scene.shapes) == 1
    return f"the {shape.color} object" if unique else f"the {shape.color} object at the {shape.position}"


def _attribute_qa(scene: Scene, rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    """A colour or shape question about one object: (question, answer, the answer's vocabulary)."""
    shape = rng.choice(scene.shapes)
    form = rng.randrange(4)
    if form == 0:
        return f"What color is {_by_kind(scene, shape)}?", shape.color, tuple(COLORS)
    if form == 1:
        return f"What color is the shape at the {shape.position}?", shape.color, tuple(COLORS)
    if form == 2:
        return f"What shape is {_by_color(scene, shape)}?", shape.kind, SHAPES
    return f"What shape is at the {shape.position}?", shape.kind, SHAPES


def _count_qa(scene: Scene, rng: random.Random) -> tuple[str, str, tuple[str, ...]]:
    """A counting question (only about colours / kinds present): (question, answer, the answer's vocabulary)."""
    shape = rng.choice(scene.shapes)
    form = rng.randrange(3)
    if form == 0:
        question, count = "How many shapes are there?", len(scene.shapes)
    elif form == 1:
        question = f"How many {shape.color} shapes are there?"
        count = sum(other.color == shape.color for other in scene.shapes)
    else:
        question = f"How many {shape.kind}s are there?"
        count = sum(other.kind == shape.kind for other in scene.shapes)
    return question, str(count), tuple(str(n) for n in range(1, 5))


def _options(target: str, vocabulary: Sequence[str], rng: random.Random, k: int = 4) -> list[str]:
    """``k`` candidates (fewer if the vocabulary is smaller): the target once, distractors, shuffled."""
    distractors = [word for word in vocabulary if word != target]
    options = [target, *rng.sample(distractors, min(k - 1, len(distractors)))]
    rng.shuffle(options)
    return options


# ----- tasks --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    """The task-specific part of a sample; the task's registry entry adds family, dataset and held-out flag."""

    instruction: str
    target: str
    candidates: tuple[str, ...] = ()
    ocr_tokens: tuple[str, ...] = ()


def _captioning(scene: Scene, rng: random.Random) -> _Item:
    return _Item(rng.choice(CAPTION_PROMPTS), _caption(scene))


def _vqa(scene: Scene, rng: random.Random) -> _Item:
    question, answer, _ = _attribute_qa(scene, rng)
    return _Item(rng.choice(VQA_PROMPTS).format(q=question), answer)


def _counting(scene: Scene, rng: random.Random) -> _Item:
    question, answer, _ = _count_qa(scene, rng)
    return _Item(rng.choice(VQA_PROMPTS).format(q=question), answer)


def _ocr(scene: Scene, rng: random.Random) -> _Item:
    what = "number" if scene.text.isdigit() else "word"
    question = rng.choice((f"What {what} is written in the image?", "What is written in the image?"))
    prompt = rng.choice(VQA_PROMPTS).format(q=question)
    # Paper: OCR tokens go into the instruction after "OCR tokens:"; the Q-Former reads the same text (LAVIS).
    return _Item(f"{format_ocr_tokens([scene.text])}. {prompt}", scene.text, ocr_tokens=(scene.text,))


def _question_generation(scene: Scene, rng: random.Random) -> _Item:
    question, answer, _ = (_attribute_qa if rng.random() < 0.7 else _count_qa)(scene, rng)
    return _Item(rng.choice(QG_PROMPTS).format(a=answer), question.lower())


def _yes_no(scene: Scene, rng: random.Random) -> _Item:
    present = {shape.name for shape in scene.shapes}
    if rng.random() < 0.5:
        name, answer = rng.choice(sorted(present)), "yes"
    else:
        absent = [f"{color} {kind}" for kind in SHAPES for color in COLORS if f"{color} {kind}" not in present]
        name, answer = rng.choice(absent), "no"
    question = f"Is there a {name} in the image?"
    return _Item(rng.choice(YES_NO_PROMPTS).format(q=question), answer, candidates=("yes", "no"))


def _spatial(scene: Scene, rng: random.Random) -> _Item:
    first, second = rng.sample(scene.shapes, 2)
    truth = rng.random() < 0.5
    # Two shapes sit in different cells, so some relation holds and left/right (or above/below) cannot both hold.
    relation = rng.choice([name for name, holds in RELATIONS.items() if holds(first, second) == truth])
    statement = f"The {first.name} is {relation} the {second.name}"
    target = "true" if truth else "false"
    return _Item(rng.choice(TRUE_FALSE_PROMPTS).format(s=statement), target, candidates=("true", "false"))


def _multiple_choice(scene: Scene, rng: random.Random) -> _Item:
    question, answer, vocabulary = (_attribute_qa if rng.random() < 0.7 else _count_qa)(scene, rng)
    options = _options(answer, vocabulary, rng)
    listed = " ".join(f"({letter}) {option}" for letter, option in zip("abcdefgh", options))
    return _Item(rng.choice(CHOICE_PROMPTS).format(q=question, o=listed), answer, candidates=tuple(options))


def _classification(scene: Scene, rng: random.Random) -> _Item:
    instruction = rng.choice(CLASSIFY_PROMPTS).format(c=", ".join(SHAPES))
    return _Item(instruction, scene.shapes[0].kind, candidates=SHAPES)


@dataclass(frozen=True)
class _Task:
    family: str
    held_out: bool
    build: Callable[[Scene, random.Random], _Item]
    scene: _SceneSpec = _SceneSpec()


# The one place tasks are registered. OCR scenes keep shapes to the top row so the text has the rest.
_TASKS: dict[str, _Task] = {
    "synthetic_captioning": _Task("captioning", False, _captioning),
    "synthetic_vqa": _Task("short_vqa", False, _vqa),
    "synthetic_counting": _Task("short_vqa", False, _counting),
    "synthetic_ocr": _Task("ocr_vqa", False, _ocr, _SceneSpec(0, 2, cells=(0, 1, 2), text=True)),
    "synthetic_question_generation": _Task("question_generation", False, _question_generation),
    "synthetic_yes_no": _Task("binary", True, _yes_no),
    "synthetic_spatial": _Task("binary", True, _spatial, _SceneSpec(min_shapes=2)),
    "synthetic_multiple_choice": _Task("multiple_choice", True, _multiple_choice),
    "synthetic_classification": _Task("classification", True, _classification, _SceneSpec(1, 1)),
}
#: Dataset names of the held-in (trained on) synthetic tasks.
SYNTHETIC_HELD_IN: tuple[str, ...] = tuple(name for name, task in _TASKS.items() if not task.held_out)
#: Dataset names of the held-out (zero-shot only) synthetic tasks: task types no held-in task uses.
SYNTHETIC_HELD_OUT: tuple[str, ...] = tuple(name for name, task in _TASKS.items() if task.held_out)


def _task(name: str) -> _Task:
    if name not in _TASKS:
        raise ValueError(f"Unknown synthetic task {name!r}; known tasks: {', '.join(_TASKS)}.")
    return _TASKS[name]


def _check_arguments(seed: int, image_size: int, index: int = 0) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"`seed` must be an int, got {type(seed).__name__}.")
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"`index` must be an int >= 0, got {index!r}.")
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"`image_size` must be an int >= {MIN_IMAGE_SIZE} (shapes and text stay legible), got {image_size!r}."
        )


def _scene_and_item(task: str, seed: int, index: int, image_size: int) -> tuple[Scene, _Item]:
    spec = _task(task)
    _check_arguments(seed, image_size, index)
    # One stream for scene then phrasing: the whole sample depends on (task, seed, index) only.
    rng = _rng(task, seed, index)
    shapes = _sample_shapes(rng, spec.scene, image_size)
    scene = Scene(image_size, shapes, _sample_text(rng) if spec.scene.text else "")
    return scene, spec.build(scene, rng)


# ----- public API -------------------------------------------------------------------------------------------------
def synthetic_scene(task: str, seed: int, index: int, image_size: int = 64) -> Scene:
    """The scene behind ``synthetic_sample(task, seed, index, image_size)``, for checking targets against it.

    Raises:
        ValueError: unknown task, negative index, or ``image_size`` < 32.
    """
    return _scene_and_item(task, seed, index, image_size)[0]


def synthetic_sample(task: str, seed: int, index: int, image_size: int = 64) -> dict[str, Any]:
    """One unified sample (see `schema.py`) of a synthetic task; the same arguments give byte-identical output.

    Args:
        task: A name from ``SYNTHETIC_HELD_IN`` or ``SYNTHETIC_HELD_OUT``.
        seed: Any int; each seed is its own infinite stream of samples.
        index: Position in the stream (>= 0).
        image_size: Side of the square RGB canvas in pixels (>= 32).

    Returns:
        A validated sample whose single image is ``{"bytes": <PNG>, "path": None}``.

    Raises:
        ValueError: unknown task (the message lists the known ones), negative index, or ``image_size`` < 32.
    """
    scene, item = _scene_and_item(task, seed, index, image_size)
    spec = _TASKS[task]
    return make_sample(
        images=[{"bytes": _png(render_scene(scene)), "path": None}],
        instruction=item.instruction,
        target=item.target,
        candidates=item.candidates,
        ocr_tokens=item.ocr_tokens,
        task_family=spec.family,
        dataset=task,
        held_out=spec.held_out,
        index=index,
    )


def _rows(task: str, seed: int, image_size: int, indices: Iterator[int]) -> Iterator[dict[str, Any]]:
    for index in indices:
        yield synthetic_sample(task, seed, index, image_size)


def synthetic_dataset(task: str, num_samples: int, seed: int = 0, image_size: int = 64) -> datasets.Dataset:
    """A map-style dataset of samples ``0 .. num_samples - 1`` of ``task``, held in memory.

    Args:
        task: A name from ``SYNTHETIC_HELD_IN`` or ``SYNTHETIC_HELD_OUT``.
        num_samples: Number of rows (>= 0). Rows are held in memory (about 1 KB each at 64 px); for very large
            or unbounded amounts use [`synthetic_iterable`].
        seed: Seed of the stream; row ``i`` equals ``synthetic_sample(task, seed, i, image_size)``.
        image_size: Side of the square canvas (>= 32).

    Returns:
        A ``datasets.Dataset`` with ``INSTRUCTION_FEATURES``.
    """
    _task(task)
    _check_arguments(seed, image_size)
    if not isinstance(num_samples, int) or num_samples < 0:
        raise ValueError(f"`num_samples` must be an int >= 0, got {num_samples!r}.")
    rows = list(_rows(task, seed, image_size, iter(range(num_samples))))
    # Column-wise from_dict: one Arrow conversion per column, no cache files written (unlike from_generator).
    columns = {name: [row[name] for row in rows] for name in INSTRUCTION_FEATURES}
    return datasets.Dataset.from_dict(columns, features=INSTRUCTION_FEATURES)


def synthetic_iterable(task: str, seed: int = 0, image_size: int = 64) -> datasets.IterableDataset:
    """An infinite streaming dataset of ``task``: samples 0, 1, 2, ... (the rows of `synthetic_dataset`).

    Use ``.take(n)`` to bound it. Raises ``ValueError`` for an unknown task or ``image_size`` < 32.
    """
    _task(task)
    _check_arguments(seed, image_size)
    return datasets.IterableDataset.from_generator(
        _infinite_rows,
        features=INSTRUCTION_FEATURES,
        gen_kwargs={"task": task, "seed": seed, "image_size": image_size},
    )


def _infinite_rows(task: str, seed: int, image_size: int) -> Iterator[dict[str, Any]]:
    yield from _rows(task, seed, image_size, itertools.count())


def synthetic_mixture(
    tasks: Sequence[str], num_samples_per_task: int, seed: int = 0, image_size: int = 64
) -> dict[str, datasets.Dataset]:
    """One map-style dataset per task, keyed by dataset name (the input of ``mixture.concatenate_mixture``).

    Tasks draw different scenes from the same ``seed`` (the task name is part of each sample's seed).

    Raises:
        ValueError: an unknown or repeated task name (checked before anything is generated).
    """
    if isinstance(tasks, str):
        raise ValueError(f"`tasks` must be a sequence of task names, got the string {tasks!r}.")
    for name in tasks:
        _task(name)
    duplicates = sorted({name for name in tasks if list(tasks).count(name) > 1})
    if duplicates:
        raise ValueError(f"`tasks` names {duplicates} more than once; each task gets one dataset.")
    return {name: synthetic_dataset(name, num_samples_per_task, seed, image_size) for name in tasks}
