"""Unified samples -> a training batch for causal or encoder-decoder LLMs.

The layout of LAVIS' `blip2_vicuna_instruct.py` / `blip2_t5_instruct.py` ``forward``.

Causal LLM (Vicuna-style): ``[image tokens][instruction][target + eos]``; labels are -100 on the image tokens, the
instruction and the padding, so the loss is on the response only. Encoder-decoder LLM (FlanT5-style): encoder
``[image tokens][instruction]``, decoder labels ``target + eos``. The Q-Former reads ``qformer_text`` (left
truncation, 128 tokens).

Truncation (``max_length``) never touches the image tokens and never removes the whole target: the target is
shortened to fit (keeping at least one token), then the instruction loses its beginning.

With a ``feature_cache`` (`data.VisionFeatureCache`), batches carry the cached frozen vision features as
``image_embeds`` (``(B, N, D)``, or ``(B, T, N, D)`` for ``T`` images/frames) instead of ``pixel_values``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..processing_instructblip import HfInstructBlipProcessor, pad_sequences
from .feature_cache import VisionFeatureCache

__all__ = ["IGNORE_INDEX", "InstructBlipDataCollator"]

IGNORE_INDEX = -100


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


@dataclass
class InstructBlipDataCollator:
    """Collate unified instruction samples (see `schema.py`) into model inputs with labels.

    Args:
        processor: The model's processor (image processor, LLM tokenizer, Q-Former tokenizer).
        decoder_only: True for causal LLMs, False for encoder-decoder ones (see `for_model`).
        max_length: Longest LLM input, image tokens included (causal: image + instruction + target; encoder-decoder:
            image + instruction).
        max_target_length: Longest target, eos included.
        qformer_max_length: Longest Q-Former text (default: the processor's, 128).
        pad_to_multiple_of: Pad sequence lengths to a multiple of this (tensor cores like multiples of 8).
        image_kwargs: Passed to the image processor.
        feature_cache: A [`VisionFeatureCache`] built for this model and processor: batches then carry
            ``image_embeds`` instead of ``pixel_values`` and the vision tower does not run.
    """

    processor: HfInstructBlipProcessor
    decoder_only: bool
    max_length: int | None = None
    max_target_length: int | None = None
    qformer_max_length: int | None = None
    pad_to_multiple_of: int | None = None
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    feature_cache: VisionFeatureCache | None = None

    @classmethod
    def for_model(cls, model: Any, processor: HfInstructBlipProcessor, **kwargs: Any) -> InstructBlipDataCollator:
        """A collator matching ``model``'s LLM type (and a ``feature_cache``, if given, checked against ``model``)."""
        collator = cls(processor, decoder_only=model.config.use_decoder_only_language_model, **kwargs)
        if collator.feature_cache is not None:
            collator.feature_cache.check_compatible(model, None)
        return collator

    def __post_init__(self) -> None:
        if self.processor.tokenizer.eos_token_id is None:
            raise ValueError(
                "InstructBlipDataCollator: the LLM tokenizer has no eos token; targets must end with one."
            )
        if self.processor.tokenizer.pad_token_id is None:
            raise ValueError("InstructBlipDataCollator: the LLM tokenizer has no pad token; set tokenizer.pad_token.")
        if self.feature_cache is not None:
            if self.image_kwargs:
                raise ValueError(
                    "InstructBlipDataCollator: image_kwargs cannot be combined with feature_cache (the cached features "
                    "were computed with the processor's own settings); set them on the image processor and rebuild."
                )
            self.feature_cache.check_compatible(None, self.processor)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("InstructBlipDataCollator: empty batch.")
        if self.feature_cache is not None:
            image_name, image_inputs = "image_embeds", self._cached_features(samples)
            num_frames = image_inputs.shape[1] if image_inputs.ndim == 4 else 1
        else:
            images = [list(s["images"]) for s in samples]
            image_name, image_inputs = "pixel_values", self.processor.pixel_values(images, **self.image_kwargs)
            num_frames = image_inputs.shape[1] if image_inputs.ndim == 5 else 1
        n_image = self.processor.num_query_tokens * num_frames
        tokenizer = self.processor.tokenizer
        prompts = tokenizer([s["instruction"] for s in samples], add_special_tokens=True)["input_ids"]
        targets = tokenizer([s["target"] for s in samples], add_special_tokens=False)["input_ids"]
        targets = [self._cap_target(t) for t in targets]
        batch = (
            self._causal(prompts, targets, n_image) if self.decoder_only else self._seq2seq(prompts, targets, n_image)
        )
        qformer_texts = [s.get("qformer_text") or s["instruction"] for s in samples]
        batch.update(self.processor.qformer_inputs(qformer_texts, self.qformer_max_length))
        tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        tensors[image_name] = image_inputs
        return tensors

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

    def _cap_target(self, target: list[int]) -> list[int]:
        target = [*target, self.processor.tokenizer.eos_token_id]
        if self.max_target_length is not None and len(target) > self.max_target_length:
            target = target[: max(self.max_target_length, 1)]
        return target

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
                keep = budget - len(target)
                prompt = prompt[len(prompt) - keep :] if keep > 0 else []  # the instruction loses its beginning
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
            if budget is not None and len(prompt) > budget:
                prompt = prompt[len(prompt) - budget :]
            input_ids.append([self.processor.image_token_id] * n_image + prompt)
        length = _round_up(max(map(len, input_ids)), self.pad_to_multiple_of)
        label_length = _round_up(max(map(len, targets)), self.pad_to_multiple_of)
        pad = self.processor.tokenizer.pad_token_id
        return {
            "input_ids": pad_sequences(input_ids, pad, length),
            "attention_mask": pad_sequences([[1] * len(s) for s in input_ids], 0, length),
            "labels": pad_sequences(targets, IGNORE_INDEX, label_length),
        }
