"""Batches of similar length (`data.length_grouping`): in plain training and within the balanced mixture's batches,
every sample still seen once per pass, seeded, less padding; the lengths the collator measures; the trainer's
samplers."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
from torch.utils.data import RandomSampler, SequentialSampler

from conftest import make_processor, model_for
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.length_grouping import LengthGroupedSampler, group_by_length, padding_share
from hf_instructblip.data.mixture import BalancedMixtureSampler, concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

SIZES = {"captions": 300, "vqa": 200, "ocr": 100}


def _lengths(seed: int = 0) -> np.ndarray:
    """Lengths from 3 to 60 tokens, different per dataset (captions long, VQA answers short)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(20, 60, 300), rng.integers(3, 12, 200), rng.integers(5, 40, 100)])


def _dataset_of(index: int) -> int:
    return int(np.searchsorted(np.cumsum(list(SIZES.values())), index, side="right"))


def test_group_by_length_rearranges_runs_into_batches_of_similar_length():
    lengths = _lengths()
    order = np.random.default_rng(0).permutation(len(lengths))
    grouped = group_by_length(order, lengths, batch_size=8, rng=np.random.default_rng(1), group_batches=10)
    assert sorted(grouped) == sorted(order)
    for start in range(0, len(order), 80):  # each run of 10 batches holds the same samples as before
        assert sorted(grouped[start : start + 80]) == sorted(order[start : start + 80])
    assert padding_share(lengths, grouped, 8) < padding_share(lengths, order, 8) / 3
    batch_maxima = [lengths[grouped[i : i + 8]].max() for i in range(0, 80, 8)]
    assert batch_maxima != sorted(batch_maxima, reverse=True)  # the batches of a run are shuffled
    # a last, partial batch stays last: every other batch keeps 8 samples in the stream
    short = group_by_length(order[:21], lengths, 4, np.random.default_rng(2))
    assert sorted(short[-1:]) == sorted(order[:21][np.argsort(-lengths[order[:21]], kind="stable")][-1:])


def test_padding_share_counts_positions_of_each_batch_padded_to_its_longest():
    # batches [2, 4] and [3]: widths 4 + 10 fixed and 3 + 10 -> padding 2 of 28 + 13 = 41 positions
    assert padding_share([2, 4, 3], [0, 1, 2], batch_size=2, fixed=10) == pytest.approx(2 / 41)


def test_plain_sampler_is_a_seeded_permutation_per_epoch_with_little_padding():
    lengths = _lengths()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(len(lengths))) and len(sampler) == len(lengths)
    assert first == list(LengthGroupedSampler(lengths, batch_size=8, seed=3))  # a resumed run draws the same
    sampler.set_epoch(1)
    assert list(sampler) != first
    random_order = np.random.default_rng(3).permutation(len(lengths))
    assert padding_share(lengths, first, 8) < padding_share(lengths, random_order, 8) / 3


def test_mixture_groups_within_one_dataset_batches_and_walks_each_dataset_before_repeating():
    lengths = _lengths()
    kwargs = {"batch_size": 8, "num_samples": 4000, "seed": 5}
    grouped = list(BalancedMixtureSampler(SIZES, lengths=lengths, **kwargs))
    plain = list(BalancedMixtureSampler(SIZES, **kwargs))
    assert grouped == list(BalancedMixtureSampler(SIZES, lengths=lengths, **kwargs))  # seeded
    blocks = [grouped[i : i + 8] for i in range(0, len(grouped), 8)]
    assert all(len({_dataset_of(i) for i in block}) == 1 for block in blocks)  # one dataset per batch (LAVIS)
    counts = Counter(_dataset_of(b[0]) for b in blocks)
    plain_counts = Counter(_dataset_of(plain[i]) for i in range(0, len(plain), 8))
    assert counts == plain_counts  # the datasets are drawn as before; only which of their samples changes
    ocr = [i for i in grouped if _dataset_of(i) == 2]
    assert sorted(ocr[:100]) == list(range(500, 600))  # every sample once before any repeats
    assert padding_share(lengths, grouped, 8) < padding_share(lengths, plain, 8) / 2


def test_mixed_batches_group_by_the_step_so_the_split_does_not_matter():
    lengths = _lengths()
    common = {"same_dataset_per_batch": False, "num_samples": 600, "seed": 1, "lengths": lengths, "group_size": 8}
    two_per_device = list(BalancedMixtureSampler(SIZES, batch_size=2, **common))
    eight_at_once = list(BalancedMixtureSampler(SIZES, batch_size=8, **common))
    assert two_per_device == eight_at_once
    plain = list(BalancedMixtureSampler(SIZES, batch_size=8, same_dataset_per_batch=False, num_samples=600, seed=1))
    assert sorted(eight_at_once) == sorted(plain)  # the same draw, rearranged
    assert padding_share(lengths, eight_at_once, 8) < padding_share(lengths, plain, 8) / 3
    with pytest.raises(ValueError, match="3 lengths for 600 samples"):
        BalancedMixtureSampler(SIZES, 8, lengths=[1, 2, 3])


@pytest.fixture(scope="module")
def setup(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    parts = synthetic_mixture(SYNTHETIC_HELD_IN, 6, seed=0, image_size=32)
    return processor, parts


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_collator_lengths_are_the_text_positions_of_each_sample_alone(setup, llm):
    processor, parts = setup
    dataset = concatenate_mixture(parts)
    collator = InstructBlipDataCollator(processor, decoder_only=llm == "llama", augment_images=False)
    lengths = collator.sample_lengths(dataset, chunk=7)  # several chunks
    assert lengths == collator.sample_lengths([dataset[i] for i in range(len(dataset))])  # a list of samples too
    for i, length in enumerate(lengths):
        batch = collator([dataset[i]])
        text = int(batch["attention_mask"].sum()) - processor.num_query_tokens
        if llm == "t5":
            text += int((batch["labels"] != -100).sum())  # the decoder's target
        assert length == text, i
    assert len(set(lengths)) > 3


def _args(tmp_path, **overrides) -> InstructBlipTrainingArguments:
    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": 2, "report_to": [], "use_cpu": True}
    return InstructBlipTrainingArguments(**{**settings, **overrides})


def test_trainer_groups_plain_and_mixture_training_by_the_samples_of_a_step(setup, tmp_path):
    processor, parts = setup
    model = model_for(processor)
    dataset = concatenate_mixture(parts)
    collator = InstructBlipDataCollator.for_model(model, processor)
    args = _args(tmp_path, gradient_accumulation_steps=3)
    trainer = InstructBlipTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and sampler.batch_size == 6  # 2 per device x 3 accumulated
    assert list(sampler.lengths) == collator.sample_lengths(dataset)
    assert isinstance(trainer._get_eval_sampler(dataset), SequentialSampler)  # evaluation keeps its order

    sizes = {name: len(part) for name, part in parts.items()}
    mixed = InstructBlipTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, mixture_sizes=sizes
    )._get_train_sampler()
    assert isinstance(mixed, BalancedMixtureSampler) and mixed.lengths is not None and mixed.group_size == 6

    random = _args(tmp_path, train_sampling_strategy="random")
    plain = InstructBlipTrainer(model=model, args=random, train_dataset=dataset, data_collator=collator)
    assert isinstance(plain._get_train_sampler(), RandomSampler)


def test_without_a_way_to_measure_lengths_batches_are_random_with_a_warning(setup, tmp_path, caplog):
    processor, parts = setup
    trainer = InstructBlipTrainer(
        model=model_for(processor),
        args=_args(tmp_path),
        train_dataset=concatenate_mixture(parts),
        data_collator=lambda samples: samples,
    )
    with caplog.at_level(logging.WARNING):
        assert isinstance(trainer._get_train_sampler(), RandomSampler)
    assert "batches are drawn at random" in caplog.text

    with_column = concatenate_mixture(parts).add_column("length", list(range(30)))
    trainer = InstructBlipTrainer(
        model=model_for(processor), args=_args(tmp_path), train_dataset=with_column, data_collator=lambda s: s
    )
    assert list(trainer._get_train_sampler().lengths) == list(range(30))
