"""Unified samples -> a training batch for causal or encoder-decoder LLMs.

The layout of LAVIS' `blip2_vicuna_instruct.py` / `blip2_t5_instruct.py` ``forward``.

Causal LLM (Vicuna-style): ``[image tokens][instruction][target + eos]``; labels are -100 on the image tokens, the
instruction and the padding, so the loss is on the response only. The target follows the instruction as natural
text for every tokenizer kind (`HfInstructBlipProcessor.continuation_ids`: a space before it for byte-level BPE
tokenizers, which would otherwise glue ``"...?circle"``). Encoder-decoder LLM (FlanT5-style): encoder ``[image
tokens][instruction]``, decoder labels ``target + eos``. The Q-Former reads ``qformer_text`` (the instruction unless
a sample says otherwise), truncated from the left to 128 Q-Former tokens.

Text lengths, as LAVIS (``max_txt_len=128``, ``max_output_txt_len=256``):

* the instruction is at most ``max_instruction_length`` (128) LLM tokens, special tokens included, truncated from
  the left: it loses its beginning but keeps the tokenizer's BOS (and, for T5, its closing ``</s>``);
* the target is at most ``max_target_length`` (256) tokens, eos included, truncated from the right: causal LLMs
  lose the eos of a cut target (LAVIS' Vicuna cuts ``target + eos`` as text), encoder-decoder LLMs keep it (T5's
  tokenizer adds ``</s>`` after truncating);
* ``max_length`` (default none) additionally bounds the whole LLM input, image tokens included: the target is
  shortened to fit (keeping at least one token), then the instruction loses its beginning. Never the image tokens.

Images: by default LAVIS' training transform, a random resized crop (area 0.5-1) and a horizontal flip with
probability ``hflip`` (`image_processing_instructblip.RandomResizedCrop`); evaluation uses the plain resize
(`for_evaluation`, which `InstructBlipTrainer` uses for its eval loss). A sample's crop is a pure function of
``(seed, epoch, the sample's content)``: no global random state and nothing about the batch it sits in, so any
split of a batch into micro-batches or processes, any dataloader worker and a resume from a checkpoint give the same
crops; `InstructBlipTrainer` sets the epoch at the start of each (`set_epoch`), so a sample is cropped anew every
epoch. A sample drawn twice in one epoch gets the same crop (twice in one batch: two different ones).

With a ``feature_cache`` (`data.VisionFeatureCache`), batches carry the cached frozen vision features as
``image_embeds`` (``(B, N, D)``, or ``(B, T, N, D)`` for ``T`` images/frames) instead of ``pixel_values``. The cache
holds features of the evaluation transform, so training from it uses no random crops: the cache is the fast path,
random crops the faithful one. ``augment_images=True`` with a cache is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..image_processing_instructblip import RandomResizedCrop
from ..processing_instructblip import HfInstructBlipProcessor, pad_sequences
from .feature_cache import VisionFeatureCache

__all__ = ["IGNORE_INDEX", "InstructBlipDataCollator"]

IGNORE_INDEX = -100


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


def _special_tokens_around_text(tokenizer: Any) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text (Llama: BOS = (1, 0); T5: (0, 1))."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return start, len(full) - start - len(plain)
    raise ValueError("InstructBlipDataCollator: the LLM tokenizer's special tokens change the text's own tokens.")


def _sample_digest(sample: Mapping[str, Any], index: int) -> bytes:
    """A digest of one sample's content: its images (decoded pixels, as the feature cache keys them) and texts."""
    digest = hashlib.blake2b(digest_size=16)
    for key in ("instruction", "target"):
        digest.update(str(sample.get(key, "")).encode() + b"\0")
    for t, image in enumerate(sample["images"]):
        try:
            digest.update(VisionFeatureCache.image_key(image).encode())
        except (TypeError, ValueError, OSError) as error:
            raise ValueError(f"InstructBlipDataCollator: batch sample {index} image {t}: {error}") from error
    return digest.digest()


def _columns(samples: Sequence[Mapping[str, Any]], start: int, count: int) -> dict[str, list[str]]:
    """``instruction`` and ``target`` of rows ``start`` to ``start + count`` of a list of samples."""
    rows = [samples[i] for i in range(start, min(start + count, len(samples)))]
    try:
        return {key: [str(row[key]) for row in rows] for key in ("instruction", "target")}
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"InstructBlipDataCollator.sample_lengths: rows {start}-{start + len(rows) - 1} are not unified samples "
            f"with `instruction` and `target` ({error!r})."
        ) from None


@dataclass
class InstructBlipDataCollator:
    """Collate unified instruction samples (see `schema.py`) into model inputs with labels.

    Args:
        processor: The model's processor (image processor, LLM tokenizer, Q-Former tokenizer).
        decoder_only: True for causal LLMs, False for encoder-decoder ones (see `for_model`).
        max_instruction_length: Longest instruction in LLM tokens, special tokens included (LAVIS ``max_txt_len``,
            128); longer ones lose their beginning, never the BOS. ``None``: no limit.
        max_target_length: Longest target, eos included (LAVIS ``max_output_txt_len``, 256). ``None``: no limit.
        max_length: Longest LLM input, image tokens included (causal: image + instruction + target; encoder-decoder:
            image + instruction), on top of the two limits above. ``None`` (default): no such bound.
        qformer_max_length: Longest Q-Former text (default: the processor's, 128).
        pad_to_multiple_of: Pad sequence lengths to a multiple of this (tensor cores like multiples of 8).
        image_kwargs: Passed to the image processor.
        feature_cache: A [`VisionFeatureCache`] built for this model and processor: batches then carry
            ``image_embeds`` instead of ``pixel_values`` and the vision tower does not run.
        augment_images: LAVIS' training image transform (random resized crop, flip). ``None`` (default): on, unless
            a ``feature_cache`` is given (its features are the evaluation transform's); ``True``: on (refused with a
            feature cache); ``False``: the evaluation transform (plain resize).
        crop_scale: Area range of the random crop, as a fraction of the image (LAVIS: 0.5-1.0).
        hflip: Probability of a horizontal flip. 0.5 is LAVIS' (for every dataset); it mirrors text in the image and
            swaps left and right, so data whose answers read text or name a side may want 0 (the synthetic configs
            and the demo use ``augment_images=False``: a crop can also cut a shape out of a synthetic scene).
        seed: Seed of the crops and flips (`InstructBlipTrainer` / `hf-instructblip train` pass the run's seed).
    """

    processor: HfInstructBlipProcessor
    decoder_only: bool
    max_instruction_length: int | None = 128
    max_target_length: int | None = 256
    max_length: int | None = None
    qformer_max_length: int | None = None
    pad_to_multiple_of: int | None = None
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_cache: VisionFeatureCache | None = None
    augment_images: bool | None = None
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.5
    seed: int = 0
    epoch: int = field(default=0, init=False)
    _train_transform: RandomResizedCrop | None = field(default=None, init=False, repr=False)
    _specials: tuple[int, int] = field(default=(0, 0), init=False, repr=False)

    @classmethod
    def for_model(cls, model: Any, processor: HfInstructBlipProcessor, **kwargs: Any) -> InstructBlipDataCollator:
        """A collator matching ``model``'s LLM type (and a ``feature_cache``, if given, checked against ``model``)."""
        collator = cls(processor, decoder_only=model.config.use_decoder_only_language_model, **kwargs)
        if collator.feature_cache is not None:
            collator.feature_cache.check_compatible(model, None)
        return collator

    def __post_init__(self) -> None:
        tokenizer = self.processor.tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError(
                "InstructBlipDataCollator: the LLM tokenizer has no eos token; targets must end with one."
            )
        if tokenizer.pad_token_id is None:
            raise ValueError("InstructBlipDataCollator: the LLM tokenizer has no pad token; set tokenizer.pad_token.")
        self._specials = _special_tokens_around_text(tokenizer)
        if self.max_instruction_length is not None and self.max_instruction_length <= sum(self._specials):
            raise ValueError(
                f"InstructBlipDataCollator: max_instruction_length={self.max_instruction_length} leaves no room for "
                f"text next to the tokenizer's {sum(self._specials)} special token(s)."
            )
        if self.max_target_length is not None and self.max_target_length < 1:
            raise ValueError(
                f"InstructBlipDataCollator: max_target_length must be >= 1, got {self.max_target_length}."
            )
        if self.feature_cache is not None:
            if self.image_kwargs:
                raise ValueError(
                    "InstructBlipDataCollator: image_kwargs cannot be combined with feature_cache (the cached features "
                    "were computed with the processor's own settings); set them on the image processor and rebuild."
                )
            if self.augment_images:
                raise ValueError(
                    "InstructBlipDataCollator: augment_images=True cannot be combined with feature_cache: the cache "
                    "holds features of the evaluation transform (plain resize), not of random crops. Train from "
                    "pixels for LAVIS' random crops, or leave augment_images unset to train on the cache."
                )
            self.feature_cache.check_compatible(None, self.processor)
        augment = self.augment_images if self.augment_images is not None else self.feature_cache is None
        self._train_transform = None
        if augment:
            self._train_transform = RandomResizedCrop(scale=tuple(self.crop_scale), hflip=self.hflip)  # type: ignore[arg-type]

    @property
    def train_transform(self) -> RandomResizedCrop | None:
        """The training image transform in use, or ``None`` (evaluation transform, or cached features)."""
        return self._train_transform

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the crops of the same batches change from one epoch to the next."""
        self.epoch = int(epoch)

    def for_evaluation(self) -> InstructBlipDataCollator:
        """This collator with the evaluation image transform (the plain resize), for evaluation batches."""
        if self._train_transform is None:
            return self
        return dataclasses.replace(self, augment_images=False)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("InstructBlipDataCollator: empty batch.")
        if self.feature_cache is not None:
            image_name, image_inputs = "image_embeds", self._cached_features(samples)
            num_frames = image_inputs.shape[1] if image_inputs.ndim == 4 else 1
        else:
            image_name, image_inputs = "pixel_values", self._pixel_values(samples)
            num_frames = image_inputs.shape[1] if image_inputs.ndim == 5 else 1
        n_image = self.processor.num_query_tokens * num_frames
        prompts, targets = self._text_ids([s["instruction"] for s in samples], [s["target"] for s in samples])
        batch = (
            self._causal(prompts, targets, n_image) if self.decoder_only else self._seq2seq(prompts, targets, n_image)
        )
        qformer_texts = [s.get("qformer_text") or s["instruction"] for s in samples]
        batch.update(self.processor.qformer_inputs(qformer_texts, self.qformer_max_length))
        tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        tensors[image_name] = image_inputs
        return tensors

    def _text_ids(self, instructions: list[str], targets: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """LLM token ids of the instructions (with special tokens) and targets (+ eos), each within its limit."""
        prompts = self.processor.tokenizer(instructions, add_special_tokens=True)["input_ids"]
        if self.decoder_only:
            target_ids = self.processor.continuation_ids(instructions, targets)
        else:  # the decoder's labels stand alone (LAVIS: T5 tokenises the answer on its own)
            target_ids = self.processor.tokenizer(targets, add_special_tokens=False)["input_ids"]
        return [self._cap_instruction(p) for p in prompts], [self._cap_target(t) for t in target_ids]

    def sample_lengths(self, dataset: Any, chunk: int = 1024) -> list[int]:
        """Each sample's LLM text tokens (instruction + target), as batches will hold them: what batches are grouped by.

        The image tokens, the same for every sample, are not counted; ``max_length`` caps as in batches. Only the
        ``instruction`` and ``target`` columns are read (no image is decoded), ``chunk`` rows at a time.
        """
        columns = getattr(dataset, "column_names", None)
        texts = dataset.select_columns(["instruction", "target"]) if columns is not None else dataset
        budget = None if self.max_length is None else self.max_length - self.processor.num_query_tokens
        lengths = []
        for start in range(0, len(texts), chunk):
            rows = texts[start : start + chunk] if columns is not None else _columns(texts, start, chunk)
            prompts, targets = self._text_ids(list(rows["instruction"]), list(rows["target"]))
            for prompt, target in zip(prompts, targets):
                total = len(prompt) + len(target)
                lengths.append(total if budget is None else min(total, budget))
        return lengths

    def _pixel_values(self, samples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        images = [list(s["images"]) for s in samples]
        if self._train_transform is None:
            return self.processor.pixel_values(images, **self.image_kwargs)
        prefix = f"{self.seed}/{self.epoch}/".encode()
        seen: dict[bytes, int] = {}  # a sample repeated within the batch gets a crop per occurrence
        seeds = []
        for i, sample in enumerate(samples):
            key = _sample_digest(sample, i)
            seen[key] = seen.get(key, -1) + 1
            material = prefix + key + seen[key].to_bytes(4, "little")
            seeds.append(int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "little"))
        return self.processor.pixel_values(
            images, train_transform=self._train_transform, seeds=seeds, **self.image_kwargs
        )

    def _cached_features(self, samples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """``(B, N, D)`` (one image per sample) or ``(B, T, N, D)`` from the feature cache, like ``pixel_values``."""
        assert self.feature_cache is not None
        features = []
        for i, sample in enumerate(samples):
            try:
                features.append(self.feature_cache.features(list(sample["images"])))  # (T, N, D)
            except KeyError as error:
                raise type(error)(f"InstructBlipDataCollator: batch sample {i}: {error}") from None
        counts = [f.shape[0] for f in features]
        if len(set(counts)) > 1:
            detail = ", ".join(f"sample {i}: {n}" for i, n in enumerate(counts))
            raise ValueError(
                f"InstructBlipDataCollator: all samples of a batch need the same number of frames ({detail})."
            )
        # one image per sample: (B, N, D), as pixel_values is (B, C, H, W); else (B, T, N, D)
        return torch.cat(features) if counts[0] == 1 else torch.stack(features)

    def _cap_instruction(self, prompt: list[int], limit: int | None = None) -> list[int]:
        """Left truncation to ``limit`` (default ``max_instruction_length``) keeping the special tokens (BOS)."""
        limit = self.max_instruction_length if limit is None else limit
        if limit is None or len(prompt) <= limit:
            return prompt
        head, tail = self._specials
        end = len(prompt) - tail
        text = max(limit - head - tail, 0)
        return (prompt[:head] + prompt[end - text : end] + prompt[end:])[:limit]

    def _cap_target(self, target: list[int]) -> list[int]:
        eos = self.processor.tokenizer.eos_token_id
        limit = self.max_target_length
        if limit is None or len(target) < limit:
            return [*target, eos]
        # LAVIS: Vicuna cuts ``target + eos`` (the eos goes); T5's tokenizer adds ``</s>`` after cutting the target
        return [*target, eos][:limit] if self.decoder_only else [*target[: limit - 1], eos]

    def _budget(self, n_image: int) -> int | None:
        if self.max_length is None:
            return None
        budget = self.max_length - n_image
        if budget < 2:
            raise ValueError(
                f"InstructBlipDataCollator: max_length={self.max_length} leaves {budget} token(s) after {n_image} "
                "image tokens; at least 2 are needed (instruction and target)."
            )
        return budget

    def _causal(self, prompts: list[list[int]], targets: list[list[int]], n_image: int) -> dict[str, list[list[int]]]:
        budget = self._budget(n_image)
        input_ids, labels = [], []
        for prompt, target in zip(prompts, targets):
            if budget is not None and len(prompt) + len(target) > budget:
                target = target[: max(budget - 1, 1)] if len(target) >= budget else target  # keep >= 1 target token
                prompt = self._cap_instruction(prompt, budget - len(target))  # loses its beginning, keeps its BOS
            input_ids.append([self.processor.image_token_id] * n_image + prompt + target)
            labels.append([IGNORE_INDEX] * (n_image + len(prompt)) + target)
        length = _round_up(max(map(len, input_ids)), self.pad_to_multiple_of)
        pad = self.processor.tokenizer.pad_token_id
        return {
            "input_ids": pad_sequences(input_ids, pad, length),
            "attention_mask": pad_sequences([[1] * len(s) for s in input_ids], 0, length),
            "labels": pad_sequences(labels, IGNORE_INDEX, length),
        }

    def _seq2seq(self, prompts: list[list[int]], targets: list[list[int]], n_image: int) -> dict[str, list[list[int]]]:
        budget = self._budget(n_image)
        input_ids = []
        for prompt in prompts:
            if budget is not None:
                prompt = self._cap_instruction(prompt, budget)
            input_ids.append([self.processor.image_token_id] * n_image + prompt)
        length = _round_up(max(map(len, input_ids)), self.pad_to_multiple_of)
        label_length = _round_up(max(map(len, targets)), self.pad_to_multiple_of)
        pad = self.processor.tokenizer.pad_token_id
        return {
            "input_ids": pad_sequences(input_ids, pad, length),
            "attention_mask": pad_sequences([[1] * len(s) for s in input_ids], 0, length),
            "labels": pad_sequences(targets, IGNORE_INDEX, label_length),
        }
