"""Balanced mixture: sqrt(size) x multiplier proportions, for map-style (both batch modes) and streaming datasets."""

from __future__ import annotations

import math
from collections import Counter

import datasets
import numpy as np
import pytest

from hf_instructblip.data.mixture import (
    BalancedMixtureSampler,
    concatenate_mixture,
    interleave_mixture,
    mixture_weights,
)

SIZES = {"vqav2": 400, "okvqa": 100, "aokvqa": 25}
MULTIPLIERS = {"okvqa": 2.0, "aokvqa": 0.5}


def _expected(sizes, multipliers):
    raw = {n: math.sqrt(s) * multipliers.get(n, 1.0) for n, s in sizes.items()}
    return {n: w / sum(raw.values()) for n, w in raw.items()}


def _within(counts: Counter, expected: dict[str, float], n: int, sigmas: float = 5.0) -> None:
    for name, p in expected.items():
        tolerance = sigmas * math.sqrt(p * (1 - p) / n)  # binomial standard error: cannot flake at 5 sigma
        assert abs(counts[name] / n - p) <= tolerance, (name, counts[name] / n, p)


def test_weights_follow_the_formula():
    weights = mixture_weights(SIZES, MULTIPLIERS)
    expected = _expected(SIZES, MULTIPLIERS)
    assert weights.keys() == expected.keys()
    for name in SIZES:
        assert weights[name] == pytest.approx(expected[name], abs=1e-12)
    # sqrt: 16x the data gets 4x the weight (without multipliers)
    plain = mixture_weights({"a": 1600, "b": 100})
    assert plain["a"] / plain["b"] == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("sizes", "multipliers", "pattern"),
    [
        ({}, None, "no datasets"),
        ({"a": 0}, None, "size 0"),
        ({"a": 5}, {"b": 1.0}, "not in the mixture"),
        ({"a": 5}, {"a": -1.0}, ">= 0"),
        ({"a": 5}, {"a": 0.0}, "every multiplier is zero"),
    ],
)
def test_weight_errors(sizes, multipliers, pattern):
    with pytest.raises(ValueError, match=pattern):
        mixture_weights(sizes, multipliers)


def _dataset_of(index: int) -> str:
    edges = np.cumsum(list(SIZES.values()))
    return list(SIZES)[int(np.searchsorted(edges, index, side="right"))]


@pytest.mark.parametrize("same_dataset_per_batch", [True, False])
def test_sampler_proportions(same_dataset_per_batch):
    batch = 8
    sampler = BalancedMixtureSampler(
        SIZES, batch, MULTIPLIERS, same_dataset_per_batch=same_dataset_per_batch, num_samples=40_000, seed=3
    )
    indices = list(sampler)
    assert len(indices) == len(sampler) == 40_000
    assert all(0 <= i < sum(SIZES.values()) for i in indices)
    names = [_dataset_of(i) for i in indices]
    if same_dataset_per_batch:
        blocks = [names[i : i + batch] for i in range(0, len(names), batch)]
        assert all(len(set(block)) == 1 for block in blocks)  # whole batch from one dataset (LAVIS)
        _within(Counter(block[0] for block in blocks), _expected(SIZES, MULTIPLIERS), len(blocks))
    else:
        assert any(len(set(names[i : i + batch])) > 1 for i in range(0, 800, batch))  # mixed within a batch
        _within(Counter(names), _expected(SIZES, MULTIPLIERS), len(names))


def test_sampler_visits_every_sample_before_repeating_and_is_seeded():
    sampler = BalancedMixtureSampler({"only": 50}, batch_size=5, num_samples=50, seed=1)
    assert sorted(sampler) == list(range(50))
    a = list(BalancedMixtureSampler(SIZES, 4, seed=7))
    assert a == list(BalancedMixtureSampler(SIZES, 4, seed=7))
    assert a != list(BalancedMixtureSampler(SIZES, 4, seed=8))
    sampler = BalancedMixtureSampler(SIZES, 4, seed=7)
    sampler.set_epoch(1)
    assert list(sampler) != a


def test_sampler_indexes_the_concatenation():
    parts = {name: datasets.Dataset.from_dict({"dataset": [name] * size}) for name, size in SIZES.items()}
    mixture = concatenate_mixture(parts)
    sampler = BalancedMixtureSampler({n: len(d) for n, d in parts.items()}, 4, num_samples=400, seed=0)
    for index in sampler:
        assert mixture[index]["dataset"] == _dataset_of(index)


def _stream(name: str):
    def rows():
        i = 0
        while True:  # infinite, like a large streaming dataset
            yield {"dataset": name, "i": i}
            i += 1

    return datasets.IterableDataset.from_generator(rows)


@pytest.mark.parametrize("same_dataset_per_batch", [False, True])
def test_streaming_proportions(same_dataset_per_batch):
    parts = {name: _stream(name) for name in SIZES}
    mixed = interleave_mixture(
        parts, SIZES, MULTIPLIERS, seed=0, batch_size=4, same_dataset_per_batch=same_dataset_per_batch
    )
    rows = [row["dataset"] for row in mixed.take(8_000)]
    expected = _expected(SIZES, MULTIPLIERS)
    if same_dataset_per_batch:
        blocks = [rows[i : i + 4] for i in range(0, len(rows), 4)]
        assert all(len(set(b)) == 1 for b in blocks)
        _within(Counter(b[0] for b in blocks), expected, len(blocks))
    else:
        _within(Counter(rows), expected, len(rows))
