"""What `InstructBlipForConditionalGeneration.generate` does before handing over to the LLM's own `generate`.

* **Settings**: the paper's generation settings (`PAPER_GENERATION_SETTINGS`) are what the folders this package
  builds carry in their ``generation_config.json``; `merged_generation_config` applies the composite model's
  generation config (transformers' InstructBLIP port applies only the LLM's own, so a saved folder's settings were
  ignored), lets the LLM's own fill what it leaves unset (eos ids, ...) and lets explicit arguments win.
* **Prompts of a causal LLM** (`fit_causal_prompts`): a right-padded batch is moved to left padding, since pads
  between a prompt and its answer change the answer; a prompt longer than the LLM's position window (minus the
  room for new tokens) loses the beginning of its text, never its image tokens, with a warning.

This file is pushed next to the weights for ``trust_remote_code`` with the modeling file that imports it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.utils import logging

__all__ = ["PAPER_GENERATION_SETTINGS", "fit_causal_prompts", "llm_window", "merged_generation_config"]

logger = logging.get_logger(__name__)

#: The paper's generation settings: LAVIS' ``generate`` defaults (`blip2_vicuna_instruct.py`, `blip2_t5_instruct.py`):
#: 5 beams, at least 1 and at most 256 new tokens, repetition penalty 1.5, length penalty 1.
PAPER_GENERATION_SETTINGS: dict[str, Any] = {
    "num_beams": 5,
    "max_new_tokens": 256,
    "min_new_tokens": 1,
    "repetition_penalty": 1.5,
    "length_penalty": 1.0,
    "do_sample": False,
}


def merged_generation_config(
    model_config: GenerationConfig, generate_kwargs: dict[str, Any]
) -> tuple[GenerationConfig, dict[str, Any]]:
    """The settings of one ``generate`` call: the call's arguments over the model's generation config.

    Args:
        model_config: The composite model's ``generation_config``.
        generate_kwargs: The call's keyword arguments; a ``generation_config`` among them replaces ``model_config``,
            whose values then fill only what it leaves unset (as transformers treats a model's own config).

    Returns:
        The merged config (the LLM's ``generate`` fills what it still leaves unset from the LLM's own config) and the
        keyword arguments that are not generation settings (passed on to the LLM's ``generate`` as they are).
    """
    kwargs = dict(generate_kwargs)
    given = kwargs.pop("generation_config", None)
    config = copy.deepcopy(given if given is not None else model_config)
    if given is not None:
        config.update(**model_config.to_dict(), defaults_only=True)
    return config, config.update(**kwargs)  # `update` returns the arguments that are not settings


def llm_window(text_config: Any) -> int | None:
    """How many positions the LLM has (absolute position embeddings), or None where it has no fixed limit (T5)."""
    return getattr(text_config, "max_position_embeddings", None) or getattr(text_config, "n_positions", None)


def fit_causal_prompts(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    image_token_index: int | None,
    window: int | None,
    max_new_tokens: int | None,
    pad_token_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A causal LLM's prompts, left-padded and fitted into its window (see the module docstring).

    Args:
        input_ids: ``(B, S)`` prompts, image placeholders included, padded on any side.
        attention_mask: ``(B, S)`` 1 on real tokens.
        image_token_index: The placeholder id (those tokens are never cut).
        window: The LLM's number of positions (`llm_window`), or None for no limit.
        max_new_tokens: Positions kept free for the answer.
        pad_token_id: Written where the mask is 0.

    Returns:
        ``(input_ids, attention_mask)``: unchanged when already left-padded (or unpadded) and within the window.
    """
    real = attention_mask.bool()
    is_image = real & (input_ids == image_token_index)
    keep = real
    limit = window - (max_new_tokens or 0) if window else None
    if limit is not None and int(real.sum(dim=1).max()) > limit:
        room = limit - is_image.sum(dim=1, keepdim=True)  # (B, 1) text tokens that fit
        if bool((room < 1).any()):
            raise ValueError(
                f"The image tokens fill the LLM's window ({window} positions, max_new_tokens={max_new_tokens})."
            )
        text = real & ~is_image
        text_after = text.long().flip(1).cumsum(1).flip(1)  # (B, S) text tokens from here to the end
        keep = is_image | (text & (text_after <= room))
        logger.warning(
            f"A prompt is longer than the LLM's window allows ({window} positions, {max_new_tokens or 0} of them kept "
            f"for new tokens): its text is cut from the left to fit, the image tokens are kept."
        )
    if keep is real and bool(real[:, -1].all()):
        return input_ids, attention_mask  # left-padded or unpadded already, and short enough
    # pads (and cut tokens) go in front, the rest keeps its order
    order = torch.argsort(keep.long(), dim=1, stable=True)[:, -int(keep.sum(dim=1).max()) :]  # (B, S')
    keep = keep.gather(1, order)
    ids = torch.where(keep, input_ids.gather(1, order), pad_token_id or 0)
    return ids, keep.to(attention_mask.dtype)
