"""Balanced dataset mixtures (arXiv 2305.06500 §2.4).

Dataset d is drawn with probability sqrt(S_d) * m_d / sum_i sqrt(S_i) * m_i.

The square root keeps small datasets from being drowned out by large ones without repeating them endlessly; the
multipliers ``m_d`` are the paper's manual adjustments (A-OKVQA down-weighted, OKVQA up-weighted; the factors
were not published, so they are yours to set).

* Map-style datasets: [`BalancedMixtureSampler`] yields indices into ``concatenate_datasets(list(parts.values()))``
  (see [`concatenate_mixture`]); either every batch comes from one dataset (as LAVIS does) or each sample is drawn
  independently ("mixed within a batch").
* Streaming datasets: [`interleave_mixture`] uses ``datasets.interleave_datasets`` with the same probabilities; with
  ``same_dataset_per_batch=True`` it interleaves whole batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import datasets
import numpy as np
import torch

from .length_grouping import group_by_length

__all__ = ["BalancedMixtureSampler", "concatenate_mixture", "interleave_mixture", "mixture_weights"]


def mixture_weights(sizes: Mapping[str, int], multipliers: Mapping[str, float] | None = None) -> dict[str, float]:
    """Sampling probability of each dataset: proportional to ``sqrt(size) * multiplier``.

    Args:
        sizes: Dataset name -> number of samples.
        multipliers: Dataset name -> manual factor (default 1.0); names must be in ``sizes``.

    Raises:
        ValueError: empty mixture, a size < 1, a multiplier < 0 or naming an unknown dataset, or all weights zero.
    """
    if not sizes:
        raise ValueError("mixture_weights: the mixture has no datasets.")
    multipliers = dict(multipliers or {})
    unknown = sorted(set(multipliers) - set(sizes))
    if unknown:
        raise ValueError(f"mixture_weights: multipliers name datasets not in the mixture: {unknown}.")
    raw = {}
    for name, size in sizes.items():
        if size < 1:
            raise ValueError(f"mixture_weights: dataset {name!r} has size {size}; every dataset needs samples.")
        factor = multipliers.get(name, 1.0)
        if factor < 0 or not math.isfinite(factor):
            raise ValueError(f"mixture_weights: multiplier of {name!r} must be finite and >= 0, got {factor}.")
        raw[name] = math.sqrt(size) * factor
    total = sum(raw.values())
    if total == 0:
        raise ValueError("mixture_weights: every multiplier is zero.")
    return {name: weight / total for name, weight in raw.items()}


def concatenate_mixture(parts: Mapping[str, datasets.Dataset]) -> datasets.Dataset:
    """One map-style dataset holding ``parts`` in order, for [`BalancedMixtureSampler`]."""
    return datasets.concatenate_datasets(list(parts.values()))


class BalancedMixtureSampler(torch.utils.data.Sampler[int]):
    """Indices into the concatenation of several map-style datasets, drawn by the balanced mixture.

    Each dataset is walked through a fresh random permutation (so every sample is seen before any repeats), and
    the dataset to draw from is picked with the mixture probabilities.

    Args:
        sizes: Dataset name -> size, in the order the datasets are concatenated.
        batch_size: Batch size of the DataLoader the sampler feeds (per device).
        multipliers: Manual factors for [`mixture_weights`].
        same_dataset_per_batch: True: each consecutive block of ``batch_size`` indices comes from one dataset
            (LAVIS); False: each index picks its dataset independently.
        num_samples: Indices per epoch (default: the total size, rounded up to whole batches).
        seed: Seed; `set_epoch` changes the stream per epoch (as ``DistributedSampler`` does).
        lengths: Length of every sample of the concatenation (instruction + target tokens): batches are then formed
            of samples of similar length (`data.length_grouping`), so little padding is computed. One dataset per
            batch: each dataset's random order is rearranged in runs of 50 batches (sorted by length, cut into
            batches, the batches shuffled), so each dataset is still walked through once before repeating and the
            datasets are drawn as before. Mixed batches: the drawn stream is rearranged the same way, in groups of
            ``group_size``. Seeded like the rest: a resumed run draws the same batches.
        group_size: Mixed batches with ``lengths``: the unit of grouping, the samples of one optimizer step over all
            processes (per-device batch x accumulation x processes; default ``batch_size``), so each step's samples
            do not depend on how it is split.
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        batch_size: int,
        multipliers: Mapping[str, float] | None = None,
        same_dataset_per_batch: bool = True,
        num_samples: int | None = None,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        group_size: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"BalancedMixtureSampler: batch_size must be >= 1, got {batch_size}.")
        if lengths is not None and len(lengths) != sum(sizes.values()):
            raise ValueError(
                f"BalancedMixtureSampler: {len(lengths)} lengths for {sum(sizes.values())} samples; give one length "
                "per sample of the concatenated datasets."
            )
        self.names = list(sizes)
        self.sizes = np.array([sizes[n] for n in self.names], dtype=np.int64)
        self.weights = mixture_weights(sizes, multipliers)
        self.probabilities = np.array([self.weights[n] for n in self.names])
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self.batch_size = batch_size
        self.same_dataset_per_batch = same_dataset_per_batch
        total = int(self.sizes.sum()) if num_samples is None else num_samples
        self.num_samples = -(-total // batch_size) * batch_size if same_dataset_per_batch else total
        self.seed = seed
        self.epoch = 0
        self.lengths = None if lengths is None else np.asarray(lengths, dtype=np.int64)
        self.group_size = group_size or batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        # its own generator: the datasets drawn and their orders are those of the sampler without lengths, rearranged
        grouping_rng = np.random.default_rng((self.seed, self.epoch, 1))
        grouped = self.lengths is not None and self.same_dataset_per_batch

        def permutation(d: int) -> np.ndarray:
            order = rng.permutation(int(self.sizes[d]))
            if not grouped:
                return order
            lengths = self.lengths[self.offsets[d] : self.offsets[d] + self.sizes[d]]  # type: ignore[index]
            return group_by_length(order, lengths, self.batch_size, grouping_rng)

        orders = [permutation(d) for d in range(len(self.sizes))]
        cursors = [0] * len(self.sizes)

        def draw(d: int) -> int:
            if cursors[d] == len(orders[d]):  # dataset exhausted: start a new pass over it
                orders[d] = permutation(d)
                cursors[d] = 0
            index = int(self.offsets[d] + orders[d][cursors[d]])
            cursors[d] += 1
            return index

        if self.same_dataset_per_batch:
            for _ in range(self.num_samples // self.batch_size):
                d = int(rng.choice(len(self.sizes), p=self.probabilities))
                for _ in range(self.batch_size):
                    yield draw(d)
            return
        stream = np.array(
            [draw(int(d)) for d in rng.choice(len(self.sizes), size=self.num_samples, p=self.probabilities)]
        )
        if self.lengths is not None:
            stream = group_by_length(stream, self.lengths, self.group_size, grouping_rng)
        yield from stream.tolist()


def _unbatch(batch: dict[str, list]) -> dict[str, list]:
    return {key: value[0] for key, value in batch.items()}


def interleave_mixture(
    parts: Mapping[str, datasets.IterableDataset],
    sizes: Mapping[str, int],
    multipliers: Mapping[str, float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    same_dataset_per_batch: bool = False,
) -> datasets.IterableDataset:
    """Streaming balanced mixture with ``datasets.interleave_datasets`` (probabilities from [`mixture_weights`]).

    Streaming datasets do not know their size: pass ``sizes`` (e.g. from the dataset card). With
    ``same_dataset_per_batch=True`` whole batches of ``batch_size`` are interleaved, then flattened again, so each
    consecutive block of ``batch_size`` samples comes from one dataset.
    """
    if set(parts) != set(sizes):
        raise ValueError(
            f"interleave_mixture: parts {sorted(parts)} and sizes {sorted(sizes)} name different datasets."
        )
    weights = mixture_weights(sizes, multipliers)
    names = list(parts)
    streams = [parts[n] for n in names]
    if same_dataset_per_batch:
        if not batch_size:
            raise ValueError("interleave_mixture: same_dataset_per_batch=True needs batch_size.")
        streams = [s.batch(batch_size, drop_last_batch=True) for s in streams]
    mixed = datasets.interleave_datasets(
        streams, probabilities=[weights[n] for n in names], seed=seed, stopping_strategy="all_exhausted"
    )
    if same_dataset_per_batch:
        mixed = mixed.map(_unbatch, batched=True, batch_size=1)
    return mixed
