"""Row converters: one source row of a registered dataset -> unified samples (`schema.make_sample`).

Converters are few and shared by task shape (captioning, VQA, multiple choice, classification, visual dialog,
conversation, ...); each reads the row through the roles its [`DatasetSpec`] maps onto columns, so every fact about
one dataset lives in its spec (`paper_datasets.py`), not here. Each has the [`Converter`] signature
``(row, row index, spec, options) -> list of samples`` and raises ``ValueError`` naming the column; the registry's
loader adds dataset and row (`schema.BadSampleError`). Rows are read as the Hub stores them: a list kept in one string
(``spec.string_lists``: A-OKVQA's printed ``"['ski', 'skiing']"``, IconQA's comma-joined choices) is decoded, image
columns may hold ``{"bytes", "path"}`` structs, paths or PIL images.

Instructions: for training, a template of the spec's task family sampled from ``(seed, row index)``
(`templates.render_instruction`); with ``zero_shot=True``, the spec's zero-shot prompt, whose ``{question}``,
``{options}`` (written "(a) x (b) y"), ``{context}``, ``{answer}`` and ``{ocr}`` are filled from the row. The paper
gives three (arXiv 2305.06500 §2.2 and its appendix): captioning ``A short image description:``, video QA
``Question: {question} Short answer:`` and ScienceQA ``Context: {context} Question: {question} Options: {options}.
Answer:``. All others are ours, written in the same style; the spec's ``notes`` says which. OCR tokens go before the
prompt as ``"OCR tokens: a, b. "`` (as `templates.render_instruction` does for training) unless the prompt places them
itself with ``{ocr}``; at most the first 30 are written (LAVIS). The Q-Former reads the same text as the LLM (LAVIS).

[`resolve_visdial`] turns the official VisDial v1.0 json (index tables) into the dialog rows `convert_visual_dialog`
reads.
"""

from __future__ import annotations

import ast
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .schema import make_sample
from .spec import PRINTED_LIST, ConvertOptions, DatasetSpec, prompt_fields
from .templates import format_ocr_tokens, format_options, ocr_words, qformer_instruction, render_instruction

__all__ = [
    "convert_captioning",
    "convert_classification",
    "convert_conversation",
    "convert_multiple_choice",
    "convert_question_generation",
    "convert_visual_dialog",
    "convert_vqa",
    "convert_vqa_per_question",
    "resolve_visdial",
]

_SUBSAMPLE_STRIDE = 1024  # template index of the k-th sample of row i: i * stride + k (rows with several samples)


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
    encoding = spec.string_lists.get(column)
    if encoding is not None and isinstance(value, str):
        value = _decode_list(value, encoding, column)
    return value


def _decode_list(text: str, encoding: str, column: str) -> list[Any]:
    """A list stored as one string: its printed Python form (``"['a', 'b']"``) or joined by a separator."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = ast.literal_eval(stripped)  # literals only: never executes code
        except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
            raise ValueError(
                f"`{column}` = {_shorten(text)} looks like a printed list but does not parse: {error}"
            ) from None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{column}` = {_shorten(text)} parses to a {type(value).__name__}, not a list")
        return list(value)
    if encoding == PRINTED_LIST:
        raise ValueError(f"`{column}` = {_shorten(text)} is not the printed form of a list (e.g. \"['a', 'b']\")")
    return [part.strip() for part in text.split(encoding)]


def _shorten(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


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
    """All reference answers (role ``answers``); the single ``answer`` when the row has no (or an empty) list.

    VQAv2 maps both: ``answers`` (the ten annotators' answers) and ``multiple_choice_answer`` as the fallback for
    copies that carry only the latter.
    """
    if _has(spec, "answers"):
        answers = _texts(row, spec, "answers", required=not _has(spec, "answer"))
        if answers or not _has(spec, "answer"):
            return answers
    return [_text(row, spec, "answer")]


def _options_and_index(row: Mapping[str, Any], spec: DatasetSpec) -> tuple[list[str], int]:
    """The options and the right one's index: from ``answer_index`` (an int) or ``answer`` (an option's text)."""
    choices = _texts(row, spec, "options")
    if _has(spec, "answer_index"):
        index = _raw(row, spec, "answer_index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
            raise ValueError(
                f"`{spec.columns['answer_index']}` = {index!r} is not an index into {len(choices)} options"
            )
        return choices, index
    answer = _text(row, spec, "answer")
    if answer not in choices:
        choices = _rejoin(choices, answer, spec.string_lists.get(str(spec.columns["options"])))
    if answer not in choices:
        raise ValueError(f"answer {answer!r} is not one of the options {choices}")
    return choices, choices.index(answer)


def _rejoin(parts: list[str], answer: str, separator: str | None) -> list[str]:
    """Options split on a separator that the right answer itself contains ("1,000"): glue its pieces back.

    The answer is the one option whose text we know, so only its pieces can be restored; any other option with the
    separator inside stays split (IconQA's comma-joined ``choices`` cannot tell them apart).
    """
    if not separator or separator == PRINTED_LIST or separator not in answer:
        return parts
    pieces = [piece.strip() for piece in answer.split(separator)]
    for start in range(len(parts) - len(pieces) + 1):
        if parts[start : start + len(pieces)] == pieces:
            return [*parts[:start], answer, *parts[start + len(pieces) :]]
    return parts


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
        "ocr": ", ".join(ocr_words(ocr)),
    }
    for name in sorted(prompt_fields(prompt)):
        if not values[name]:
            raise ValueError(f"the zero-shot prompt of {spec.name} needs a non-empty `{name}`")
    text = prompt.format(**values)
    block = format_ocr_tokens(ocr)
    if "ocr" in prompt_fields(prompt) or not block:
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
        extra_templates=options.extra_templates,
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
        choices, right = _options_and_index(row, spec)
        answer = choices[right]
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
    choices, right = _options_and_index(row, spec)
    target = choices[right]
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
