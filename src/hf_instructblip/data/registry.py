"""The paper's 26 datasets (arXiv 2305.06500 §2.1, Figure 2) as data, and one loader that turns any of them into
the unified schema.

Every dataset is a [`DatasetSpec`] in `REGISTRY`: its task family (template set), the paper's category and metric,
held-in or held-out, a public Hub copy (or ``None``, with the reason in ``notes``), the Hub splits, how its columns
map onto the roles a converter reads, the inference method and the zero-shot prompt. Converters are few and shared
by task shape (captioning, VQA, multiple choice, classification, visual dialog, conversation, ...); every fact about
one dataset lives in its spec, not in code.

| name               | family              | held     | hub id                           | metric         | inference |
|--------------------|---------------------|----------|----------------------------------|----------------|-----------|
| coco_caption       | captioning          | held-in  | yerevann/coco-karpathy           | cider          | generate  |
| web_capfilt        | captioning          | held-in  | None (BLIP json, see below)      | None           | generate  |
| textcaps           | captioning          | held-in  | lmms-lab/TextCaps                | cider          | generate  |
| vqav2              | short_vqa           | held-in  | Multimodal-Fatima/VQAv2_train    | vqa_accuracy   | generate  |
| okvqa              | knowledge_vqa       | held-in  | Multimodal-Fatima/OK-VQA_train   | vqa_accuracy   | generate  |
| a_okvqa            | multiple_choice     | held-in  | HuggingFaceM4/A-OKVQA            | accuracy       | rank      |
| ocr_vqa            | ocr_vqa             | held-in  | howard-hou/OCR-VQA               | accuracy       | generate  |
| vqav2_qg           | question_generation | held-in  | Multimodal-Fatima/VQAv2_train    | None           | generate  |
| okvqa_qg           | question_generation | held-in  | Multimodal-Fatima/OK-VQA_train   | None           | generate  |
| a_okvqa_qg         | question_generation | held-in  | HuggingFaceM4/A-OKVQA            | None           | generate  |
| llava_detail       | free_form           | held-in  | liuhaotian/LLaVA-Instruct-150K   | None           | generate  |
| llava_reasoning    | free_form           | held-in  | liuhaotian/LLaVA-Instruct-150K   | None           | generate  |
| llava_conversation | free_form           | held-in  | liuhaotian/LLaVA-Instruct-150K   | None           | generate  |
| nocaps             | captioning          | held-out | lmms-lab/NoCaps                  | cider          | generate  |
| flickr30k          | captioning          | held-out | lmms-lab/flickr30k               | cider          | generate  |
| gqa                | short_vqa           | held-out | lmms-lab/GQA                     | accuracy       | generate  |
| vsr                | binary              | held-out | cambridgeltl/vsr_zeroshot        | accuracy       | rank      |
| iconqa             | multiple_choice     | held-out | lmms-lab/ICON-QA                 | accuracy       | rank      |
| textvqa            | ocr_vqa             | held-out | lmms-lab/textvqa                 | vqa_accuracy   | generate  |
| visdial            | visual_dialog       | held-out | None (official json, see below)  | mrr            | rank      |
| hateful_memes      | classification      | held-out | neuralcatcher/hateful_memes      | auc            | rank      |
| vizwiz             | short_vqa           | held-out | lmms-lab/VizWiz-VQA              | vqa_accuracy   | generate  |
| scienceqa          | multiple_choice     | held-out | lmms-lab/ScienceQA, ScienceQA-IMG | accuracy      | rank      |
| msvd_qa            | video_qa            | held-out | None (official json, see below)  | accuracy       | rank      |
| msrvtt_qa          | video_qa            | held-out | None (official json, see below)  | accuracy       | rank      |
| ivqa               | video_qa            | held-out | None (official csv, see below)   | ivqa_accuracy  | generate  |

No public Hub copy (``hub_id=None``; each has a converter for its published raw format, used through
``load_instruction_dataset(name, split, data_files=...)`` or [`convert_dataset`] on your own ``datasets.Dataset``):

* web_capfilt: BLIP's CapFilt captions are published as json lists ``{"url", "caption"}`` outside the Hub
  (storage.googleapis.com); the images are web URLs of CC3M/CC12M/SBU images.
* visdial: the official VisDial v1.0 json keeps questions and answers in shared index tables; [`resolve_visdial`]
  turns it into one row per dialog. ``HuggingFaceM4/VisDial`` exists (parquet) but its columns could not be verified
  offline, and ``jxu124/visdial`` lacks the 100 answer options that MRR needs.
* msvd_qa, msrvtt_qa, ivqa: only the annotations are public (json / csv); the videos are YouTube clips or archives
  you download yourself. Extract frames (the paper samples 4 uniformly, arXiv 2305.06500 §3.1) and add them to every
  row as a ``frames`` column (a list of image paths or images) before converting.

Zero-shot prompts: ``{question}``, ``{options}`` (written "(a) x (b) y"), ``{context}``, ``{answer}`` and ``{ocr}``
are filled from the row. The paper gives three (arXiv 2305.06500 §2.2 and its appendix): captioning ``A short image
description:``, video QA ``Question: {question} Short answer:`` and ScienceQA ``Context: {context} Question:
{question} Options: {options}. Answer:``. All others are ours, written in the same style; the spec's ``notes`` says
which. OCR tokens go before the prompt as ``"OCR tokens: a, b. "`` (as `templates.render_instruction` does for
training) unless the prompt places them itself with ``{ocr}``.

Example:

>>> from hf_instructblip.data.registry import load_instruction_dataset
>>> textvqa = load_instruction_dataset("textvqa", "eval")  # doctest: +SKIP
>>> msvd = load_instruction_dataset("msvd_qa", "eval", data_files="msvd_test_frames.jsonl")  # doctest: +SKIP

The first reads the Hub copy (zero-shot prompts, since TextVQA is held out); the second reads local files in the
published format with an added ``frames`` column.
"""

from __future__ import annotations

import difflib
import logging
import os
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import datasets

from .schema import INSTRUCTION_FEATURES, TASK_FAMILIES, BadSampleError, BadSampleReport, OnBadSample, make_sample
from .templates import format_ocr_tokens, format_options, qformer_instruction, render_instruction

__all__ = [
    "HELD_IN",
    "HELD_OUT",
    "METRICS",
    "REGISTRY",
    "ConvertOptions",
    "DatasetSpec",
    "convert_dataset",
    "convert_rows",
    "get_spec",
    "load_instruction_dataset",
    "resolve_visdial",
]

logger = logging.getLogger(__name__)

#: Metric names used in the registry (the evaluation code implements them).
METRICS: tuple[str, ...] = ("cider", "accuracy", "vqa_accuracy", "auc", "mrr", "ivqa_accuracy")

_SPLITS = ("train", "eval")
_PROMPT_FIELDS = frozenset({"question", "options", "context", "answer", "ocr"})
_SUBSAMPLE_STRIDE = 1024  # template index of the k-th sample of row i: i * stride + k (rows with several samples)

Converter = Callable[[Mapping[str, Any], int, "DatasetSpec", "ConvertOptions"], list[dict[str, Any]]]


# ---------------------------------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------------------------------


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
    """

    seed: int = 0
    zero_shot: bool = False
    image_root: str | os.PathLike | None = None
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None
    answer_candidates: tuple[str, ...] | None = None


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
        row_filter: Column -> allowed values; other rows are not part of the benchmark and are dropped quietly.
        delimiters: Column -> separator, for list-valued columns stored as one string (IconQA's choices).
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
    delimiters: Mapping[str, str] = field(default_factory=dict)
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
        if self.zero_shot_prompt is not None:
            fields = _prompt_fields(self.zero_shot_prompt)
            if fields - _PROMPT_FIELDS:
                raise ValueError(f"{where}: zero-shot prompt uses unknown fields {sorted(fields - _PROMPT_FIELDS)}")


def _prompt_fields(prompt: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Reading one source row (all helpers raise ValueError with a message naming the column; callers add dataset + row)
# ---------------------------------------------------------------------------------------------------------------------


def _has(spec: DatasetSpec, role: str) -> bool:
    return role in spec.columns


def _raw(row: Mapping[str, Any], spec: DatasetSpec, role: str) -> Any:
    """The value of ``role``'s column(s); a tuple of columns gives a list. Missing or null -> ValueError."""
    columns = spec.columns[role]
    if isinstance(columns, tuple):
        return [_column_value(row, spec, column) for column in columns]
    return _column_value(row, spec, columns)


def _column_value(row: Mapping[str, Any], spec: DatasetSpec, column: str) -> Any:
    if column not in row or row[column] is None:
        raise ValueError(f"missing field `{column}`")
    value = row[column]
    separator = spec.delimiters.get(column)
    if separator is not None and isinstance(value, str):
        value = [part.strip() for part in value.split(separator)]
    return value


def _present(row: Mapping[str, Any], spec: DatasetSpec, role: str) -> bool:
    """Whether an optional role is mapped and its column(s) hold a value in this row."""
    columns = spec.columns.get(role)
    if columns is None:
        return False
    return all(row.get(column) is not None for column in (columns if isinstance(columns, tuple) else (columns,)))


def _text(row: Mapping[str, Any], spec: DatasetSpec, role: str, required: bool = True) -> str:
    if not required and not _present(row, spec, role):
        return ""
    if not _has(spec, role):
        raise ValueError(f"the registry maps no column to `{role}`")
    value = _raw(row, spec, role)
    if not isinstance(value, str):
        raise ValueError(f"`{spec.columns[role]}` must be a string, got {type(value).__name__}")
    return value


def _texts(row: Mapping[str, Any], spec: DatasetSpec, role: str, required: bool = True) -> list[str]:
    """A list of strings (a single string becomes a one-element list)."""
    if not required and not _present(row, spec, role):
        return []
    if not _has(spec, role):
        raise ValueError(f"the registry maps no column to `{role}`")
    value = _raw(row, spec, role)
    if isinstance(value, str):
        return [value]
    columns = spec.columns[role]
    if not isinstance(value, Sequence):
        raise ValueError(f"`{columns}` must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"`{columns}`[{i}] must be a string, got {type(item).__name__}")
    return list(value)


def _resolve_image(value: Any, spec: DatasetSpec, options: ConvertOptions) -> Any:
    lookup = options.image_lookup
    if lookup is not None:
        try:
            value = lookup(value) if callable(lookup) else lookup[value]
        except KeyError:
            raise ValueError(f"image id {value!r} is not in image_lookup") from None
    root = options.image_root if options.image_root is not None else spec.image_root
    if root is not None and isinstance(value, str) and value and "://" not in value and not os.path.isabs(value):
        root = os.fspath(root)
        value = f"{root.rstrip('/')}/{value}" if "://" in root else os.path.join(root, value)
    return value


def _images(row: Mapping[str, Any], spec: DatasetSpec, options: ConvertOptions) -> list[Any]:
    """The row's image as a one-element list, or its video frames (role ``frames``)."""
    if _has(spec, "frames"):
        column = spec.columns["frames"]
        if row.get(str(column)) is None:
            raise ValueError(
                f"missing field `{column}`: video datasets need frames extracted from each video (4 uniformly "
                "sampled frames, arXiv 2305.06500 §3.1) and added as a list column"
            )
        frames = _raw(row, spec, "frames")
        if isinstance(frames, (str, bytes)) or not isinstance(frames, Sequence) or not frames:
            raise ValueError(f"`{column}` must be a non-empty list of frames")
        return [_resolve_image(frame, spec, options) for frame in frames]
    return [_resolve_image(_raw(row, spec, "image"), spec, options)]


def _most_common(answers: Sequence[str]) -> str:
    """The most frequent reference answer (ties: the first one given)."""
    return Counter(answers).most_common(1)[0][0] if answers else ""


def _reference_answers(row: Mapping[str, Any], spec: DatasetSpec) -> list[str]:
    if _has(spec, "answers"):
        return _texts(row, spec, "answers")
    return [_text(row, spec, "answer")]


def _option_index(row: Mapping[str, Any], spec: DatasetSpec, choices: Sequence[str]) -> int:
    """Index of the right option: from ``answer_index`` (an int) or ``answer`` (an option's text)."""
    if _has(spec, "answer_index"):
        index = _raw(row, spec, "answer_index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
            raise ValueError(
                f"`{spec.columns['answer_index']}` = {index!r} is not an index into {len(choices)} options"
            )
        return index
    answer = _text(row, spec, "answer")
    if answer not in choices:
        raise ValueError(f"answer {answer!r} is not one of the options {list(choices)}")
    return list(choices).index(answer)


def _label_index(value: Any, candidates: Sequence[str], column: str) -> int:
    if isinstance(value, str) and value in candidates:  # the label given as its name ("yes", "circle")
        return list(candidates).index(value)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value < len(candidates):
        raise ValueError(f"`{column}` = {value!r} is not a label index into {list(candidates)}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Instruction text and the unified sample
# ---------------------------------------------------------------------------------------------------------------------


def _zero_shot_instruction(
    spec: DatasetSpec, question: str, answer: str, options: Sequence[str], context: str, ocr: Sequence[str]
) -> tuple[str, str]:
    if spec.zero_shot_prompt is None:
        raise ValueError(f"{spec.name} has no zero-shot prompt; convert with zero_shot=False")
    prompt = spec.zero_shot_prompt
    values = {
        "question": question.strip(),
        "answer": answer.strip(),
        "options": format_options(options) if options else "",
        "context": context.strip() or "N/A",  # as in Qwen-VL's ScienceQA prompt of the same shape
        "ocr": ", ".join(token.strip() for token in ocr if token.strip()),
    }
    for name in sorted(_prompt_fields(prompt)):
        if not values[name]:
            raise ValueError(f"the zero-shot prompt of {spec.name} needs a non-empty `{name}`")
    text = prompt.format(**values)
    block = format_ocr_tokens(ocr)
    if "ocr" in _prompt_fields(prompt) or not block:
        return text, text
    instruction = f"{block}. {text}"
    return instruction, qformer_instruction(instruction, ocr)


def _instruction(
    spec: DatasetSpec,
    options: ConvertOptions,
    template_index: int,
    *,
    question: str = "",
    answer: str = "",
    choices: Sequence[str] = (),
    context: str = "",
    ocr: Sequence[str] = (),
) -> tuple[str, str]:
    """(LLM instruction, Q-Former text): the zero-shot prompt, or a template sampled from (seed, template_index)."""
    if options.zero_shot:
        return _zero_shot_instruction(spec, question, answer, choices, context, ocr)
    instruction = render_instruction(
        spec.task_family,
        seed=options.seed,
        index=template_index,
        question=question,
        answer=answer,
        options=choices,
        context=context,
        ocr_tokens=ocr,
    )
    return instruction, qformer_instruction(instruction, ocr)


def _sample(
    spec: DatasetSpec,
    options: ConvertOptions,
    row_index: int,
    images: list[Any],
    text: tuple[str, str],
    target: str,
    *,
    candidates: Sequence[str] = (),
    answers: Sequence[str] = (),
    ocr: Sequence[str] = (),
) -> dict[str, Any]:
    if options.answer_candidates is not None:
        candidates = options.answer_candidates
    return make_sample(
        images=images,
        instruction=text[0],
        qformer_text=text[1],
        target=target,
        candidates=candidates,
        ocr_tokens=ocr,
        answers=answers,
        task_family=spec.task_family,
        dataset=spec.name,
        held_out=spec.held_out,
        index=row_index,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Converters, one per task shape
# ---------------------------------------------------------------------------------------------------------------------


def convert_captioning(row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions) -> list[dict]:
    """Caption list (or one caption) -> target = first caption, answers = all captions."""
    images = _images(row, spec, options)
    captions = _texts(row, spec, "captions")
    if not captions:
        raise ValueError(f"`{spec.columns['captions']}` holds no caption")
    ocr = _texts(row, spec, "ocr_tokens", required=False)
    text = _instruction(spec, options, index, ocr=ocr)
    return [_sample(spec, options, index, images, text, captions[0], answers=captions, ocr=ocr)]


def convert_vqa(row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions) -> list[dict]:
    """Question + reference answers -> target = the most frequent answer. Also video QA (role ``frames``)."""
    images = _images(row, spec, options)
    question = _text(row, spec, "question")
    answers = _reference_answers(row, spec)
    ocr = _texts(row, spec, "ocr_tokens", required=False)
    text = _instruction(spec, options, index, question=question, ocr=ocr)
    return [_sample(spec, options, index, images, text, _most_common(answers), answers=answers, ocr=ocr)]


def convert_vqa_per_question(
    row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions
) -> list[dict]:
    """One image with parallel ``questions`` / ``question_answers`` lists (OCR-VQA) -> one sample per question."""
    images = _images(row, spec, options)
    questions = _texts(row, spec, "questions")
    answers = _texts(row, spec, "question_answers")
    if len(questions) != len(answers) or not questions:
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers; need equal, non-zero counts")
    ocr = _texts(row, spec, "ocr_tokens", required=False)
    samples = []
    for k, (question, answer) in enumerate(zip(questions, answers)):
        text = _instruction(spec, options, index * _SUBSAMPLE_STRIDE + k, question=question, ocr=ocr)
        samples.append(_sample(spec, options, index, images, text, answer, answers=[answer], ocr=ocr))
    return samples


def convert_question_generation(
    row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions
) -> list[dict]:
    """VQA row reversed: the template gets the answer, the target is the question."""
    images = _images(row, spec, options)
    question = _text(row, spec, "question")
    if _has(spec, "options"):
        choices = _texts(row, spec, "options")
        answer = choices[_option_index(row, spec, choices)]
    else:
        answer = _most_common(_reference_answers(row, spec))
    text = _instruction(spec, options, index, answer=answer)
    return [_sample(spec, options, index, images, text, question)]


def convert_multiple_choice(
    row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions
) -> list[dict]:
    """Options + right option -> candidates = options, target = the right option's text.

    ``answers`` keeps the direct answers when the spec maps them (A-OKVQA), else the target.
    """
    images = _images(row, spec, options)
    question = _text(row, spec, "question")
    choices = _texts(row, spec, "options")
    target = choices[_option_index(row, spec, choices)]
    context = _text(row, spec, "context", required=False)
    answers = _texts(row, spec, "answers") if _has(spec, "answers") else [target]
    text = _instruction(spec, options, index, question=question, choices=choices, context=context)
    return [_sample(spec, options, index, images, text, target, candidates=choices, answers=answers)]


def convert_classification(
    row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions
) -> list[dict]:
    """Label index into the spec's ``candidates`` (verbaliser or class names) -> target = that candidate."""
    images = _images(row, spec, options)
    label = _label_index(_raw(row, spec, "label"), spec.candidates, str(spec.columns["label"]))
    question = _text(row, spec, "question", required=False)
    ocr = _texts(row, spec, "ocr_tokens", required=False)
    text = _instruction(spec, options, index, question=question, choices=spec.candidates, ocr=ocr)
    target = spec.candidates[label]
    return [_sample(spec, options, index, images, text, target, candidates=spec.candidates, ocr=ocr)]


#: Keys of one dialog round (the official VisDial v1.0 round, with its index tables resolved by `resolve_visdial`).
_ROUND_KEYS = ("question", "answer", "answer_options")


def convert_visual_dialog(
    row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions
) -> list[dict]:
    """One dialog -> one sample per round; context = caption + previous rounds, candidates = the answer options."""
    images = _images(row, spec, options)
    history = [_text(row, spec, "context")]
    rounds = _raw(row, spec, "dialog")
    if isinstance(rounds, (str, bytes)) or not isinstance(rounds, Sequence) or not rounds:
        raise ValueError(f"`{spec.columns['dialog']}` must be a non-empty list of rounds")
    samples = []
    for k, turn in enumerate(rounds):
        if not isinstance(turn, Mapping) or any(key not in turn for key in _ROUND_KEYS):
            raise ValueError(f"dialog round {k} must be a mapping with keys {_ROUND_KEYS}")
        question, answer, choices = turn["question"], turn["answer"], turn["answer_options"]
        if not isinstance(question, str) or not isinstance(answer, str):
            raise ValueError(f"dialog round {k}: question and answer must be strings (use resolve_visdial)")
        context = " ".join(history)
        text = _instruction(spec, options, index * _SUBSAMPLE_STRIDE + k, question=question, context=context)
        samples.append(_sample(spec, options, index, images, text, answer, candidates=choices, answers=[answer]))
        history.append(f"Q: {question} A: {answer}")
    return samples


_IMAGE_MARK = "<image>"


def convert_conversation(row: Mapping[str, Any], index: int, spec: DatasetSpec, options: ConvertOptions) -> list[dict]:
    """LLaVA conversation (alternating human / gpt turns) -> one sample per gpt turn.

    Multi-turn: the previous rounds are concatenated as text before the current user turn (LAVIS has no chat
    template); the ``<image>`` mark is dropped because the query embeddings always come first.
    """
    images = _images(row, spec, options)
    turns = _raw(row, spec, "conversations")
    if isinstance(turns, (str, bytes)) or not isinstance(turns, Sequence) or len(turns) < 2:
        raise ValueError(f"`{spec.columns['conversations']}` must hold at least one human/gpt pair")
    history: list[str] = []
    samples = []
    for k in range(0, len(turns) - 1, 2):
        user, assistant = _turn_text(turns[k], "human", k), _turn_text(turns[k + 1], "gpt", k + 1)
        question = " ".join([*history, user])
        text = _instruction(spec, options, index * _SUBSAMPLE_STRIDE + k // 2, question=question)
        samples.append(_sample(spec, options, index, images, text, assistant))
        history.append(f"Q: {user} A: {assistant}")
    return samples


def _turn_text(turn: Any, speaker: str, k: int) -> str:
    if not isinstance(turn, Mapping) or turn.get("from") != speaker or not isinstance(turn.get("value"), str):
        raise ValueError(f"conversation turn {k} must be {{'from': {speaker!r}, 'value': <string>}}, got {turn!r}")
    return turn["value"].replace(_IMAGE_MARK, "").strip()


# ---------------------------------------------------------------------------------------------------------------------
# The registry (data)
# ---------------------------------------------------------------------------------------------------------------------

_CAPTION_PROMPT = "A short image description:"  # paper
_SHORT_ANSWER_PROMPT = "Question: {question} Short answer:"  # paper (video QA); ours for image QA
_SCIENCEQA_PROMPT = "Context: {context} Question: {question} Options: {options}. Answer:"  # paper
_MC_PROMPT = "Question: {question} Options: {options}. Short answer:"  # ours
_QG_PROMPT = "Given the image, generate a question whose answer is: {answer}. Question:"  # paper's QG template 1

_VQA_COLUMNS = {"image": "image", "question": "question", "answers": "answers"}
_AOKVQA_MC_COLUMNS = {
    "image": "image",
    "question": "question",
    "options": "choices",
    "answer_index": "correct_choice_idx",
    "answers": "direct_answers",
}
_VIDEO_COLUMNS = {"frames": "frames", "question": "question", "answer": "answer"}
_LLAVA_COLUMNS = {"image": "image", "conversations": "conversations"}
_COCO_TRAIN2017 = "http://images.cocodataset.org/train2017"
_FATIMA_NOTE = (
    "Columns image/question/answers (answers: list of 10 strings) are taken from the same uploader's "
    "VQAv2_sample_test / OK-VQA_train cards (same pipeline); this repo's own card was not readable offline."
)
_LLAVA_NOTE = (
    "Hub repo of json files, one per part; images are COCO train2017 file names, resolved against the COCO "
    "server (pass image_root=<your train2017 dir> to read a local copy). Zero-shot prompt '{question}' is ours."
)
_VIDEO_NOTE = (
    "No public Hub copy with videos: the annotations are the authors' json ({question, answer, id, video_id}); "
    "the videos must be downloaded and 4 frames per video extracted into a `frames` list column. Ranking needs the "
    "answer vocabulary: pass answer_candidates=... (LAVIS ranks over its answer list)."
)


def _spec(**kwargs: Any) -> DatasetSpec:
    return DatasetSpec(**kwargs)


def _llava_spec(name: str, data_file: str, note: str) -> DatasetSpec:
    """One of LLaVA-Instruct-150K's three parts: they differ only in their file."""
    return _spec(
        name=name,
        task_family="free_form",
        paper_category="LLaVA-Instruct-150K",
        held_out=False,
        hub_id="liuhaotian/LLaVA-Instruct-150K",
        hub_config=None,
        splits={"train": "train"},
        columns=_LLAVA_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt="{question}",
        convert=convert_conversation,
        hub_data_files={"train": data_file},
        image_root=_COCO_TRAIN2017,
        notes=note + _LLAVA_NOTE,
    )


_HELD_IN_SPECS = (
    _spec(
        name="coco_caption",
        task_family="captioning",
        paper_category="image captioning",
        held_out=False,
        hub_id="yerevann/coco-karpathy",
        hub_config=None,
        splits={"train": "train", "eval": "test"},
        columns={"image": "url", "captions": "sentences"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes="Karpathy split; images are COCO server URLs. LAVIS also trains on the 'restval' split.",
    ),
    _spec(
        name="web_capfilt",
        task_family="captioning",
        paper_category="image captioning",
        held_out=False,
        hub_id=None,
        hub_config=None,
        splits={"train": "train"},
        columns={"image": "url", "captions": "caption"},
        metric=None,
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes=(
            "No Hub copy: BLIP publishes CapFilt (14M synthetic captions by ViT-L) as json lists {'url', 'caption'} "
            "on storage.googleapis.com (ccs_synthetic_filtered_large.json); images are CC3M/CC12M/SBU web URLs. "
            "Trained on only; the paper reports no score."
        ),
    ),
    _spec(
        name="textcaps",
        task_family="captioning",
        paper_category="captioning + reading",
        held_out=False,
        hub_id="lmms-lab/TextCaps",
        hub_config=None,
        splits={"train": "train", "eval": "val"},
        columns={"image": "image", "captions": "caption_str"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes="This Hub copy carries no OCR tokens, so none are added to the instruction.",
    ),
    _spec(
        name="vqav2",
        task_family="short_vqa",
        paper_category="image QA",
        held_out=False,
        hub_id="Multimodal-Fatima/VQAv2_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "HuggingFaceM4/VQAv2 is a loading script (unsupported by datasets>=4) and lmms-lab/VQAv2 has no train "
            "split (its answers are {answer, answer_confidence, answer_id} dicts). Zero-shot prompt is ours. "
            + _FATIMA_NOTE
        ),
    ),
    _spec(
        name="okvqa",
        task_family="knowledge_vqa",
        paper_category="knowledge-grounded QA",
        held_out=False,
        hub_id="Multimodal-Fatima/OK-VQA_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "Card lists image, question, answers (10 strings). Evaluation copies: Multimodal-Fatima/OK-VQA_test, "
            "lmms-lab/OK-VQA (split val2014). OK-VQA is scored with VQA accuracy; the paper's category column says "
            "accuracy. Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="a_okvqa",
        task_family="multiple_choice",
        paper_category="knowledge-grounded QA",
        held_out=False,
        hub_id="HuggingFaceM4/A-OKVQA",
        hub_config=None,
        splits={"train": "train", "eval": "validation"},
        columns=_AOKVQA_MC_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_MC_PROMPT,
        convert=convert_multiple_choice,
        notes=(
            "Multiple-choice form (arXiv 2305.06500 §2.4 down-weights 'A-OKVQA (multiple choice)'); answers keep "
            "the ten direct answers for direct-answer scoring. Test answers are hidden. Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="ocr_vqa",
        task_family="ocr_vqa",
        paper_category="QA + reading (OCR)",
        held_out=False,
        hub_id="howard-hou/OCR-VQA",
        hub_config=None,
        splits={"train": "train", "eval": "test"},
        columns={
            "image": "image",
            "questions": "questions",
            "question_answers": "answers",
            "ocr_tokens": "ocr_tokens",
        },
        metric="accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa_per_question,
        notes="One row per book cover with parallel questions/answers lists: one sample per question. Prompt ours.",
    ),
    _spec(
        name="vqav2_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="Multimodal-Fatima/VQAv2_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        notes="Question generation from VQAv2: the answer is the most frequent reference answer. " + _FATIMA_NOTE,
    ),
    _spec(
        name="okvqa_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="Multimodal-Fatima/OK-VQA_train",
        hub_config=None,
        splits={"train": "train"},
        columns=_VQA_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        notes="Question generation from OKVQA: the answer is the most frequent reference answer.",
    ),
    _spec(
        name="a_okvqa_qg",
        task_family="question_generation",
        paper_category="question generation",
        held_out=False,
        hub_id="HuggingFaceM4/A-OKVQA",
        hub_config=None,
        splits={"train": "train"},
        columns=_AOKVQA_MC_COLUMNS,
        metric=None,
        inference="generate",
        zero_shot_prompt=_QG_PROMPT,
        convert=convert_question_generation,
        notes="Question generation from A-OKVQA: the answer is the correct choice's text.",
    ),
    _llava_spec("llava_detail", "detail_23k.json", "Detailed description part. "),
    _llava_spec("llava_reasoning", "complex_reasoning_77k.json", "Complex reasoning part. "),
    _llava_spec(
        "llava_conversation",
        "conversation_58k.json",
        "Multi-turn conversation part: one sample per assistant turn, earlier rounds as text. ",
    ),
)

_HELD_OUT_SPECS = (
    _spec(
        name="nocaps",
        task_family="captioning",
        paper_category="image captioning",
        held_out=True,
        hub_id="lmms-lab/NoCaps",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "captions": "annotations_captions"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes="Validation split (4,500 images), as in the paper.",
    ),
    _spec(
        name="flickr30k",
        task_family="captioning",
        paper_category="image captioning",
        held_out=True,
        hub_id="lmms-lab/flickr30k",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "image", "captions": "caption"},
        metric="cider",
        inference="generate",
        zero_shot_prompt=_CAPTION_PROMPT,
        convert=convert_captioning,
        notes=(
            "This copy's 'test' split holds all 31,783 images; the paper scores the Karpathy 1K test images: select "
            "them by `filename` (Karpathy's dataset_flickr30k.json) and use convert_dataset."
        ),
    ),
    _spec(
        name="gqa",
        task_family="short_vqa",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="lmms-lab/GQA",
        hub_config="testdev_balanced_instructions",
        splits={"eval": "testdev"},
        columns={"image": "imageId", "question": "question", "answer": "answer"},
        metric="accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        image_table=("testdev_balanced_images", "id", "image"),
        notes=(
            "Images live in a second configuration (testdev_balanced_images: id, image), looked up by imageId "
            "(as lmms-eval does); with local files pass image_lookup. Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="vsr",
        task_family="binary",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="cambridgeltl/vsr_zeroshot",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "image_link", "question": "caption", "label": "label"},
        metric="accuracy",
        inference="rank",
        zero_shot_prompt='Based on the image, is this statement true or false? "{question}" Answer:',
        convert=convert_classification,
        candidates=("false", "true"),
        notes=(
            "Zero-shot split, test file (jsonl: image, image_link, caption, label 0/1, relation, ...). Images are "
            "COCO server URLs (image_link). Verbaliser false/true ranked; zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="iconqa",
        task_family="multiple_choice",
        paper_category="visual reasoning",
        held_out=True,
        hub_id="lmms-lab/ICON-QA",
        hub_config=None,
        splits={"eval": "test"},
        columns={"image": "query_image", "question": "question", "options": "choices", "answer": "answer"},
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_MC_PROMPT,
        convert=convert_multiple_choice,
        row_filter={"ques_type": ("choose_txt",)},
        delimiters={"choices": ","},
        notes=(
            "Multi-text-choice sub-task only (ques_type choose_txt; the paper's 'multi-choice'). choices is one "
            "comma-separated string and answer is the right choice's text (as read by lmms-eval); that the test "
            "split carries answers was not verified. Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="textvqa",
        task_family="ocr_vqa",
        paper_category="QA + reading (OCR)",
        held_out=True,
        hub_id="lmms-lab/textvqa",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "question": "question", "answers": "answers", "ocr_tokens": "ocr_tokens"},
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes="Validation split (5,000 questions). OCR tokens precede the prompt ('OCR tokens: ...'); prompt is ours.",
    ),
    _spec(
        name="visdial",
        task_family="visual_dialog",
        paper_category="visual conversation",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "image", "context": "caption", "dialog": "dialog"},
        metric="mrr",
        inference="rank",
        zero_shot_prompt="Dialog history: {context}\nQuestion: {question} Short answer:",
        convert=convert_visual_dialog,
        notes=(
            "No verifiable Hub copy: the official VisDial v1.0 val json keeps questions/answers in index tables; "
            "resolve_visdial gives one row per dialog (image, caption, dialog rounds with answer_options). "
            "HuggingFaceM4/VisDial exists but its columns were not verifiable offline; jxu124/visdial has no answer "
            "options. One sample per round, ranked over its 100 options. Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="hateful_memes",
        task_family="classification",
        paper_category="image classification",
        held_out=True,
        hub_id="neuralcatcher/hateful_memes",
        hub_config=None,
        splits={"eval": "validation"},
        columns={"image": "img", "label": "label", "ocr_tokens": "text"},
        metric="auc",
        inference="rank",
        zero_shot_prompt='This is an image with: "{ocr}" written on it. Is it hateful? Answer:',
        convert=convert_classification,
        candidates=("no", "yes"),
        hub_data_files={"validation": "dev_seen.jsonl"},
        image_root="hf://datasets/neuralcatcher/hateful_memes",
        notes=(
            "Official Facebook release mirrored as jsonl (id, img, label, text) + img/ folder; val = dev_seen "
            "(500 memes). The meme text is the row's OCR token. AUC over P('yes'); zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="vizwiz",
        task_family="short_vqa",
        paper_category="image QA",
        held_out=True,
        hub_id="lmms-lab/VizWiz-VQA",
        hub_config=None,
        splits={"eval": "val"},
        columns=_VQA_COLUMNS,
        metric="vqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "The paper scores test-dev on the EvalAI server (answers hidden); this registry's eval split is the "
            "public val split (4,319 questions). Zero-shot prompt is ours."
        ),
    ),
    _spec(
        name="scienceqa",
        task_family="multiple_choice",
        paper_category="knowledge-grounded QA",
        held_out=True,
        hub_id="lmms-lab/ScienceQA",
        hub_config="ScienceQA-IMG",
        splits={"eval": "test"},
        columns={
            "image": "image",
            "question": "question",
            "options": "choices",
            "answer_index": "answer",
            "context": "hint",
        },
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SCIENCEQA_PROMPT,
        convert=convert_multiple_choice,
        notes="Image subset, test split (2,017). Paper's prompt; an empty hint becomes 'N/A' (Qwen-VL's convention).",
    ),
    _spec(
        name="msvd_qa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns=_VIDEO_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes="MSVD-QA test_qa.json; video_id maps to a YouTube clip via youtube_mapping.txt. " + _VIDEO_NOTE,
    ),
    _spec(
        name="msrvtt_qa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns=_VIDEO_COLUMNS,
        metric="accuracy",
        inference="rank",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes="MSRVTT-QA test_qa.json (also category_id); video_id N is MSR-VTT's videoN. " + _VIDEO_NOTE,
    ),
    _spec(
        name="ivqa",
        task_family="video_qa",
        paper_category="video QA",
        held_out=True,
        hub_id=None,
        hub_config=None,
        splits={"eval": "test"},
        columns={
            "frames": "frames",
            "question": "question",
            "answers": ("answer1", "answer2", "answer3", "answer4", "answer5"),
        },
        metric="ivqa_accuracy",
        inference="generate",
        zero_shot_prompt=_SHORT_ANSWER_PROMPT,
        convert=convert_vqa,
        notes=(
            "No Hub copy: iVQA (Just Ask) is a csv (video_id, question, answer1..answer5, ...) with YouTube videos; "
            "add a `frames` column (4 frames per clip). Target = most frequent of the five answers; iVQA accuracy "
            "is min(#matching answers / 2, 1)."
        ),
    ),
)

#: Registry name -> spec; held-in first, then held-out in the paper's results order (arXiv 2305.06500 Table 1).
REGISTRY: Mapping[str, DatasetSpec] = {spec.name: spec for spec in (*_HELD_IN_SPECS, *_HELD_OUT_SPECS)}
HELD_IN: tuple[str, ...] = tuple(spec.name for spec in _HELD_IN_SPECS)
HELD_OUT: tuple[str, ...] = tuple(spec.name for spec in _HELD_OUT_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset.

    Raises:
        ValueError: Unknown name; the message lists the registered ones and the closest match.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Registered: {', '.join(REGISTRY)}.") from None


# ---------------------------------------------------------------------------------------------------------------------
# Converting rows and loading
# ---------------------------------------------------------------------------------------------------------------------


def _keep(row: Mapping[str, Any], spec: DatasetSpec) -> bool:
    return all(row.get(column) in allowed for column, allowed in spec.row_filter.items())


def _convert_row(
    row: Mapping[str, Any],
    index: int,
    spec: DatasetSpec,
    options: ConvertOptions,
    on_bad_sample: OnBadSample,
    report: BadSampleReport | None,
) -> list[dict[str, Any]]:
    if not _keep(row, spec):
        return []
    try:
        return spec.convert(row, index, spec, options)
    except ValueError as error:  # BadSampleError is a ValueError; helpers raise plain ValueErrors
        bad = error if isinstance(error, BadSampleError) else BadSampleError(spec.name, index, str(error))
    if on_bad_sample == "raise":
        raise bad
    if report is not None:
        report.add(bad)
    else:
        logger.warning("skipped %s", bad)
    return []


def convert_rows(
    rows: Iterable[Mapping[str, Any]],
    spec: DatasetSpec,
    *,
    seed: int = 0,
    zero_shot: bool = False,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Convert source rows of ``spec``'s dataset into unified samples (several per row where a row holds several).

    Args:
        rows: Rows in the dataset's published schema (dicts, or a ``datasets.Dataset`` / ``IterableDataset``).
        spec: The dataset's spec (`get_spec`).
        seed: Template-sampling seed (training instructions).
        zero_shot: Use the spec's zero-shot prompt instead of a sampled template.
        on_bad_sample: ``"raise"``: the first bad row raises `BadSampleError` naming dataset and row;
            ``"skip"``: bad rows are dropped and counted in ``report`` (logged when ``report`` is None).
        report: Collects skipped rows.
        image_root, image_lookup, answer_candidates: See [`ConvertOptions`].

    Yields:
        Validated samples with the keys of `schema.INSTRUCTION_FEATURES`.
    """
    options = ConvertOptions(
        seed=seed,
        zero_shot=zero_shot,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=tuple(answer_candidates) if answer_candidates is not None else None,
    )
    for index, row in enumerate(rows):
        yield from _convert_row(row, index, spec, options, on_bad_sample, report)


def _batch_rows(batch: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    columns = list(batch)
    size = len(batch[columns[0]]) if columns else 0
    return [{column: batch[column][i] for column in columns} for i in range(size)]


def _batch_converter(spec: DatasetSpec, options: ConvertOptions, on_bad_sample: OnBadSample, report):
    def convert_batch(batch: Mapping[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in INSTRUCTION_FEATURES}
        for row, index in zip(_batch_rows(batch), indices):
            for sample in _convert_row(row, index, spec, options, on_bad_sample, report):
                for key in out:
                    out[key].append(sample[key])
        return out

    return convert_batch


def _generate_samples(source, spec: DatasetSpec, options: ConvertOptions, on_bad_sample: OnBadSample, report):
    for index, row in enumerate(source):
        yield from _convert_row(row, index, spec, options, on_bad_sample, report)


def _undecoded(source):
    """Source with top-level Image columns left undecoded ({"bytes", "path"}): no PIL round trip per row."""
    features = getattr(source, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            source = source.cast_column(name, datasets.Image(decode=False))
    return source


def convert_dataset(
    source: datasets.Dataset | datasets.IterableDataset,
    spec: DatasetSpec | str,
    *,
    seed: int = 0,
    zero_shot: bool | None = None,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Convert a ``datasets.Dataset`` (or ``IterableDataset``) in a registered dataset's schema.

    Use it for data you loaded or filtered yourself (e.g. Flickr30K's Karpathy 1K test subset). Arguments as in
    [`load_instruction_dataset`]. Map-style results are cached by ``datasets`` unless a ``report`` is given (a cached
    result would not count skipped rows again).
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    options = ConvertOptions(
        seed=seed,
        zero_shot=spec.held_out if zero_shot is None else zero_shot,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=tuple(answer_candidates) if answer_candidates is not None else None,
    )
    source = _undecoded(source)
    if isinstance(source, datasets.IterableDataset):
        return datasets.IterableDataset.from_generator(
            _generate_samples,
            features=INSTRUCTION_FEATURES,
            gen_kwargs={
                "source": source,
                "spec": spec,
                "options": options,
                "on_bad_sample": on_bad_sample,
                "report": report,
            },
        )
    return source.map(
        _batch_converter(spec, options, on_bad_sample, report),
        batched=True,
        with_indices=True,
        remove_columns=source.column_names,
        features=INSTRUCTION_FEATURES,
        load_from_cache_file=False if report is not None else None,
        desc=f"Converting {spec.name}",
    )


_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _builder_for(data_files: Any) -> str:
    first = data_files
    while not isinstance(first, (str, os.PathLike)):
        if isinstance(first, Mapping):
            first = next(iter(first.values()))
        elif isinstance(first, Sequence) and first:
            first = first[0]
        else:
            raise ValueError(f"cannot read data_files={data_files!r}; pass path=<builder> (json, csv, parquet, ...)")
    suffix = os.path.splitext(os.fspath(first))[1].lower()
    if suffix not in _BUILDERS:
        raise ValueError(f"no builder known for {suffix!r} files; pass path=<builder> (json, csv, parquet, ...)")
    return _BUILDERS[suffix]


def _load_local(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]):
    data_files = load_kwargs.get("data_files")
    builder = load_kwargs.pop("path", None) or _builder_for(data_files)
    local_split = "train"
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise ValueError(f"data_files has splits {list(data_files)}, not {split!r}")
        local_split = split
    return datasets.load_dataset(builder, split=local_split, streaming=streaming, **load_kwargs)


def _load_hub(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]):
    if spec.hub_id is None:
        raise ValueError(
            f"{spec.name} has no public Hub copy ({spec.notes}) Pass data_files=<your local files> "
            "(json/jsonl/csv/parquet in the published format) or convert your own dataset with convert_dataset."
        )
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has splits {list(spec.splits)} (ours), not {split!r}")
    hub_split = spec.splits[split]
    if hub_split in spec.hub_data_files:
        load_kwargs.setdefault("data_files", {hub_split: spec.hub_data_files[hub_split]})
    return datasets.load_dataset(spec.hub_id, spec.hub_config, split=hub_split, streaming=streaming, **load_kwargs)


def _hub_image_lookup(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]) -> dict:
    config, id_column, image_column = spec.image_table  # type: ignore[misc]
    table = datasets.load_dataset(spec.hub_id, config, split=spec.splits[split], streaming=streaming, **load_kwargs)
    return {row[id_column]: row[image_column] for row in _undecoded(table)}


def load_instruction_dataset(
    name: str,
    split: str = "train",
    *,
    streaming: bool = False,
    seed: int = 0,
    zero_shot: bool | None = None,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
    **load_kwargs: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load a registered dataset through ``datasets.load_dataset`` and convert it to the unified schema.

    Args:
        name: Registry name (`HELD_IN`, `HELD_OUT`).
        split: ``"train"`` or ``"eval"`` (mapped to the Hub split by the spec).
        streaming: Return an ``IterableDataset`` (nothing is downloaded up front).
        seed: Template-sampling seed.
        zero_shot: Instruction = the zero-shot prompt; default True for held-out datasets, False for held-in ones.
        on_bad_sample: ``"raise"`` or ``"skip"`` (see [`convert_rows`]).
        report: Collects skipped rows (``on_bad_sample="skip"``).
        image_root: Prefix for relative image paths (overrides the spec's, e.g. a local COCO directory).
        image_lookup: Image id -> image, for datasets that reference images by id (GQA).
        answer_candidates: Candidates stored in every sample (answer vocabulary for ranking video QA).
        **load_kwargs: Passed to ``datasets.load_dataset``. With ``data_files`` (or ``path=<builder>``) the local
            files are read with the ``json`` / ``csv`` / ``parquet`` builder (or the one given) instead of the Hub
            id; a dict ``data_files`` must contain ``split``.

    Returns:
        ``datasets.Dataset`` (or ``IterableDataset``) with features `schema.INSTRUCTION_FEATURES`.

    Raises:
        ValueError: Unknown dataset or split; no Hub copy and no ``data_files``; GQA-style id images without a lookup.
        BadSampleError: A bad row, when ``on_bad_sample="raise"``.
    """
    spec = get_spec(name)
    local = "data_files" in load_kwargs or "path" in load_kwargs
    if spec.image_table is not None and image_lookup is None:
        if local:
            raise ValueError(
                f"{spec.name} rows reference images by id (`{spec.columns['image']}`); pass image_lookup="
                "<mapping or callable id -> image> when loading local files"
            )
        image_lookup = _hub_image_lookup(spec, split, streaming, dict(load_kwargs))
    source = (_load_local if local else _load_hub)(spec, split, streaming, dict(load_kwargs))
    return convert_dataset(
        source,
        spec,
        seed=seed,
        zero_shot=zero_shot,
        on_bad_sample=on_bad_sample,
        report=report,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=answer_candidates,
    )


def resolve_visdial(
    official: Mapping[str, Any], image_name: str = "VisualDialog_val2018_{image_id:012d}.jpg"
) -> list[dict[str, Any]]:
    """Turn an official VisDial v1.0 json (``{"data": {"questions", "answers", "dialogs"}}``) into dialog rows.

    Args:
        official: The parsed json (questions and answers are index tables shared by all dialogs).
        image_name: File name pattern of the images (the official val images by default); joined with
            ``image_root`` at conversion time.

    Returns:
        One row per dialog: ``{"image_id", "image", "caption", "dialog": [{"question", "answer",
        "answer_options", "gt_index"}, ...]}`` with every index replaced by its text, ready for the ``visdial`` spec.

    Raises:
        ValueError: If the json lacks the official keys.
    """
    try:
        data = official["data"]
        questions, answers, dialogs = data["questions"], data["answers"], data["dialogs"]
    except (KeyError, TypeError):
        raise ValueError("not a VisDial v1.0 json: expected {'data': {'questions', 'answers', 'dialogs'}}") from None
    rows = []
    for dialog in dialogs:
        rounds = [
            {
                "question": questions[turn["question"]],
                "answer": answers[turn["answer"]] if "answer" in turn else "",
                "answer_options": [answers[i] for i in turn.get("answer_options", [])],
                "gt_index": turn.get("gt_index"),
            }
            for turn in dialog["dialog"]
        ]
        image = image_name.format(image_id=dialog["image_id"])
        rows.append({"image_id": dialog["image_id"], "image": image, "caption": dialog["caption"], "dialog": rounds})
    return rows
