"""Vocabulary ranking (arXiv 2305.06500 §2.5): the fast path scores exactly what the definition scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_close_fp32, make_processor, model_for
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.evaluation.ranking import (
    VERBALISERS,
    RankingResult,
    rank_candidates,
    rank_candidates_naive,
    score_verbalisers,
)

# Prompts of different lengths (so batches are padded) and ragged candidate lists of 1, 3 and 5 candidates, with
# multi-token candidates and a candidate that is a prefix of another.
PROMPTS = [
    "Question: what is in the picture? Short answer:",
    "Is it red?",
    "Look at the image carefully and choose the animal that appears in it. Options: cat, dog, bird. Answer:",
]
CANDIDATES = [
    ["yes"],
    ["a red car", "blue", "no, it is green"],
    ["cat", "dog", "a small bird", "a small", "fish tank"],
]


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (30, 30, 3), dtype=np.uint8) for _ in range(count)]


def sharpen_(model):
    """Random tiny LLMs predict almost uniform distributions, to which small errors (a position off by one, a pad
    seen) are invisible; scaling the final norm makes the logits large, so every such error moves the scores."""
    llm = model.language_model
    norm = llm.model.norm if model.config.use_decoder_only_language_model else llm.decoder.final_layer_norm
    with torch.no_grad():
        norm.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


@pytest.fixture(scope="module", params=["llama", "t5"])
def model(request, processor):
    return sharpen_(model_for(processor, request.param, seed=1))


def assert_same_ranking(actual: RankingResult, expected: RankingResult) -> None:
    assert actual.num_tokens == expected.num_tokens
    for got, want in zip(actual.scores, expected.scores):
        assert_close_fp32(torch.tensor(got), torch.tensor(want))  # sums of float32 log-probs, other kernels
    assert actual.predictions == expected.predictions


# ----- equivalence with the definition ----------------------------------------------------------------------------
def test_scores_spread(model, processor):
    """Guard for the tests below: the sharpened model's scores differ clearly between candidates."""
    result = rank_candidates_naive(model, processor, images(3), PROMPTS, CANDIDATES)
    assert np.ptp(result.scores[2]) > 1.0


@pytest.mark.parametrize("append_eos", [False, True])
def test_fast_equals_naive(model, processor, append_eos):
    """Ragged lists, multi-token candidates, padded prompt batches, chunks that cut across samples."""
    naive = rank_candidates_naive(model, processor, images(3), PROMPTS, CANDIDATES, append_eos=append_eos)
    fast = rank_candidates(
        model, processor, images(3), PROMPTS, CANDIDATES, batch_size=3, candidate_batch_size=4, append_eos=append_eos
    )
    assert_same_ranking(fast, naive)
    assert fast.num_tokens[0] == [1 + append_eos]


def test_eos_follows_lavis_by_default(model, processor):
    """LAVIS: T5 candidates carry </s> (`blip2_t5_instruct.py`), causal ones no eos (`blip2_vicuna_instruct.py`)."""
    t5 = not model.config.use_decoder_only_language_model
    default = rank_candidates(model, processor, images(3), PROMPTS, CANDIDATES, batch_size=3)
    assert_same_ranking(
        default, rank_candidates_naive(model, processor, images(3), PROMPTS, CANDIDATES, append_eos=t5)
    )
    plain = [[len(processor.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in s] for s in CANDIDATES]
    assert default.num_tokens == [[n + t5 for n in sample] for sample in plain]


def _answer_red_car(processor, image, prompt: str, steps: int = 40):
    """A tiny T5 model trained (as the collator trains: target + eos) to answer "red car"."""
    model = model_for(processor, "t5", seed=4).train()
    inputs = processor(images=image, text=[prompt])
    target = processor.tokenizer("red car", add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    optimizer = torch.optim.Adam(model.language_model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(**inputs, labels=torch.tensor([target])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_t5_eos_decides_between_a_prefix_and_the_answer(processor):
    """Without eos "red" (a prefix of "red car") can never score lower than "red car"; with T5's </s>, as LAVIS
    scores it, a model that answers "red car" ranks it first."""
    image, prompt = images(1, seed=7), "What is in the picture? Answer:"
    red = processor.tokenizer("red", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer("red car", add_special_tokens=False)["input_ids"][: len(red)] == red  # a prefix
    model = _answer_red_car(processor, image, prompt)
    candidates = [["red", "red car"]]
    assert rank_candidates(model, processor, image, [prompt], candidates).predictions == [1]
    assert rank_candidates(model, processor, image, [prompt], candidates, append_eos=False).predictions == [0]
    assert rank_candidates_naive(model, processor, image, [prompt], candidates).predictions == [1]


def test_padding_does_not_change_scores(model, processor):
    """A sample ranked in a padded batch scores what it scores alone."""
    together = rank_candidates(model, processor, images(3), PROMPTS, CANDIDATES, batch_size=3)
    for i in range(3):
        alone = rank_candidates(model, processor, [images(3)[i]], [PROMPTS[i]], [CANDIDATES[i]], batch_size=1)
        assert_close_fp32(torch.tensor(together.scores[i]), torch.tensor(alone.scores[0]))


def test_score_is_summed_token_log_likelihood(model, processor):
    """The definition, by hand: one full forward, log-softmax at each candidate token, summed."""
    image, prompt, candidate = images(1, seed=3), "What is shown? Answer:", "a small bird"
    inputs = processor(images=image, text=[prompt])
    if model.config.use_decoder_only_language_model:  # as the collator joins a target to its prompt; no eos
        target = processor.continuation_ids([prompt], [candidate])[0]
    else:  # T5's decoder text stands alone
        target = processor.tokenizer(candidate, add_special_tokens=False)["input_ids"]
    assert len(target) > 1
    with torch.no_grad():
        if model.config.use_decoder_only_language_model:
            input_ids = torch.cat([inputs["input_ids"], torch.tensor([target])], dim=1)
            attention_mask = torch.ones_like(input_ids)
            logits = model(**{**inputs, "input_ids": input_ids, "attention_mask": attention_mask}).logits[0]
            offset = inputs["input_ids"].shape[1] - 1  # the last prompt position predicts the first target token
            expected = sum(logits[offset + t].log_softmax(-1)[token] for t, token in enumerate(target))
        else:
            start = model.language_model.config.decoder_start_token_id
            decoder_input_ids = torch.tensor([[start, *target[:-1]]])
            logits = model(**inputs, decoder_input_ids=decoder_input_ids).logits[0]
            expected = sum(logits[t].log_softmax(-1)[token] for t, token in enumerate(target))
    result = rank_candidates(model, processor, image, [prompt], [[candidate, "dog"]], append_eos=False)
    assert_close_fp32(torch.tensor(float(result.scores[0][0])), torch.tensor(float(expected)))
    assert result.num_tokens[0] == [len(target), 1]
    assert_close_fp32(torch.tensor(float(result.mean_scores[0][0])), torch.tensor(float(expected) / len(target)))


def test_a_candidate_scores_its_training_target_log_likelihood(model, processor):
    """Ranking tokenises a candidate as the collator tokenises the same answer as a training target (joined to the
    prompt by `continuation_texts`: " a small bird" for SmolLM2's byte-level BPE; eos after it): its score is the
    negated summed cross-entropy of that training sample's labels."""
    image, prompt, candidate = images(1, seed=8), "What is shown? Answer:", "a small bird"
    collator = InstructBlipDataCollator.for_model(model, processor, augment_images=False)
    batch = collator([{"images": image, "instruction": prompt, "target": candidate}])
    with torch.no_grad():
        logits = model(**batch).logits.float()
    labels = batch["labels"]
    if model.config.use_decoder_only_language_model:
        logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
    summed = -torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")
    result = rank_candidates(model, processor, image, [prompt], [[candidate, "dog"]], append_eos=True)
    assert result.num_tokens[0][0] == int((labels != -100).sum())
    assert_close_fp32(torch.tensor(result.scores[0][0]), summed)  # another computation of the same sum


def test_video_frames_and_qformer_prompts(processor):
    model = sharpen_(model_for(processor, "llama", seed=2))
    frames = [images(2, seed=5), images(2, seed=6)]
    args = (model, processor, frames, PROMPTS[:2], CANDIDATES[1:])
    kwargs = {"qformer_prompts": ["what colour?", "which animal is it"]}
    naive = rank_candidates_naive(*args, **kwargs)
    assert_same_ranking(rank_candidates(*args, batch_size=2, candidate_batch_size=3, **kwargs), naive)
    assert not np.allclose(naive.scores[0], rank_candidates_naive(*args).scores[0])  # the Q-Former text is used


def test_model_state_is_restored(processor):
    """Scoring during training: dropout is off while scoring, and each module's mode is as it was after."""
    model = model_for(processor, "llama").train()
    model.vision_model.eval()  # a frozen tower kept in eval mode while the rest trains
    modes = {name: module.training for name, module in model.named_modules()}
    in_training = rank_candidates(model, processor, images(1), ["Is it red?"], [["yes", "no"]])
    assert {name: module.training for name, module in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    assert rank_candidates(model, processor, images(1), ["Is it red?"], [["yes", "no"]]) == in_training


# ----- binary tasks -------------------------------------------------------------------------------------------------
def test_verbalisers(model, processor):
    positive = VERBALISERS["binary"][0]
    result = score_verbalisers(model, processor, images(3), PROMPTS, dataset="hateful_memes")
    for i, scores in enumerate(result.ranking.scores):
        pos, neg = scores[: len(positive)], scores[len(positive) :]
        log_odds = math.log(sum(map(math.exp, pos))) - math.log(sum(map(math.exp, neg)))
        assert result.log_odds[i] == pytest.approx(log_odds, abs=1e-6)
        assert result.probabilities[i] == pytest.approx(1 / (1 + math.exp(-log_odds)), abs=1e-6)
        assert result.labels[i] == int(log_odds >= 0)
        assert result.positive_scores[i] == pytest.approx(math.log(sum(map(math.exp, pos))), abs=1e-6)
        assert result.negative_scores[i] == pytest.approx(math.log(sum(map(math.exp, neg))), abs=1e-6)
    best = score_verbalisers(model, processor, images(3), PROMPTS, (["yes", "true"], ["no"]), reduce="max")
    for i, scores in enumerate(best.ranking.scores):
        assert best.log_odds[i] == pytest.approx(max(scores[:2]) - scores[2], abs=1e-6)


def test_unknown_verbaliser_set(model, processor):
    with pytest.raises(ValueError, match="Unknown verbaliser set 'maybe'"):
        score_verbalisers(model, processor, images(1), ["Is it?"], "maybe")


# ----- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [rank_candidates, rank_candidates_naive])
@pytest.mark.parametrize(
    ("candidates", "error", "match"),
    [
        ([["yes"], []], ValueError, "Dataset 'scienceqa', sample 1 has an empty list of candidates"),
        ([["yes", ""], ["no"]], ValueError, "Candidate 1 of dataset 'scienceqa', sample 0 is ''"),
        ([["yes"], ["  "]], ValueError, "Candidate 0 of dataset 'scienceqa', sample 1 is '  '"),
        ([["yes"], "no"], TypeError, "Candidates of dataset 'scienceqa', sample 1 are a string"),
        ([["yes"]], ValueError, "dataset 'scienceqa'.*2 images, 2 prompts, 1 candidates"),
    ],
)
def test_bad_candidates(processor, fn, candidates, error, match):
    model = model_for(processor, "llama")
    with pytest.raises(error, match=match):
        fn(model, processor, images(2), ["a", "b"], candidates, dataset="scienceqa")


def test_bad_batch_sizes(processor):
    with pytest.raises(ValueError, match="batch_size and candidate_batch_size must be >= 1"):
        rank_candidates(model_for(processor), processor, images(1), ["a"], [["b"]], candidate_batch_size=0)
