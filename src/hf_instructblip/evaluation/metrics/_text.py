"""Text normalisation shared by the metrics: the official VQA answer normalisation and a caption tokeniser.

This module imports only the standard library: `evaluate.load` copies it next to a metric script (metric files
import it relatively, ``from ._text import ...``), so it must not depend on the rest of the package.

* VQA answers: `normalize_vqa_answer` is the official VQA evaluator's processing of a predicted answer
  (GT-Vision-Lab/VQA ``vqaEval.py``, copied unchanged into LAVIS ``lavis/common/vqa_tools/vqa_eval.py``):
  `process_punctuation` then `process_digit_article`. Quirks of the original are kept on purpose (see comments):
  scores must be comparable with the published ones.
* Captions: `tokenize_caption` is a pure-Python stand-in for coco-caption's ``PTBTokenizer`` (Stanford CoreNLP,
  which needs Java): lower-case, split English clitics off, drop the punctuation tokens that coco-caption drops;
  `caption_tokens` and `ngram_counts` feed the caption metrics (CIDEr-D, BLEU, ROUGE-L).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

# ---------------------------------------------------------------------------------------------------------------
# Official VQA answer normalisation (tables copied verbatim, including their oddities: capitalised keys such as
# "Im" can never match after lower-casing, and "somebody'd" maps to "somebodyd").
# ---------------------------------------------------------------------------------------------------------------

VQA_CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've",
    "someone'dve": "someone'd've", "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
VQA_NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
VQA_ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
VQA_PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# "(?!<=\d)" is the original's typo for a look-behind: it is a look-ahead that never fails before a ".", so a period
# is removed unless a digit FOLLOWS it ("3.5" keeps it, "3." and "u.s" lose it). Kept as is.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The original calls `periodStrip.sub("", text, re.UNICODE)`: the flag lands in the `count` argument (re.UNICODE
# == 32), so at most 32 periods are removed. Kept for exact agreement.
_PERIOD_STRIP_COUNT = 32


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: remove or blank out punctuation, strip periods not before a digit.

    A punctuation mark is deleted when it touches a space somewhere in the text (``"yes !"``) or when the text holds a
    digit-comma-digit group (``"1,000"`` -> ``"1000"``); otherwise it becomes a space (``"red,blue"`` ->
    ``"red blue"``). Both tests look at the original text, as in the official code.

    Args:
        text: A raw answer.

    Returns:
        The answer with punctuation processed (spaces are not collapsed: `process_digit_article` splits on them).
    """
    has_comma_digit = _COMMA_DIGIT.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_comma_digit:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles, fix contractions.

    Args:
        text: An answer, usually after `process_punctuation`.

    Returns:
        The words joined by single spaces.
    """
    words = [VQA_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [word for word in words if word not in VQA_ARTICLES]
    return " ".join(VQA_CONTRACTIONS.get(word, word) for word in words)


def normalize_vqa_answer(answer: str) -> str:
    """Normalise an answer the way the official VQA evaluator normalises a predicted answer.

    Newlines and tabs become spaces, the answer is stripped, then `process_punctuation` and `process_digit_article`
    are applied.

    Args:
        answer: A raw answer, e.g. ``"Two dogs."``.

    Returns:
        The normalised answer, e.g. ``"2 dogs"``.

    Example:
        >>> normalize_vqa_answer("The two cats!")
        '2 cats'
    """
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


# ---------------------------------------------------------------------------------------------------------------
# Caption tokenisation (pure-Python approximation of coco-caption's PTBTokenizer + punctuation removal).
# ---------------------------------------------------------------------------------------------------------------

CAPTION_CLITICS: frozenset[str] = frozenset({"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"})
_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
# Marks coco-caption drops after PTB tokenisation: quotes (`` '' ` '), brackets (-LRB- ... -RCB-), ? ! ; .
_ALWAYS_DROPPED = re.compile(r"[\"`()\[\]{}?!;]")
# . , : are dropped unless they sit between two digits ("3.5", "1,000", "10:30" survive, as in PTB).
_SEPARATOR_NOT_IN_NUMBER = re.compile(r"(?<!\d)[.,:]|[.,:](?!\d)")
# Hyphens are dropped unless they join two word characters ("t-shirt" survives, "-" and "--" do not).
_LOOSE_HYPHEN = re.compile(r"(?<!\w)-+|-+(?!\w)")


def tokenize_caption(text: str) -> str:
    """Tokenise a caption for CIDEr-D / BLEU / ROUGE-L, approximating coco-caption's PTB tokenisation.

    Rules, in order: lower-case; split the clitics ``n't 's 're 've 'll 'd 'm`` off their word (``"don't"`` ->
    ``"do n't"``, ``"man's"`` -> ``"man 's"``); drop quotes, backticks, brackets, ``? ! ;``; drop ``. , :`` unless
    between two digits; drop hyphens that do not join two word characters; strip stray apostrophes from token ends;
    split on whitespace. Other symbols (``& % $ / #``) stay attached, as PTB leaves most of them as tokens that
    coco-caption keeps. Idempotent: already tokenised, lower-case, punctuation-free text comes back unchanged.

    Args:
        text: A raw caption.

    Returns:
        The tokens joined by single spaces (the format pycocoevalcap's scorers expect).

    Example:
        >>> tokenize_caption("A man's dog doesn't like the T-shirt, (really).")
        "a man 's dog does n't like the t-shirt really"
    """
    text = _CLITIC.sub(r"\1 \2", text.lower())
    text = _ALWAYS_DROPPED.sub(" ", text)
    text = _SEPARATOR_NOT_IN_NUMBER.sub(" ", text)
    text = _LOOSE_HYPHEN.sub(" ", text)
    tokens = (token if token in CAPTION_CLITICS else token.strip("'") for token in text.split())
    return " ".join(token for token in tokens if token)


def caption_tokens(text: str, tokenize: bool = True) -> list[str]:
    """The tokens of a caption: `tokenize_caption` then a whitespace split, or only the split if ``tokenize=False``.

    ``tokenize=False`` is for text tokenised already (e.g. by the Java PTB tokenizer); it is used exactly as
    pycocoevalcap's scorers use their input.
    """
    return (tokenize_caption(text) if tokenize else text).split()


def ngram_counts(tokens: Sequence[str], max_n: int = 4) -> Counter[tuple[str, ...]]:
    """Counts of every 1- to ``max_n``-gram of a token list (pycocoevalcap's ``precook``)."""
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_n + 1) for i in range(len(tokens) - n + 1))
