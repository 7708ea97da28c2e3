"""Instruction templates for every task family of InstructBLIP, and seeded per-example sampling.

What it holds: `TEMPLATES`, the templates each task family of `schema.TASK_FAMILIES` samples from by default, written
as plain data at the top of this module (one block per family; the paper's ``{Question}``/``{Answer}`` are written
``{question}``/``{answer}`` here):

* where the paper publishes its templates (arXiv 2305.06500 appendix, instruction template table), exactly those,
  verbatim: the 13 captioning templates; the 10 VQA templates, shared by the held-in VQA datasets (VQAv2, OKVQA,
  OCR-VQA: families ``short_vqa``, ``knowledge_vqa``, ``ocr_vqa``); the 6 question-generation templates, the sixth
  with the paper's typo ("generate an question") kept, so that the training text is the paper's;
* LLaVA-Instruct-150K (``free_form``): the user turn as it is, the single template ``{question}`` (arXiv
  2305.06500 §2.1: no additional templates, the data is already instructions; LAVIS feeds the turns unchanged);
* the families for which the paper publishes none (multiple choice, binary, classification, video QA, visual
  dialog): 10-15 of ours in the paper's style; video QA's second is the paper's zero-shot prompt
  ``Question: {question} Short answer:``.

`EXTRA_TEMPLATES` holds more wordings of ours for the VQA, question-generation and free-form families. They are
used only when asked for (``extra_templates=True`` in `sample_template` / `render_instruction`, and in the data
loaders that call them), and are then drawn together with the defaults.

Placeholder contract (`TEMPLATE_FIELDS`); every template of a family uses exactly its family's fields, so whether a
row renders never depends on which template the seed picks:

| family                                                  | fields                   |
|---------------------------------------------------------|--------------------------|
| captioning                                              | none                     |
| short_vqa, knowledge_vqa, ocr_vqa, video_qa             | ``{question}``           |
| question_generation                                     | ``{answer}``             |
| multiple_choice                                         | ``{question} {options}`` |
| binary (``{question}``: yes/no question or statement)   | ``{question}``           |
| classification (``{options}``: the class names)         | ``{options}``            |
| visual_dialog (``{context}``: previous rounds as text)  | ``{context} {question}`` |
| free_form (LLaVA-Instruct; ``{question}``: user turn)   | ``{question}``           |

``{options}`` is filled with `format_options` ("(a) red (b) blue"). Fields a family does not use are ignored, so a
converter may pass the same keyword arguments for every family.

Short-answer bias (arXiv 2305.06500 §2.1): the families in `SHORT_ANSWER_FAMILIES` mix templates that ask for a
short answer ("short", "briefly", "a few words", "no more than three words", "one word") with templates that do not,
so the model ties brevity to the instruction instead of always answering briefly. The paper's 10 VQA templates
already do: 3, 5, 6, 7, 8 and 10 ask for a short answer, 1, 2, 4 and 9 do not; our families and the extra
templates keep such a mix too. Each block says which are which. Captioning is not in that set (its evaluation
generates up to 80 tokens), but the paper's own captioning templates already mix "short"/"briefly" wordings with
plain ones.

OCR tokens (arXiv 2305.06500 §2.1: "OCR tokens are added to the instruction after the phrase 'OCR tokens:'"): the
paper's template table says the phrase comes right after the image query embeddings, i.e. *before* the templated
instruction; the InstructBLIP-format TextVQA prompts used by later evaluation code start with "OCR tokens: " and end
with "Question: ... Short answer:". `render_instruction` therefore builds ``"OCR tokens: a, b, c. <instruction>"``,
which also keeps the answer cue ("Short answer:") next to the response. At most the first `MAX_OCR_TOKENS` (30)
tokens are written, as LAVIS does (``', '.join(samples['ocr_tokens'][i][:30])`` in `blip2_vicuna_instruct.py` /
`blip2_t5_instruct.py`). The Q-Former reads the same text as the LLM, OCR tokens included (`qformer_instruction`
returns the instruction unchanged by default): LAVIS tokenises one ``text_input`` for both (its code to strip the OCR
tokens from the Q-Former's text is commented out); ``include_ocr=False`` gives the bare instruction instead.

Sampling: `sample_template` picks ``pool[k]`` with ``k = blake2b(f"{seed}/{index}") mod len(pool)``, where ``pool``
is ``TEMPLATES[family]`` (followed by ``EXTRA_TEMPLATES[family]`` with ``extra_templates=True``): a pure function of
``(seed, index)``, uniform over the pool, independent of call order, worker count and process, and stable across
Python and NumPy versions (a `numpy.random.Generator` stream is not promised to be).

Example:

>>> from hf_instructblip.data.templates import render_instruction, qformer_instruction
>>> ocr = ["Jane", "Austen"]
>>> text = render_instruction("ocr_vqa", seed=0, index=3, question="Who wrote this book?", ocr_tokens=ocr)
>>> text.startswith("OCR tokens: Jane, Austen. ")
True
>>> qformer_instruction(text, ocr) == text  # the Q-Former reads what the LLM reads (LAVIS)
True
>>> "OCR" in qformer_instruction(text, ocr, include_ocr=False)
False
"""

from __future__ import annotations

import hashlib
import operator
import string
from collections.abc import Sequence

__all__ = [
    "EXTRA_TEMPLATES",
    "MAX_OCR_TOKENS",
    "SHORT_ANSWER_FAMILIES",
    "TEMPLATES",
    "TEMPLATE_FIELDS",
    "format_ocr_tokens",
    "format_options",
    "ocr_words",
    "qformer_instruction",
    "render_instruction",
    "sample_template",
    "template_pool",
]

# ---------------------------------------------------------------------------------------------------------------------
# The templates (data). Order inside a family is part of the seeded sampling: append new templates, do not reorder.
# ---------------------------------------------------------------------------------------------------------------------

# COCO Caption, Web CapFilt, TextCaps, NoCaps, Flickr30K. The paper's 13 templates, verbatim.
# Short wordings: 1, 2, 5, 8, 9, 10, 11, 12, 13; plain: 3, 4, 6, 7.
_CAPTIONING = (
    "A short image caption:",
    "A short image description:",
    "A photo of",
    "An image that shows",
    "Write a short description for the image.",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)

# The paper's 10 VQA templates, verbatim: every held-in VQA dataset (VQAv2, OKVQA, OCR-VQA) samples from these, and so
# do the held-out VQA datasets (GQA, VizWiz, TextVQA) when trained on.
# Short: 3, 5, 6, 7, 8, 10; plain: 1, 2, 4, 9.
_PAPER_VQA = (
    "{question}",
    "Question: {question}",
    "{question} A short answer to the question is",
    "Q: {question} A:",
    "Question: {question} Short answer:",
    "Given the image, answer the following question with no more than three words. {question}",
    "Based on the image, respond to this question with a short answer: {question}. Answer:",
    "Use the provided image to answer the question: {question} Provide your answer as short as possible:",
    'What is the answer to the following question? "{question}"',
    'The question "{question}" can be answered using the image. A short answer is',
)

# VQG versions of VQAv2, OKVQA, A-OKVQA. The paper's 6 templates, verbatim, typo included: the sixth reads
# "generate an question" in the paper's template table.
_QUESTION_GENERATION = (
    "Given the image, generate a question whose answer is: {answer}. Question:",
    "Based on the image, provide a question with the answer: {answer}. Question:",
    'Given the visual representation, create a question for which the answer is "{answer}".',
    "From the image provided, craft a question that leads to the reply: {answer}. Question:",
    "Considering the picture, come up with a question where the answer is: {answer}.",
    "Taking the image into account, generate an question that has the answer: {answer}. Question:",
)

# A-OKVQA (multiple choice), ScienceQA, IconQA. The target is the text of the right option, not its letter.
# Template 1 is the paper's ScienceQA zero-shot prompt without its "Context:" part.
_MULTIPLE_CHOICE = (
    "Question: {question} Options: {options}. Answer:",
    "{question} Options: {options}",
    "{question} Choose one of the following: {options}",
    "Answer the question by choosing from the options. Question: {question} Options: {options}. Answer:",
    'Based on the image, which of the following answers the question "{question}"? {options}',
    "Question: {question} Choices: {options}. Pick the correct choice:",
    "Look at the image and select the best answer to the question. {question} {options}",
    "{question} Select the correct answer from: {options}. Answer:",
    "Given the image, choose the option that answers the question. Question: {question} Options: {options}",
    "Here is a question about the image: {question} The candidate answers are {options}. The correct answer is",
    "Read the question and the options, then answer using the image. Question: {question} Options: {options}. "
    "Answer with one of the options:",
    "Q: {question} Options: {options} A:",
)

# Yes/no questions (VQAv2 yes/no) and true/false statements (VSR, SNLI-VE-style); the answer is one word of the
# verbaliser (yes/true, no/false), so every template reads for both a question and a statement.
# Short: 6, 7, 9, 10; plain: 1, 2, 3, 4, 5, 8, 11, 12.
_BINARY = (
    "{question}",
    "{question} Answer:",
    "Based on the image, answer yes or no, or true or false: {question}",
    "Look at the image. {question} Respond with yes/no or true/false.",
    "Does the image support the following? {question} Answer:",
    "Decide from the image: {question} Answer with one word:",
    "Given the image, respond to the following with a single word (yes/no or true/false). {question}",
    "{question} Answer based on the image with yes/no or true/false:",
    "Using the picture, judge the following. {question} Short answer:",
    'Consider the image and the following: "{question}" Your one-word verdict:',
    "According to the image, what is the right response to the following: {question}",
    "Verify with the image: {question} Answer:",
)

# HatefulMemes and user classification sets; {options} are the class names. Text in the image (a meme's caption)
# goes in as OCR tokens.
_CLASSIFICATION = (
    "What is this image of? Options: {options}. Answer:",
    "Classify the image into one of the following categories: {options}.",
    "Which of these classes best describes the image? {options}",
    "Choose the label that fits the image. Labels: {options}. Label:",
    "Categories: {options}. The image belongs to the category",
    "Look at the image and pick the right class from: {options}. Answer:",
    "Assign this picture to one of the following classes: {options}. Class:",
    "Given the options {options}, which one describes the image best?",
    "Select the category of the image. Options: {options}",
    "Here is an image. Its category, one of {options}, is",
    "From the list {options}, which label applies to this image?",
    "Identify the class of the image. Possible classes: {options}. Answer:",
)

# MSVD-QA, MSRVTT-QA, iVQA (4 frames, query outputs concatenated). Template 2 is the paper's zero-shot prompt.
# Short: 2, 6, 7, 9, 10, 12; plain: 1, 3, 4, 5, 8, 11.
_VIDEO_QA = (
    "{question}",
    "Question: {question} Short answer:",
    "Question: {question} Answer:",
    "Watch the video and answer the question: {question}",
    "Based on the video, answer the following question: {question}",
    "Given the video, answer the following question with no more than three words. {question}",
    "Based on what happens in the video, respond to this question with a short answer: {question}. Answer:",
    "Q: {question} A:",
    'The question "{question}" is about the video clip. A short answer is',
    "Use the frames of the video to answer the question: {question} Provide your answer as short as possible:",
    'What is the answer to the following question about the video? "{question}"',
    "Looking at the video, briefly answer: {question}",
)

# Visual Dialog: {context} holds the previous rounds as text (the caption counts as round 0, so it is never empty).
_VISUAL_DIALOG = (
    "{context} Question: {question} Answer:",
    "Dialog history: {context} Question: {question} Answer:",
    "Here is a conversation about the image. {context} Continue it by answering: {question}",
    "{context} Q: {question} A:",
    "Conversation so far: {context} Based on the image and the conversation, answer the next question: {question}",
    "Given the image and the previous dialog: {context} Answer the follow-up question: {question}",
    "Previous rounds: {context} Next question: {question} Answer:",
    "Read the dialog about the image, then answer the last question. {context} {question}",
    "Context: {context} Question: {question} Answer:",
    "Chat history: {context} Now answer this question about the image: {question}",
    "We are talking about this image. So far: {context} My next question: {question} Your answer:",
    "Earlier questions and answers: {context} Taking them into account, respond to: {question}",
)

# LLaVA-Instruct-150K (detailed description, complex reasoning, conversation): the user turn as it is, no template
# (arXiv 2305.06500 §2.1: it "is naturally structured in the instruction format").
_FREE_FORM = ("{question}",)

# ----- extra templates (ours), only with extra_templates=True; drawn together with the family's defaults -----------

# VQAv2, VizWiz, GQA: 2 plain wordings (the paper's 10 hold 6 short ones).
_EXTRA_SHORT_VQA = (
    "Look at the image and answer the question: {question}",
    "Answer the following question about the image. {question} Answer:",
)

# OKVQA, A-OKVQA (open-ended): questions that need knowledge beyond the pixels. Short: 3, 4, 5, 6, 7; plain: 1, 2,
# 8, 9.
_EXTRA_KNOWLEDGE_VQA = (
    "Question: {question} Answer:",
    "Using the image and your general knowledge, answer the question: {question}",
    "Based on the image and what you know about the world, respond to this question with a short answer: {question}. "
    "Answer:",
    "Combine what you see in the picture with common sense to answer: {question} Answer briefly:",
    'The question "{question}" needs both the image and outside knowledge. A short answer is',
    'What is the answer to the following question about the image? "{question}" Answer in a few words.',
    "Use the image and your knowledge of the world to answer the question: {question} "
    "Provide your answer as short as possible:",
    "Answer the following question, which may need knowledge beyond what the image shows: {question}",
    "Think about the image and the facts that relate to it, then answer: {question}",
)

# OCR-VQA, TextVQA: the answer is usually text written in the image. Short: 4, 5, 6, 7, 8; plain: 1, 2, 3, 9.
_EXTRA_OCR_VQA = (
    "Question: {question} Answer:",
    "Read the text in the image to answer the question: {question}",
    "The answer may be written in the image. {question}",
    "Based on the text in the image, respond to this question with a short answer: {question}. Answer:",
    "Look at the words and numbers in the picture and answer: {question} Answer in a few words:",
    "Use the text visible in the image to answer the question: {question} Provide your answer as short as possible:",
    'The question "{question}" can be answered by reading the image. A short answer is',
    "Given the image, answer the following question with no more than three words, using any text it contains. "
    "{question}",
    "Answer the following question using the text shown in the image: {question}",
)

# Question generation: 6 more in the style of the paper's.
_EXTRA_QUESTION_GENERATION = (
    'Write a question about the image whose answer is "{answer}".',
    "Look at the image and ask a question that can be answered with: {answer}. Question:",
    "Generate a question about this picture. The answer to your question should be: {answer}. Question:",
    "Answer: {answer}. What question about the image has this answer? Question:",
    'Using the photo, formulate a question to which the correct reply is "{answer}".',
    "Pose a question about the scene in the image that is answered by: {answer}. Question:",
)

# LLaVA-Instruct: light wrappers that neither ask for brevity nor for detail.
_EXTRA_FREE_FORM = (
    "Look at the image and respond to the following. {question}",
    "{question} Base your response on the image.",
    "User request: {question} Response:",
    "Instruction: {question} Response:",
    "Here is a request about the image: {question} Please respond.",
    "Using the image, address the following: {question}",
    "Q: {question} A:",
    "Read the instruction and answer it using the picture. {question}",
    "{question} Answer according to what you see in the image:",
    "Considering the image, reply to this: {question}",
    "Respond to the user's message about the image. User: {question} Assistant:",
)

#: Task family (every name in `schema.TASK_FAMILIES`) -> the templates it samples from by default (the paper's
#: where it publishes them; see the module docstring).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "captioning": _CAPTIONING,
    "short_vqa": _PAPER_VQA,
    "knowledge_vqa": _PAPER_VQA,
    "ocr_vqa": _PAPER_VQA,
    "question_generation": _QUESTION_GENERATION,
    "multiple_choice": _MULTIPLE_CHOICE,
    "binary": _BINARY,
    "classification": _CLASSIFICATION,
    "video_qa": _VIDEO_QA,
    "visual_dialog": _VISUAL_DIALOG,
    "free_form": _FREE_FORM,
}

#: Task family -> more templates of ours, drawn together with `TEMPLATES` only with ``extra_templates=True``.
EXTRA_TEMPLATES: dict[str, tuple[str, ...]] = {
    "short_vqa": _EXTRA_SHORT_VQA,
    "knowledge_vqa": _EXTRA_KNOWLEDGE_VQA,
    "ocr_vqa": _EXTRA_OCR_VQA,
    "question_generation": _EXTRA_QUESTION_GENERATION,
    "free_form": _EXTRA_FREE_FORM,
}

#: Task family -> the placeholders its templates use (all of its templates use all of them).
TEMPLATE_FIELDS: dict[str, frozenset[str]] = {
    "captioning": frozenset(),
    "short_vqa": frozenset({"question"}),
    "knowledge_vqa": frozenset({"question"}),
    "ocr_vqa": frozenset({"question"}),
    "question_generation": frozenset({"answer"}),
    "multiple_choice": frozenset({"question", "options"}),
    "binary": frozenset({"question"}),
    "classification": frozenset({"options"}),
    "video_qa": frozenset({"question"}),
    "visual_dialog": frozenset({"context", "question"}),
    "free_form": frozenset({"question"}),
}

#: Families whose datasets favour short (one to three word) open-ended answers; their templates mix short-answer
#: wordings with plain ones. Multiple choice and classification answer with an option's text (ranked, any length).
SHORT_ANSWER_FAMILIES: frozenset[str] = frozenset({"short_vqa", "knowledge_vqa", "ocr_vqa", "video_qa", "binary"})

#: OCR tokens written into an instruction, at most (LAVIS: ``samples['ocr_tokens'][i][:30]``).
MAX_OCR_TOKENS = 30

_OCR_PHRASE = "OCR tokens:"
_OCR_SEPARATOR = ". "  # between the OCR block and the instruction


def template_pool(family: str, *, extra_templates: bool = False) -> tuple[str, ...]:
    """The templates `sample_template` draws from for ``family``, in order.

    Args:
        family: A task family (a key of `TEMPLATES`).
        extra_templates: Also our `EXTRA_TEMPLATES` of the family, after its default ones.

    Returns:
        ``TEMPLATES[family]``, followed by ``EXTRA_TEMPLATES[family]`` (if any) with ``extra_templates=True``.

    Raises:
        ValueError: If ``family`` is unknown (the message lists the known families).
    """
    try:
        templates = TEMPLATES[family]
    except KeyError:
        raise ValueError(f"unknown task family {family!r}; known families: {', '.join(TEMPLATES)}") from None
    return templates + EXTRA_TEMPLATES.get(family, ()) if extra_templates else templates


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _option_label(i: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa": class lists (classification) can exceed 26 entries."""
    label = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        label = chr(ord("a") + rest) + label
    return label


def format_options(options: Sequence[str]) -> str:
    """Write answer options the ScienceQA way (arXiv 2305.06500 appendix): ``"(a) red (b) blue (c) green"``.

    Args:
        options: The candidate answers, in order. Surrounding whitespace is stripped.

    Returns:
        The options with letter labels, separated by single spaces; ``""`` for no options.

    Raises:
        ValueError: If ``options`` is a single string or an option is empty.
    """
    if isinstance(options, str):
        raise ValueError(f"options must be a sequence of strings, got the single string {options!r}")
    parts = []
    for i, option in enumerate(options):
        text = option.strip()
        if not text:
            raise ValueError(f"option {i} is empty (options: {list(options)!r})")
        parts.append(f"({_option_label(i)}) {text}")
    return " ".join(parts)


def ocr_words(tokens: Sequence[str], max_tokens: int | None = MAX_OCR_TOKENS) -> list[str]:
    """The OCR tokens an instruction shows: stripped, empty ones dropped, the first ``max_tokens`` kept.

    Args:
        tokens: The OCR tokens of the image, in reading order. Whitespace is stripped; empty tokens are dropped
            (OCR engines emit them for blank boxes).
        max_tokens: How many to keep (default 30, as LAVIS); ``None`` keeps all.

    Raises:
        ValueError: If ``tokens`` is a single string (pass a list of tokens), or ``max_tokens`` < 1.
    """
    if isinstance(tokens, str):
        raise ValueError(f"ocr_tokens must be a sequence of strings, got the single string {tokens!r}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 (or None: all), got {max_tokens}")
    words = [token.strip() for token in tokens if token.strip()]
    return words if max_tokens is None else words[:max_tokens]


def format_ocr_tokens(tokens: Sequence[str], max_tokens: int | None = MAX_OCR_TOKENS) -> str:
    """Write OCR tokens after the paper's phrase: ``"OCR tokens: tok1, tok2, tok3"``.

    Args:
        tokens: The OCR tokens of the image, in reading order (cleaned and capped by `ocr_words`).
        max_tokens: How many to write at most (default `MAX_OCR_TOKENS`, 30, as LAVIS); ``None`` writes all.

    Returns:
        The OCR block, or ``""`` when no non-empty token remains.

    Raises:
        ValueError: If ``tokens`` is a single string (pass a list of tokens).
    """
    words = ocr_words(tokens, max_tokens)
    return f"{_OCR_PHRASE} {', '.join(words)}" if words else ""


def sample_template(family: str, seed: int, index: int, *, extra_templates: bool = False) -> str:
    """Pick one template of ``family``, uniformly, as a pure function of ``(seed, index)``.

    Args:
        family: A task family (a key of `TEMPLATES`).
        seed: The run's data seed; any integer.
        index: The example's index in its dataset (or any per-example integer); any integer.
        extra_templates: Draw from the family's default templates and our `EXTRA_TEMPLATES` (see `template_pool`);
            by default from the defaults only (the paper's, where it publishes them).

    Returns:
        The template string, placeholders unfilled.

    Raises:
        ValueError: If ``family`` is unknown (the message lists the known families).
    """
    templates = template_pool(family, extra_templates=extra_templates)
    key = f"{operator.index(seed)}/{operator.index(index)}".encode()
    draw = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return templates[draw % len(templates)]  # modulo bias n / 2**64: negligible


def render_instruction(
    family: str,
    *,
    seed: int,
    index: int,
    question: str = "",
    answer: str = "",
    options: Sequence[str] = (),
    context: str = "",
    ocr_tokens: Sequence[str] = (),
    extra_templates: bool = False,
) -> str:
    """Sample a template for one example and fill it in: the text the LLM sees.

    Args:
        family: A task family (a key of `TEMPLATES`).
        seed: The run's data seed (see `sample_template`).
        index: The example's index (see `sample_template`).
        question: The question, statement (binary) or user turn (free_form).
        answer: The answer a generated question must have (question_generation).
        options: Answer options (multiple_choice) or class names (classification); written with `format_options`.
        context: Previous dialog rounds as text (visual_dialog).
        ocr_tokens: OCR tokens of the image. When any are given, ``"OCR tokens: a, b. "`` is put before the
            templated instruction, i.e. right after the image queries, where the paper puts it; at most the first
            `MAX_OCR_TOKENS` (30) are written, as LAVIS does.
        extra_templates: Sample from our `EXTRA_TEMPLATES` too (see `sample_template`).

    Returns:
        The instruction. Fields the family's templates do not use are ignored.

    Raises:
        ValueError: If ``family`` is unknown, or a field the sampled template needs is empty.
    """
    template = sample_template(family, seed, index, extra_templates=extra_templates)
    fields = {
        "question": question.strip(),
        "answer": answer.strip(),
        "options": format_options(options),
        "context": context.strip(),
    }
    for name in sorted(_placeholders(template)):
        if not fields.get(name):
            raise ValueError(
                f"task family {family!r} needs a non-empty `{name}` (template {template!r}); "
                f"pass {name}=... to render_instruction"
            )
    instruction = template.format(**fields)
    ocr = format_ocr_tokens(ocr_tokens)
    return f"{ocr}{_OCR_SEPARATOR}{instruction}" if ocr else instruction


def qformer_instruction(instruction: str, ocr_tokens: Sequence[str] = (), *, include_ocr: bool = True) -> str:
    """The Q-Former's text for an instruction from `render_instruction`.

    By default the instruction itself, OCR tokens included: LAVIS feeds the Q-Former the same ``text_input`` as the
    LLM (`blip2_vicuna_instruct.py`, `blip2_t5_instruct.py`; truncated from the left to 128 Q-Former tokens).

    Args:
        instruction: An instruction from `render_instruction`.
        ocr_tokens: The same OCR tokens that were passed to `render_instruction`.
        include_ocr: False: remove the leading ``"OCR tokens: .... "`` block, so the Q-Former's 128 tokens carry the
            task rather than a long token list (not LAVIS; an ablation).

    Returns:
        ``instruction`` (default), or without its OCR block (``include_ocr=False``; unchanged without OCR tokens).

    Raises:
        ValueError: With ``include_ocr=False``, if OCR tokens are given but ``instruction`` does not start with their
            block (the instruction was built with other tokens, or without them).
    """
    ocr = format_ocr_tokens(ocr_tokens)
    if include_ocr or not ocr:
        return instruction
    prefix = f"{ocr}{_OCR_SEPARATOR}"
    if not instruction.startswith(prefix):
        raise ValueError(
            f"instruction {instruction[:80]!r} does not start with the OCR block {prefix[:80]!r}; "
            "pass the ocr_tokens that were given to render_instruction"
        )
    return instruction[len(prefix) :]
