"""Vocabulary ranking (arXiv 2305.06500 §2.5): pick the answer the model finds most likely among given candidates.

Classification and multiple-choice tasks (ScienceQA, IconQA, A-OKVQA MC, HatefulMemes, Visual Dialog, MSVD,
MSRVTT) are not generated: every candidate answer is scored by its log-likelihood given image + instruction, the
sum of its tokens' log-probabilities, and the best one wins. Binary tasks score a small verbaliser set
(positive: yes/true, negative: no/false), see `score_verbalisers`.

How a candidate is tokenised, so that the scores mean what training optimised (`data/collator.py`):

* the candidate is tokenised on its own, ``add_special_tokens=False``, and its ids follow the prompt's ids directly
  (the prompt is tokenised by the processor, special tokens included), exactly like a training target: for causal
  LLMs as `HfInstructBlipProcessor.continuation_texts` joins it to its prompt (a leading space for byte-level BPE
  tokenizers, none for SentencePiece ones), for encoder-decoder LLMs as it is (the decoder's text stands alone);
* the LLM's eos follows the candidate for encoder-decoder LLMs (T5) and not for causal LLMs, as in LAVIS:
  ``blip2_t5_instruct.py``'s ``_predict_class`` tokenises the candidates with the T5 tokenizer's ``</s>``,
  ``blip2_vicuna_instruct.py``'s without eos (``append_eos=None``, the default). With eos a score means "the answer,
  and then it stops", what training targets (which end with eos) teach; without it a candidate that is a prefix of
  another ("red" vs "red car") never scores lower than the longer one. ``append_eos=True``/``False`` forces either.

Two implementations, which give the same scores (``tests/evaluation/test_ranking.py``):

* `rank_candidates_naive`, the definition: one full forward (vision tower, Q-Former, LLM over prompt + candidate)
  per candidate;
* `rank_candidates`, what to use: the vision tower, the Q-Former and the prompt run once per sample; the LLM's
  state after the prompt is reused by all the sample's candidates (causal LLMs: the prompt's key/value cache;
  encoder-decoder LLMs: the encoder output and the decoder's cache after its start token, cross-attention keys and
  values included), and the candidates of several samples are scored in one batched forward.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

__all__ = [
    "VERBALISERS",
    "RankingResult",
    "VerbaliserResult",
    "rank_candidates",
    "rank_candidates_naive",
    "score_verbalisers",
]

#: Verbaliser sets for binary tasks: ``name -> (positive words, negative words)``. ``"binary"`` is the paper's
#: (arXiv 2305.06500 §2.5: positive yes/true, negative no/false).
VERBALISERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "binary": (("yes", "true"), ("no", "false")),
    "yes_no": (("yes",), ("no",)),
    "true_false": (("true",), ("false",)),
}


@dataclass
class RankingResult:
    """Scores of every candidate of every sample, and the winners.

    Args:
        scores: Per sample, per candidate: the summed log-likelihood of the candidate's tokens (higher is better).
            This is the paper's score.
        predictions: Per sample, the index of the best candidate by ``scores`` (the first one on a tie).
        num_tokens: Per sample, per candidate: how many tokens were scored (eos included with ``append_eos``).
    """

    scores: list[list[float]]
    predictions: list[int]
    num_tokens: list[list[int]]

    @classmethod
    def from_scores(cls, scores: list[list[float]], num_tokens: list[list[int]]) -> RankingResult:
        """The result for these scores: the predictions are their argmax."""
        predictions = [max(range(len(row)), key=row.__getitem__) for row in scores]
        return cls(scores=scores, num_tokens=num_tokens, predictions=predictions)

    @property
    def mean_scores(self) -> list[list[float]]:
        """Per-token log-likelihoods (``scores / num_tokens``): length-normalised, *not* what the paper ranks by.

        Useful when candidates differ much in length, since the sum favours short candidates.
        """
        return [[s / n for s, n in zip(row, counts)] for row, counts in zip(self.scores, self.num_tokens)]


@dataclass
class VerbaliserResult:
    """Binary decisions from verbaliser scores (see `score_verbalisers`).

    Args:
        positive_scores: Per sample, the positive class's score: its words' log-likelihoods combined (``reduce``).
        negative_scores: Per sample, the negative class's score.
        log_odds: Per sample, ``positive_scores - negative_scores``. Monotone in ``probabilities`` and
            free of their saturation near 0 and 1: the best input for ROC-AUC (HatefulMemes).
        probabilities: Per sample, ``sigmoid(log_odds)``: the probability of the positive class when the model has
            to choose between the positive and the negative words.
        labels: Per sample, 1 when the positive words win (``log_odds >= 0``), else 0.
        ranking: The underlying ranking; candidates are the positive words, then the negative ones.
    """

    positive_scores: list[float]
    negative_scores: list[float]
    log_odds: list[float]
    probabilities: list[float]
    labels: list[int]
    ranking: RankingResult


# ----- input checks -----------------------------------------------------------------------------------------------
def _where(dataset: str | None, sample: int) -> str:
    return f"dataset {dataset!r}, sample {sample}" if dataset else f"sample {sample}"


def _check_inputs(
    images: Sequence[Any],
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    qformer_prompts: Sequence[str] | None,
    dataset: str | None,
) -> None:
    for name, value in (("prompts", prompts), ("qformer_prompts", qformer_prompts), ("candidates", candidates)):
        if isinstance(value, str):
            raise TypeError(f"`{name}` must be a list with one entry per sample, not a string.")
    counts = {"images": len(images), "prompts": len(prompts), "candidates": len(candidates)}
    if qformer_prompts is not None:
        counts["qformer_prompts"] = len(qformer_prompts)
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{n} {name}" for name, n in counts.items())
        where = f" (dataset {dataset!r})" if dataset else ""
        raise ValueError(f"Vocabulary ranking needs one entry per sample in each argument{where}; got {detail}.")
    for i, sample in enumerate(candidates):
        if isinstance(sample, str):
            raise TypeError(
                f"Candidates of {_where(dataset, i)} are a string ({sample!r}); give a list of candidate answers "
                "per sample, e.g. [['yes', 'no'], ...]."
            )
        if len(sample) == 0:
            raise ValueError(
                f"{_where(dataset, i).capitalize()} has an empty list of candidates: give every sample at least one "
                "candidate answer to rank."
            )
        for j, candidate in enumerate(sample):
            if not isinstance(candidate, str) or not candidate.strip():
                raise ValueError(
                    f"Candidate {j} of {_where(dataset, i)} is {candidate!r}: candidates must be non-empty strings."
                )


def _lavis_appends_eos(model: Any) -> bool:
    """Whether LAVIS scores this model's candidates with eos: encoder-decoder (T5) yes, causal (Vicuna) no."""
    return not model.config.use_decoder_only_language_model


def _tokenise_candidates(
    model: Any,
    processor: Any,
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    append_eos: bool | None,
    dataset: str | None,
) -> list[list[list[int]]]:
    """Candidate token ids per sample, tokenised like a training target (see the module docstring)."""
    if append_eos is None:
        append_eos = _lavis_appends_eos(model)
    tokenizer = processor.tokenizer
    eos = tokenizer.eos_token_id
    if append_eos and eos is None:
        raise ValueError(
            "Candidates are scored with eos (append_eos=True, or the default for encoder-decoder LLMs) but the LLM "
            "tokenizer has no eos token; set tokenizer.eos_token or pass append_eos=False."
        )
    # The text each candidate is tokenised as: joined to its prompt as the collator joins a causal LLM's target
    texts = [list(sample) for sample in candidates]
    if model.config.use_decoder_only_language_model:
        flat = processor.continuation_texts(
            [prompt for prompt, sample in zip(prompts, candidates) for _ in sample], [c for s in candidates for c in s]
        )
        starts = [0, *itertools.accumulate(len(sample) for sample in candidates)]
        texts = [flat[start:stop] for start, stop in itertools.pairwise(starts)]
    # Tokenise every distinct text once: candidate lists repeat a lot (yes/no, A/B/C/D).
    unique = sorted({text for sample in texts for text in sample})
    ids = dict(zip(unique, tokenizer(unique, add_special_tokens=False)["input_ids"])) if unique else {}
    tokens = []
    for i, sample in enumerate(texts):
        for j, text in enumerate(sample):
            if not ids[text]:
                raise ValueError(
                    f"Candidate {j} of {_where(dataset, i)} ({candidates[i][j]!r}) tokenises to no tokens."
                )
        tokens.append([[*ids[text], eos] if append_eos else list(ids[text]) for text in sample])
    return tokens


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd for the duration; every submodule's own mode is restored after.

    Restored module by module, not with ``model.train(...)``: a model being trained often keeps its frozen towers in
    eval mode, and scoring in the middle of training must not change that.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.training = training


# ----- the fast path: the prompt once per sample, its state reused by every candidate -------------------------------
@dataclass
class _Prefix:
    """The LLM's state after image + prompt, for a batch of ``B`` samples.

    Args:
        next_log_probs: ``(B, V)`` log-probabilities of the token after the prefix: the candidate's first token.
        cache: Key/value cache of the prefix (causal: the prompt; encoder-decoder: the decoder start token, with the
            cross-attention keys/values of the encoder output).
        attention_mask: ``(B, P)`` padding mask of the prompt (causal) or of the encoder input (encoder-decoder).
        next_position: ``(B,)`` causal LLMs: position id of the first candidate token = real prompt tokens.
        encoder_hidden: ``(B, P, D_llm)`` encoder-decoder LLMs: the encoder output.
    """

    next_log_probs: torch.Tensor
    cache: Cache
    attention_mask: torch.Tensor
    next_position: torch.Tensor | None = None
    encoder_hidden: torch.Tensor | None = None


def _encode_prefix(
    model: Any, processor: Any, images: Sequence[Any], prompts: Sequence[str], qformer_prompts: Sequence[str] | None
) -> _Prefix:
    decoder_only = model.config.use_decoder_only_language_model
    # Left padding for causal LLMs puts every prompt's last token in the last column, so the candidates follow on
    # directly; padding never changes a score, since masks hide the pads and position ids count real tokens only.
    inputs = processor(
        images=list(images), text=list(prompts), padding=True, padding_side="left" if decoder_only else "right"
    )
    if qformer_prompts is not None:
        inputs.update(processor.qformer_inputs(list(qformer_prompts)))
    device = model.device
    vision_dtype = next(model.vision_model.parameters()).dtype
    input_ids = torch.as_tensor(inputs["input_ids"], device=device)
    attention_mask = torch.as_tensor(inputs["attention_mask"], device=device)
    # steps 1-3 once per sample: vision tower, Q-Former, projection
    features = model.get_image_features(
        pixel_values=inputs["pixel_values"].to(device, vision_dtype),
        qformer_input_ids=torch.as_tensor(inputs["qformer_input_ids"], device=device),
        qformer_attention_mask=torch.as_tensor(inputs["qformer_attention_mask"], device=device),
    ).pooler_output  # (B, T*Q, D_llm)
    inputs_embeds = model.merge_image_features(input_ids, features)  # (B, P, D_llm)
    llm = model.language_model
    if decoder_only:
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, P), 0 at the first real token
        out = llm(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,  # only the last position predicts a candidate token
        )
        return _Prefix(
            next_log_probs=out.logits[:, -1].float().log_softmax(-1),  # (B, V)
            cache=out.cache,
            attention_mask=attention_mask,
            next_position=attention_mask.long().sum(-1),  # (B,)
        )
    start = llm.config.decoder_start_token_id
    if start is None:
        raise ValueError("The encoder-decoder LLM's config has no decoder_start_token_id; set it to rank candidates.")
    encoder_hidden = llm.get_encoder()(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    # The decoder's first step (the start token) is shared by all candidates too: running it here also fills the
    # cross-attention keys/values of the encoder output once, instead of once per candidate.
    out = llm(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
        attention_mask=attention_mask,
        decoder_input_ids=torch.full((input_ids.shape[0], 1), start, dtype=torch.long, device=device),
        use_cache=True,
    )
    return _Prefix(
        next_log_probs=out.logits[:, -1].float().log_softmax(-1),  # (B, V)
        cache=out.cache,
        attention_mask=attention_mask,
        encoder_hidden=encoder_hidden,
    )


def _select_rows(cache: Cache, rows: torch.Tensor) -> Cache:
    """A new cache made of rows ``rows`` of ``cache`` (repeats allowed); ``cache`` itself is left untouched.

    The layers are copied shallowly and then re-indexed: indexing builds new tensors, and the candidates' forward
    appends to the copy only, so the prefix cache stays valid for the next chunk of candidates.
    """
    if isinstance(cache, EncoderDecoderCache):
        return EncoderDecoderCache(
            _select_rows(cache.self_attention_cache, rows), _select_rows(cache.cross_attention_cache, rows)
        )
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    selected.batch_select_indices(rows)
    return selected


def _pad(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token ids (with 0: any valid id, the mask hides it) -> ``(ids, mask)``, both ``(C, L)``."""
    length = max(map(len, sequences))
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for row, tokens in enumerate(sequences):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = True
    return ids.to(device), mask.to(device)


def _score_chunk(model: Any, prefix: _Prefix, rows: list[int], candidates: list[list[int]]) -> list[float]:
    """Summed log-likelihoods of ``candidates``, candidate ``c`` continuing prefix row ``rows[c]``."""
    device = prefix.next_log_probs.device
    index = torch.tensor(rows, device=device)  # (C,)
    ids, mask = _pad(candidates, device)  # (C, L)
    first = prefix.next_log_probs[index].gather(1, ids[:, :1])  # (C, 1): predicted by the prefix's last position
    token_log_probs = first
    if ids.shape[1] > 1:
        # Feed tokens 0..L-2; position t predicts token t+1. The last token predicts nothing we score, so all
        # single-token candidates (yes/no, A/B/C/D) need no LLM forward beyond the prefix at all.
        inputs = ids[:, :-1]  # (C, L-1)
        cache = _select_rows(prefix.cache, index)
        llm = model.language_model
        if model.config.use_decoder_only_language_model:
            assert prefix.next_position is not None
            steps = torch.arange(inputs.shape[1], device=device)
            out = llm(
                input_ids=inputs,
                # right padding of the candidates sits after every token we score and is causally invisible to
                # them; the mask is kept exact anyway
                attention_mask=torch.cat([prefix.attention_mask[index], mask[:, :-1].long()], dim=1),  # (C, P+L-1)
                position_ids=prefix.next_position[index, None] + steps,  # (C, L-1)
                cache=cache,
                use_cache=True,
            )
        else:
            assert prefix.encoder_hidden is not None
            out = llm(
                encoder_outputs=BaseModelOutput(last_hidden_state=prefix.encoder_hidden[index]),  # (C, P, D_llm)
                attention_mask=prefix.attention_mask[index],
                decoder_input_ids=inputs,  # right padding only at the end: no decoder mask needed (causal)
                cache=cache,
                use_cache=True,
            )
        rest = out.logits.float().log_softmax(-1).gather(2, ids[:, 1:, None]).squeeze(-1)  # (C, L-1)
        token_log_probs = torch.cat([first, rest], dim=1)  # (C, L)
    return token_log_probs.masked_fill(~mask, 0.0).sum(-1).tolist()


def rank_candidates(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    qformer_prompts: Sequence[str] | None = None,
    batch_size: int = 8,
    candidate_batch_size: int = 64,
    append_eos: bool | None = None,
    dataset: str | None = None,
) -> RankingResult:
    r"""Score every candidate answer of every sample by its log-likelihood; the best one is the prediction.

    The vision tower, the Q-Former and the prompt run once per sample (``batch_size`` samples at a time); the LLM's
    state after the prompt is reused by all the sample's candidates, and the candidates of those samples are scored
    together, ``candidate_batch_size`` at a time. Scores equal `rank_candidates_naive`'s.

    Args:
        model: An [`InstructBlipForConditionalGeneration`], causal or encoder-decoder LLM.
        processor: Its [`InstructBlipProcessor`].
        images: One entry per sample, as the processor takes them (an image, or a list of frames/images).
        prompts: One instruction per sample (the LLM prompt, and the Q-Former text unless ``qformer_prompts``).
        candidates: One list of candidate answers per sample; lists may differ in length, none may be empty.
        qformer_prompts: Other Q-Former texts, one per sample (as ``qformer_text`` in training).
        batch_size: Samples whose image and prompt are encoded together.
        candidate_batch_size: (sample, candidate) pairs scored in one LLM forward.
        append_eos: Score the LLM's eos after each candidate too. ``None`` (default): as LAVIS does, i.e. for
            encoder-decoder LLMs (T5) only (see the module docstring).
        dataset: Named in error messages.

    Returns:
        A [`RankingResult`]: ``scores[i][j]`` for candidate ``j`` of sample ``i``, and ``predictions``.

    Example:

    ```python
    >>> result = rank_candidates(model, processor, [image], ["Is the cat black? Answer:"], [["yes", "no"]])
    >>> result.predictions  # doctest: +SKIP
    [0]
    ```
    """
    if batch_size < 1 or candidate_batch_size < 1:
        raise ValueError(
            f"batch_size and candidate_batch_size must be >= 1, got {batch_size} and {candidate_batch_size}."
        )
    _check_inputs(images, prompts, candidates, qformer_prompts, dataset)
    tokens = _tokenise_candidates(model, processor, prompts, candidates, append_eos, dataset)
    scores: list[list[float]] = [[math.nan] * len(sample) for sample in tokens]
    with _inference(model):
        for start in range(0, len(tokens), batch_size):
            stop = min(start + batch_size, len(tokens))
            qformer = None if qformer_prompts is None else qformer_prompts[start:stop]
            prefix = _encode_prefix(model, processor, images[start:stop], prompts[start:stop], qformer)
            # Ragged candidate lists: flatten the (sample, candidate) pairs, score them in chunks, map back.
            pairs = [(i, j) for i in range(start, stop) for j in range(len(tokens[i]))]
            for first in range(0, len(pairs), candidate_batch_size):
                chunk = pairs[first : first + candidate_batch_size]
                values = _score_chunk(model, prefix, [i - start for i, _ in chunk], [tokens[i][j] for i, j in chunk])
                for (i, j), value in zip(chunk, values):
                    scores[i][j] = value
    return RankingResult.from_scores(scores, [[len(t) for t in sample] for sample in tokens])


# ----- the definition: one full forward per candidate ----------------------------------------------------------------
def rank_candidates_naive(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    candidates: Sequence[Sequence[str]],
    *,
    qformer_prompts: Sequence[str] | None = None,
    append_eos: bool | None = None,
    dataset: str | None = None,
) -> RankingResult:
    """The reference for `rank_candidates`: one full model forward per (sample, candidate), nothing reused.

    Each forward runs the vision tower, the Q-Former and the LLM over prompt + candidate (causal) or prompt ->
    candidate (encoder-decoder) through the model's own ``forward``, one sample, no padding. Slow by design; the
    arguments mean the same as in `rank_candidates`.
    """
    _check_inputs(images, prompts, candidates, qformer_prompts, dataset)
    tokens = _tokenise_candidates(model, processor, prompts, candidates, append_eos, dataset)
    decoder_only = model.config.use_decoder_only_language_model
    device = model.device
    vision_dtype = next(model.vision_model.parameters()).dtype
    scores: list[list[float]] = []
    with _inference(model):
        for i, sample in enumerate(tokens):
            inputs = processor(images=[images[i]], text=[prompts[i]])
            if qformer_prompts is not None:
                inputs.update(processor.qformer_inputs([qformer_prompts[i]]))
            prompt_ids = torch.as_tensor(inputs["input_ids"], device=device)  # (1, P)
            common = {
                "pixel_values": inputs["pixel_values"].to(device, vision_dtype),
                "qformer_input_ids": torch.as_tensor(inputs["qformer_input_ids"], device=device),
                "qformer_attention_mask": torch.as_tensor(inputs["qformer_attention_mask"], device=device),
            }
            row = []
            for candidate in sample:
                target = torch.tensor([candidate], device=device)  # (1, L)
                length = target.shape[1]
                if decoder_only:
                    # positions P-1 .. P+L-2 predict the candidate's L tokens; only those logits are computed
                    out = model(**common, input_ids=torch.cat([prompt_ids, target], 1), logits_to_keep=length + 1)
                    logits = out.logits[:, :-1]  # (1, L, V)
                else:
                    out = model(**common, input_ids=prompt_ids, labels=target)
                    logits = out.logits  # (1, L, V): decoder input = start token + candidate, shifted
                log_probs = logits.float().log_softmax(-1).gather(2, target[..., None])  # (1, L, 1)
                row.append(float(log_probs.sum()))
            scores.append(row)
    return RankingResult.from_scores(scores, [[len(t) for t in sample] for sample in tokens])


# ----- binary tasks ------------------------------------------------------------------------------------------------
def score_verbalisers(
    model: Any,
    processor: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    verbalisers: str | tuple[Sequence[str], Sequence[str]] = "binary",
    *,
    reduce: Literal["logsumexp", "max"] = "logsumexp",
    **kwargs: Any,
) -> VerbaliserResult:
    """Binary decision by verbaliser words (arXiv 2305.06500 §2.5): positive (yes/true) against negative (no/false).

    Every word of both sets is ranked as a candidate (`rank_candidates`); a class's score is the ``logsumexp`` of
    its words' log-likelihoods (the log of the probability that the answer is *any* of its words; the default) or
    their ``max`` (the best word only). ``log_odds`` = positive score - negative score.

    Args:
        model: An [`InstructBlipForConditionalGeneration`].
        processor: Its [`InstructBlipProcessor`].
        images: One entry per sample.
        prompts: One instruction per sample.
        verbalisers: A name in [`VERBALISERS`], or ``(positive words, negative words)``.
        reduce: ``"logsumexp"`` or ``"max"``, how a class's words combine.
        kwargs: Passed to `rank_candidates` (``batch_size``, ``append_eos``, ``dataset``, ...).
    """
    if isinstance(verbalisers, str):
        if verbalisers not in VERBALISERS:
            raise ValueError(f"Unknown verbaliser set {verbalisers!r}; known: {sorted(VERBALISERS)}.")
        positive, negative = VERBALISERS[verbalisers]
    else:
        positive, negative = tuple(verbalisers[0]), tuple(verbalisers[1])
    if not positive or not negative:
        raise ValueError(f"Verbalisers need at least one positive and one negative word, got {verbalisers!r}.")
    if reduce not in ("logsumexp", "max"):
        raise ValueError(f"reduce must be 'logsumexp' or 'max', got {reduce!r}.")
    words = [*positive, *negative]
    ranking = rank_candidates(model, processor, images, prompts, [words] * len(prompts), **kwargs)
    combine = torch.logsumexp if reduce == "logsumexp" else torch.amax
    scores = torch.tensor(ranking.scores, dtype=torch.float64)  # (N, |pos| + |neg|)
    positive_scores = combine(scores[:, : len(positive)], dim=1)  # (N,)
    negative_scores = combine(scores[:, len(positive) :], dim=1)  # (N,)
    log_odds = positive_scores - negative_scores
    return VerbaliserResult(
        positive_scores=positive_scores.tolist(),
        negative_scores=negative_scores.tolist(),
        log_odds=log_odds.tolist(),
        probabilities=torch.sigmoid(log_odds).tolist(),
        labels=(log_odds >= 0).long().tolist(),
        ranking=ranking,
    )
