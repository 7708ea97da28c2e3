"""Batches of samples of similar length, so that little padding is computed.

A batch is padded to its longest sample; with samples in random order, a batch of short answers next to one long
caption computes mostly padding. transformers' ``LengthGroupedSampler`` idea, made seeded and resumable: the
random order is cut into runs of ``group_batches`` (50) batches, each run is sorted by length and cut into batches,
and the batches of a run are shuffled. Every sample is still seen once per pass, in an order that depends on
``(seed, epoch)`` only, so a run resumed from a checkpoint draws the same batches; what changes is which samples share
a batch (and which step sees them: 50 batches is the horizon over which the order is rearranged).

[`group_by_length`] rearranges any order (the balanced mixture uses it within each dataset, `data.mixture`);
[`LengthGroupedSampler`] is the sampler of plain (non-mixture) training. Lengths are the samples' LLM text tokens
(instruction + target, `InstructBlipDataCollator.sample_lengths`), computed once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["GROUP_BATCHES", "LengthGroupedSampler", "group_by_length", "padding_share"]

#: Batches per run sorted by length (transformers' ``LengthGroupedSampler`` sorts "megabatches" of 50 batches).
GROUP_BATCHES = 50


def group_by_length(
    order: np.ndarray,
    lengths: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
    group_batches: int = GROUP_BATCHES,
) -> np.ndarray:
    """``order`` (indices into ``lengths``) rearranged into batches of similar length.

    Each run of ``group_batches * batch_size`` consecutive indices is sorted by length (longest first, ties in their
    random order) and cut into batches of ``batch_size``, whose order within the run ``rng`` then shuffles. A last,
    partial batch stays last, so every other batch keeps ``batch_size`` indices in the stream.
    """
    order = np.asarray(order, dtype=np.int64)
    span = group_batches * batch_size
    runs = []
    for start in range(0, len(order), span):
        run = order[start : start + span]
        run = run[np.argsort(-lengths[run], kind="stable")]
        full = len(run) // batch_size
        batches = run[: full * batch_size].reshape(full, batch_size)[rng.permutation(full)]
        runs += [batches.reshape(-1), run[full * batch_size :]]
    return np.concatenate(runs) if runs else order


def padding_share(lengths: Sequence[int], order: Sequence[int], batch_size: int, fixed: int = 0) -> float:
    """Share of the positions computed by ``batch_size`` batches of ``order`` that are padding.

    Each batch computes ``batch_size x (fixed + its longest length)`` positions (``fixed``: tokens every sample has,
    such as the image tokens).
    """
    computed = padded = 0
    for start in range(0, len(order), batch_size):
        batch = [lengths[i] for i in order[start : start + batch_size]]
        width = fixed + max(batch)
        computed += width * len(batch)
        padded += sum(width - fixed - length for length in batch)
    return padded / computed if computed else 0.0


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """Every index once per epoch, in batches of similar length (see the module docstring).

    Args:
        lengths: The length of every sample (instruction + target tokens).
        batch_size: The unit of grouping: the samples of one optimizer step over all processes (per-device batch x
            gradient accumulation x processes), so that the samples of each step do not depend on how the step is
            split into micro-batches and processes.
        seed: Seed; `set_epoch` changes the order per epoch (as ``DistributedSampler`` does).
        group_batches: Batches per run sorted by length.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = GROUP_BATCHES):
        if batch_size < 1:
            raise ValueError(f"LengthGroupedSampler: batch_size must be >= 1, got {batch_size}.")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = group_by_length(
            rng.permutation(len(self.lengths)), self.lengths, self.batch_size, rng, self.group_batches
        )
        return iter(order.tolist())
