"""The metrics package: agreement with reference implementations, hand-worked cases, offline evaluate.load, bad input.

References: pycocoevalcap's pure-Python scorers (CIDEr-D, BLEU, ROUGE-L) fed the same pre-tokenised captions
(tests/evaluation/fixtures/captions.json), scikit-learn's roc_auc_score, and VQA / iVQA / MRR / accuracy values
worked out by hand from the official formulas (in the comments next to each case).
"""

from __future__ import annotations

import os

# Prove that nothing needs the Hub: set before evaluate is first imported (and patched again in `no_network`).
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import socket
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu as CocoBleu
from pycocoevalcap.cider.cider import Cider as CocoCider
from pycocoevalcap.rouge.rouge import Rouge as CocoRouge
from sklearn.metrics import roc_auc_score

from hf_instructblip.evaluation.metrics import (
    ALIASES,
    METRIC_PATHS,
    METRICS,
    SCORE_KEYS,
    load_metric,
    metric_path,
    normalize_vqa_answer,
    tokenize_caption,
)
from hf_instructblip.evaluation.metrics.cider import cider_d_scores
from hf_instructblip.evaluation.metrics.rouge_l import rouge_l_score

TOLERANCE = 1e-6
CAPTIONS = json.loads((Path(__file__).parent / "fixtures" / "captions.json").read_text())["samples"]


def _metric(name: str) -> evaluate.Metric:
    return load_metric(name, keep_in_memory=True)


# ---------------------------------------------------------------------------------------------------------------
# CIDEr-D, BLEU-1..4, ROUGE-L against pycocoevalcap on the same pre-tokenised captions
# ---------------------------------------------------------------------------------------------------------------


def _coco_inputs(samples: list[dict[str, Any]]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    gts = {i: list(sample["references"]) for i, sample in enumerate(samples)}
    res = {i: [sample["prediction"]] for i, sample in enumerate(samples)}
    return gts, res


def _coco_cider(gts, res) -> dict[str, float]:
    return {"cider": float(CocoCider().compute_score(gts, res)[0])}


def _coco_bleu(gts, res) -> dict[str, float]:
    scores, _ = CocoBleu(4).compute_score(gts, res, verbose=0)
    return {f"bleu_{n + 1}": float(score) for n, score in enumerate(scores)}


def _coco_rouge(gts, res) -> dict[str, float]:
    return {"rouge_l": float(CocoRouge().compute_score(gts, res)[0])}


CAPTION_REFERENCES = {"cider": _coco_cider, "bleu": _coco_bleu, "rouge_l": _coco_rouge}
# The IDF of CIDEr comes from the evaluated corpus, so subsets of different sizes are separate checks.
CAPTION_SUBSETS = {"all_20": slice(None), "first_10": slice(0, 10), "last_3": slice(17, 20), "one_image": slice(5, 6)}


@pytest.mark.parametrize("tokenize", [True, False], ids=["tokenize", "pretokenised"])
@pytest.mark.parametrize("subset", list(CAPTION_SUBSETS))
@pytest.mark.parametrize("name", list(CAPTION_REFERENCES))
def test_caption_metrics_agree_with_pycocoevalcap(name, subset, tokenize):
    samples = CAPTIONS[CAPTION_SUBSETS[subset]]
    expected = CAPTION_REFERENCES[name](*_coco_inputs(samples))
    ours = _metric(name).compute(
        predictions=[s["prediction"] for s in samples],
        references=[s["references"] for s in samples],
        tokenize=tokenize,
    )
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert abs(ours[key] - value) <= TOLERANCE, (key, ours[key], value)


def test_per_image_cider_and_rouge_agree_with_pycocoevalcap():
    gts, res = _coco_inputs(CAPTIONS)
    _, coco_cider = CocoCider().compute_score(gts, res)
    _, coco_rouge = CocoRouge().compute_score(gts, res)
    ours_cider = cider_d_scores(
        [s["prediction"].split() for s in CAPTIONS], [[r.split() for r in s["references"]] for s in CAPTIONS]
    )
    ours_rouge = [rouge_l_score(s["prediction"].split(), [r.split() for r in s["references"]]) for s in CAPTIONS]
    np.testing.assert_allclose(ours_cider, coco_cider, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ours_rouge, coco_rouge, rtol=0, atol=TOLERANCE)
    assert max(ours_cider) > 1.0 and min(ours_cider) < 0.5  # the fixture spans good and poor captions


def test_raw_captions_score_like_their_tokenised_form():
    """Raw text goes through `tokenize_caption`; punctuation and case do not change the scores."""
    raw = [
        ("A man riding a wave, on top of a surfboard.", CAPTIONS[0]),
        ("A plate of food with broccoli and rice!", CAPTIONS[1]),
        ('A woman\'s hand holding a "cell phone".', CAPTIONS[8]),
    ]
    for name in CAPTION_REFERENCES:
        from_raw = _metric(name).compute(predictions=[r for r, _ in raw], references=[s["references"] for _, s in raw])
        tokenised = _metric(name).compute(
            predictions=[s["prediction"] for _, s in raw], references=[s["references"] for _, s in raw], tokenize=False
        )
        assert from_raw == pytest.approx(tokenised, abs=1e-12)


TOKENIZER_CASES = [
    ("A man riding a wave.", "a man riding a wave"),
    ("A man's dog doesn't like the T-shirt, (really).", "a man 's dog does n't like the t-shirt really"),
    ('Two "large" dogs -- playing; at 3.5 o\'clock?!', "two large dogs playing at 3.5 o'clock"),
    ("1,000 people... in [a] {park}: `wow`", "1,000 people in a park wow"),
    ("kids' toys on the floor - scattered", "kids toys on the floor scattered"),
    ("  spaced\tout\ncaption  ", "spaced out caption"),
]


@pytest.mark.parametrize(("raw", "tokens"), TOKENIZER_CASES)
def test_tokenize_caption(raw, tokens):
    assert tokenize_caption(raw) == tokens
    assert tokenize_caption(tokens) == tokens  # idempotent


# ---------------------------------------------------------------------------------------------------------------
# VQA accuracy: hand-worked cases of the official formula
# acc = mean over the n annotators i of min(1, #matches among the other n - 1 answers / 3).
# With 10 answers of which M match: M annotators see M - 1 matches, 10 - M see M; so M = 1, 2, 3, >= 4 give
# (0 + 9/3) / 10 = 0.3, (2/3 + 8 * 2/3) / 10 = 0.6, (3 * 2/3 + 7 * 1) / 10 = 0.9 and 1.0.
# ---------------------------------------------------------------------------------------------------------------

VQA_CASES = [
    # (id, prediction, references, normalize_references, expected)
    # 10 identical answers: every leave-one-out subset holds 9 matches, min(1, 9/3) = 1.
    ("exact", "2", ["2"] * 10, False, 1.0),
    # 'two' vs '2': number words become digits in the prediction -> "2", then as above.
    ("number_word", "two", ["2"] * 10, False, 1.0),
    # 'none' is a number word too -> "0".
    ("none_is_zero", "None", ["0"] * 10, False, 1.0),
    # article + capital: "A dog" -> "dog"; M = 3 -> 0.9.
    ("article", "A dog", ["dog"] * 3 + ["cat"] * 7, False, 0.9),
    # punctuation: "!" touches no space -> blanked -> "yes " -> split -> "yes"; M = 2 -> 0.6.
    ("punctuation", "yes!", ["yes"] * 2 + ["no"] * 8, False, 0.6),
    # whitespace: newline / tabs / outer spaces go; M = 2 -> 0.6.
    ("whitespace", "  Yes\n", ["yes"] * 2 + ["no"] * 8, False, 0.6),
    # contraction table: "dont" -> "don't"; M = 1 -> 0.3.
    ("contraction", "dont know", ["don't know"] + ["no"] * 9, False, 0.3),
    # comma-digit rule: "1,000" has digit,digit so "," is deleted -> "1000" (M = 2 -> 0.6); blanking would have
    # given "1 000" and M = 8 -> 1.0.
    ("comma_digit", "1,000", ["1000"] * 2 + ["1 000"] * 8, False, 0.6),
    # a comma between letters is blanked: "red,blue" -> "red blue"; M = 3 -> 0.9.
    ("comma_blank", "red,blue", ["red blue"] * 3 + ["red"] * 7, False, 0.9),
    # periods go unless a digit follows: "3.5" keeps it; M = 1 -> 0.3 (no match at all if it became "35").
    ("decimal", "3.5", ["3.5"] + ["3"] * 9, False, 0.3),
    ("final_period", "stop.", ["stop"] * 10, False, 1.0),
    # official reference handling: unanimous references are used as given, so raw "two" never equals "2" -> 0 ...
    ("unanimous_raw_refs", "two", ["two"] * 10, False, 0.0),
    # ... unless every reference is normalised like the prediction: M = 10 -> 1.0.
    ("unanimous_raw_refs_normalized", "two", ["two"] * 10, True, 1.0),
    # disagreeing references get punctuation processing only: "yes!" -> "yes " (blank kept) != "yes" -> 0 ...
    ("raw_ref_punctuation", "yes", ["yes!"] * 3 + ["no"] * 7, False, 0.0),
    # ... fully normalised: "yes!" -> "yes"; M = 3 -> 0.9.
    ("raw_ref_punctuation_normalized", "yes", ["yes!"] * 3 + ["no"] * 7, True, 0.9),
    # fewer than 10 answers, n = 3, M = 2: each "red" annotator sees 1 other match (1/3), the "blue" one sees 2 (2/3):
    # (1/3 + 1/3 + 2/3) / 3 = 4/9.
    ("three_answers", "red", ["red", "red", "blue"], False, 4 / 9),
    # n = 5 (OK-VQA style), M = 4: each matching annotator sees 3 (1), the other sees 4 (1) -> 1.0.
    ("five_answers", "blue", ["blue"] * 4 + ["navy"], False, 1.0),
    # no match at all.
    ("wrong", "cat", ["dog"] * 10, False, 0.0),
]


@pytest.mark.parametrize(
    ("prediction", "references", "normalize_references", "expected"),
    [c[1:] for c in VQA_CASES],
    ids=[c[0] for c in VQA_CASES],
)
def test_vqa_accuracy_worked_cases(prediction, references, normalize_references, expected):
    result = _metric("vqa_accuracy").compute(
        predictions=[prediction], references=[references], normalize_references=normalize_references
    )
    assert abs(result["vqa_accuracy"] - expected) <= TOLERANCE


def test_vqa_accuracy_is_the_mean_over_questions():
    official = [c for c in VQA_CASES if not c[3]]
    result = _metric("vqa_accuracy").compute(predictions=[c[1] for c in official], references=[c[2] for c in official])
    assert abs(result["vqa_accuracy"] - np.mean([c[4] for c in official])) <= TOLERANCE


VQA_NORMALIZATION = [
    ("The two cats!", "2 cats"),
    ("1,000", "1000"),
    ("red,blue", "red blue"),
    ("hello, world", "hello world"),  # ", " touches a space: deleted, not blanked
    ("left/right", "left right"),
    ("3.5", "3.5"),
    ("u.s.", "us"),
    ("Dont", "don't"),
    ("an apple", "apple"),
    ("None", "0"),
    ("\tTen\n", "10"),
]


@pytest.mark.parametrize(("raw", "normalized"), VQA_NORMALIZATION)
def test_normalize_vqa_answer(raw, normalized):
    assert normalize_vqa_answer(raw) == normalized


# ---------------------------------------------------------------------------------------------------------------
# iVQA accuracy, accuracy, MRR: worked cases; ROC-AUC against scikit-learn
# ---------------------------------------------------------------------------------------------------------------

IVQA_ANSWERS = ["dog", "dog", "puppy", "dog", "cat"]
WORKED_CASES = [
    # (metric, compute kwargs, expected value of the metric's SCORE_KEYS entry)
    # iVQA: min(1, #matches / 2): "dog" 3 -> 1; "puppy" 1 -> 0.5; "Puppy." normalised -> 0.5; "bird" 0 -> 0.
    ("ivqa_accuracy", {"predictions": ["dog"], "references": [IVQA_ANSWERS]}, 1.0),
    ("ivqa_accuracy", {"predictions": ["puppy"], "references": [IVQA_ANSWERS]}, 0.5),
    ("ivqa_accuracy", {"predictions": ["The puppy."], "references": [IVQA_ANSWERS]}, 0.5),
    ("ivqa_accuracy", {"predictions": ["The puppy."], "references": [IVQA_ANSWERS], "normalize": False}, 0.0),
    # mean of (1 + 0.5 + 0) / 3 = 0.5
    ("ivqa_accuracy", {"predictions": ["dog", "cat", "bird"], "references": [IVQA_ANSWERS] * 3}, 0.5),
    # accuracy: exact match by default: only "yes" matches -> 1/3; normalised, "two" -> "2" matches too -> 2/3.
    ("accuracy", {"predictions": ["yes", "no", "2"], "references": ["yes", "yes", "two"]}, 1 / 3),
    ("accuracy", {"predictions": ["yes", "no", "2"], "references": ["yes", "yes", "two"], "normalize": True}, 2 / 3),
    ("accuracy", {"predictions": ["Yes."], "references": ["yes"]}, 0.0),
    ("accuracy", {"predictions": ["Yes."], "references": ["yes"], "normalize": True}, 1.0),
    # class indices: 3 of 4 equal.
    ("accuracy", {"predictions": [0, 1, 2, 2], "references": [0, 1, 1, 2]}, 0.75),
    # MRR: correct candidate ranked 1st -> 1; [0.3, 0.2, 0.9, 0.4] with correct 0: 0.9 and 0.4 are higher -> rank 3.
    ("mrr", {"predictions": [[0.1, 0.9, 0.5]], "references": [1]}, 1.0),
    ("mrr", {"predictions": [[0.3, 0.2, 0.9, 0.4]], "references": [0]}, 1 / 3),
    # ties are pessimistic: the other 0.5 counts as ranked above -> rank 2, whichever of the two is correct.
    ("mrr", {"predictions": [[0.5, 0.5, 0.1]], "references": [1]}, 0.5),
    ("mrr", {"predictions": [[0.5, 0.5, 0.1]], "references": [0]}, 0.5),
    # ragged candidate lists: ranks 1, 2, 2 -> (1 + 1/2 + 1/2) / 3 = 2/3.
    ("mrr", {"predictions": [[5.0], [1.0, 2.0], [-3.0, -1.0, -2.0]], "references": [0, 0, 2]}, 2 / 3),
    # Visual Dialog shape: 100 options scored 0..99; the correct one (index 96) has the 4th highest score -> 1/4.
    ("mrr", {"predictions": [[float(i) for i in range(100)]], "references": [96]}, 0.25),
    # ROC-AUC: scikit-learn's documented example; all scores tied -> 0.5; perfect -> 1; inverted -> 0.
    ("roc_auc", {"predictions": [0.1, 0.4, 0.35, 0.8], "references": [0, 0, 1, 1]}, 0.75),
    ("roc_auc", {"predictions": [0.3, 0.3, 0.3, 0.3], "references": [0, 1, 0, 1]}, 0.5),
    ("roc_auc", {"predictions": [-2.0, -1.0, 3.0], "references": [0, 0, 1]}, 1.0),
    ("roc_auc", {"predictions": [0.9, 0.2], "references": [0, 1]}, 0.0),
]


@pytest.mark.parametrize(("name", "kwargs", "expected"), WORKED_CASES)
def test_worked_cases(name, kwargs, expected):
    result = _metric(name).compute(**kwargs)
    assert abs(result[SCORE_KEYS[name]] - expected) <= TOLERANCE


@pytest.mark.parametrize("seed", range(6))
def test_roc_auc_agrees_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(10, 300))
    labels = rng.integers(0, 2, size)
    labels[:2] = [0, 1]  # both classes present
    scores = rng.normal(size=size) + labels * rng.uniform(0, 2)
    # Rounding makes many ties (seed 0: continuous scores, no ties); even seeds use numpy inputs, odd ones lists.
    scores = scores if seed == 0 else np.round(scores, decimals=seed % 3)
    predictions, references = (scores, labels) if seed % 2 == 0 else (scores.tolist(), labels.tolist())
    ours = _metric("roc_auc").compute(predictions=predictions, references=references)["roc_auc"]
    assert abs(ours - roc_auc_score(labels, scores)) <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# evaluate.load(metric_path(name)): offline, same numbers as the class
# ---------------------------------------------------------------------------------------------------------------

SAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "vqa_accuracy": {"predictions": ["two", "A dog"], "references": [["2"] * 10, ["dog"] * 3 + ["cat"] * 7]},
    "cider": {"predictions": [s["prediction"] for s in CAPTIONS], "references": [s["references"] for s in CAPTIONS]},
    "bleu": {"predictions": [s["prediction"] for s in CAPTIONS], "references": [s["references"] for s in CAPTIONS]},
    "rouge_l": {"predictions": [s["prediction"] for s in CAPTIONS], "references": [s["references"] for s in CAPTIONS]},
    "accuracy": {"predictions": ["yes", "no", "2"], "references": ["yes", "yes", "two"], "normalize": True},
    "roc_auc": {"predictions": [0.1, 0.4, 0.35, 0.8], "references": [0, 0, 1, 1]},
    "mrr": {"predictions": [[5.0], [1.0, 2.0], [-3.0, -1.0, -2.0]], "references": [0, 0, 2]},
    "ivqa_accuracy": {"predictions": ["dog", "puppy"], "references": [IVQA_ANSWERS] * 2},
}


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection fails the test; evaluate is put in offline mode."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)


def test_every_metric_has_a_script_and_sample_inputs():
    assert set(SAMPLE_INPUTS) == set(METRICS) == set(METRIC_PATHS)
    for name, path in METRIC_PATHS.items():
        assert Path(path).is_file() and Path(path).stem == name


@pytest.mark.parametrize("name", [*METRICS, *ALIASES])
def test_evaluate_load_works_offline_and_matches_the_class(name, no_network):
    canonical = ALIASES.get(name, name)
    loaded = evaluate.load(metric_path(name), keep_in_memory=True)
    assert type(loaded).__name__ == METRICS[canonical].__name__
    assert type(loaded).__module__.startswith("evaluate_modules.")  # the copied script, not our package module
    inputs = SAMPLE_INPUTS[canonical]
    assert loaded.compute(**inputs) == _metric(name).compute(**inputs)
    assert SCORE_KEYS[canonical] in loaded.compute(**inputs)


def test_add_batch_then_compute():
    metric = _metric("cider")
    half = len(CAPTIONS) // 2
    for batch in (CAPTIONS[:half], CAPTIONS[half:]):
        metric.add_batch(predictions=[s["prediction"] for s in batch], references=[s["references"] for s in batch])
    assert metric.compute() == _metric("cider").compute(**SAMPLE_INPUTS["cider"])


def test_meteor_and_unknown_names():
    with pytest.raises(ImportError, match=r"METEOR is not shipped.*Java.*WordNet"):
        load_metric("meteor")
    with pytest.raises(ImportError, match="METEOR"):
        metric_path("meteor")
    with pytest.raises(ValueError, match=r"unknown metric 'cidr'.*'cider'"):
        load_metric("cidr")


# ---------------------------------------------------------------------------------------------------------------
# Bad input: ValueError naming the metric, the dataset and the sample
# ---------------------------------------------------------------------------------------------------------------


def _bad_inputs() -> list[tuple[str, str, Any, Any, str]]:
    """(metric, case id, predictions, references, expected message regex), built from SAMPLE_INPUTS."""
    cases = []
    for name, inputs in SAMPLE_INPUTS.items():
        preds, refs = inputs["predictions"], inputs["references"]
        more = f"sample {len(refs)}: got {len(preds) + 1} predictions but {len(refs)} references"
        cases += [
            (name, "empty", [], [], "predictions is empty"),
            (name, "more_predictions", [*preds, preds[0]], refs, more),
            (name, "fewer_predictions", preds[:1], refs, "sample 1: got 1 predictions"),
            (name, "no_references", preds, None, "references is missing"),
            (name, "missing_reference", preds, [refs[0], None, *refs[2:]], "sample 1: .*(missing|must be)"),
        ]
    for name in ("vqa_accuracy", "cider", "bleu", "rouge_l", "ivqa_accuracy"):
        preds, refs = SAMPLE_INPUTS[name]["predictions"], SAMPLE_INPUTS[name]["references"]
        cases += [
            (name, "empty_references", preds, [refs[0], [], *refs[2:]], "sample 1: got 0 references"),
            (name, "string_reference", preds, [refs[0], "a dog", *refs[2:]], "sample 1: references must be a list"),
            (
                name,
                "non_string_prediction",
                [preds[0], 3, *preds[2:]],
                refs,
                "sample 1: the prediction must be a string",
            ),
        ]
    cases += [
        ("vqa_accuracy", "one_answer", ["yes"], [["yes"]], "sample 0: got 1 references, .*at least 2"),
        ("mrr", "empty_candidates", [[1.0], []], [0, 0], "sample 1: the candidate list is empty"),
        ("mrr", "index_out_of_range", [[1.0], [1.0, 2.0]], [0, 2], r"sample 1: .*integer in \[0, 2\), got 2"),
        ("mrr", "nan_score", [[1.0, float("nan")]], [0], "sample 0: the candidate score must be finite"),
        ("roc_auc", "one_class", [0.1, 0.7], [1, 1], "every label is 1; ROC-AUC needs both"),
        ("roc_auc", "bad_label", [0.1, 0.7], [0, 2], "sample 1: the label must be 0 or 1"),
        ("roc_auc", "nan_score", [0.1, float("nan")], [0, 1], "sample 1: the score must be finite"),
        ("accuracy", "mixed_types", ["1"], [1], "sample 0: .*different types"),
    ]
    return cases


BAD_INPUTS = _bad_inputs()


@pytest.mark.parametrize(
    ("name", "predictions", "references", "message"),
    [(c[0], *c[2:]) for c in BAD_INPUTS],
    ids=[f"{c[0]}-{c[1]}" for c in BAD_INPUTS],
)
def test_bad_input_names_metric_dataset_and_sample(name, predictions, references, message):
    # "<metric> (dataset '<name>'): <problem>" or "<metric> (dataset '<name>'), sample <i>: <problem>"
    with pytest.raises(ValueError, match=rf"^{name} \(dataset 'my_dataset'\)[,:] {message}"):
        _metric(name).compute(predictions=predictions, references=references, dataset_name="my_dataset")


def test_bad_input_without_dataset_name_and_through_evaluate_load(no_network):
    with pytest.raises(ValueError, match=r"^bleu, sample 1: got 0 references"):
        _metric("bleu").compute(predictions=["a", "b"], references=[["a"], []])
    loaded = evaluate.load(metric_path("mrr"), keep_in_memory=True)
    with pytest.raises(ValueError, match=r"^mrr \(dataset 'visdial'\), sample 1: the candidate list is empty"):
        loaded.compute(predictions=[[1.0], []], references=[0, 0], dataset_name="visdial")


def test_bad_input_added_in_batches_is_caught_at_compute():
    metric = _metric("cider")
    metric.add_batch(predictions=["a dog"], references=[["a dog runs"]])
    metric.add_batch(predictions=["a cat"], references=[[]])
    with pytest.raises(ValueError, match=r"^cider \(dataset 'coco'\), sample 1: got 0 references"):
        metric.compute(dataset_name="coco")
