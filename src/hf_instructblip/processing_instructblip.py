"""The InstructBLIP processor: images -> pixel values, prompt -> LLM tokens with image placeholders, prompt -> Q-Former tokens.

What it guarantees (and transformers' port does not):

* exactly ``num_query_tokens x frames`` image placeholders at the start of every prompt, for left and right
  padding alike: padding is added to the whole sequence, so pad tokens never sit between the image and the text;
* truncation (``truncation=True`` + ``max_length``) shortens the text only, never the image placeholders;
* the Q-Former text is truncated from the left to ``qformer_max_length`` (128, LAVIS `blip2_t5_instruct.py`
  ``max_txt_len``) and always padded on the right, so its position ids do not depend on the batch;
* any number of frames/images per sample; text-only and image-only calls;
* the chat template is saved and loaded with the processor;
* a target (training answer, ranked candidate) follows its prompt as natural text for every tokenizer kind
  (`continuation_texts`: a space where a byte-level BPE tokenizer would glue the two, none for SentencePiece);
* LAVIS' training image transform on request (`pixel_values` with ``train_transform=`` and per-sample seeds);
* bad input raises an error naming the argument and the sample.

This file is pushed next to the weights for ``trust_remote_code``; it imports nothing from ``hf_instructblip``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import AddedToken

from .image_processing_instructblip import RandomResizedCrop, to_rgb_image

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "HfInstructBlipProcessor",
    "InstructBlipProcessor",
    "continuation_text",
    "pad_sequences",
    "separates_texts",
]

#: InstructBLIP uses no chat format (LAVIS `blip2_vicuna_instruct.py` has no chat template): the text parts of the
#: messages, in order, separated by spaces; image parts are where the images come from (they go to the start of the
#: prompt as placeholders).
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if not loop.first %} {% endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] if part['type'] == 'text' -%}"
    "{%- if not loop.first %} {% endif -%}{{ part['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

_PADDING = {
    True: "longest",
    "longest": "longest",
    False: None,
    "do_not_pad": None,
    None: None,
    "max_length": "max_length",
}


def pad_sequences(sequences: list[list[int]], value: int, length: int, side: str = "right") -> list[list[int]]:
    """Pad every sequence to ``length`` with ``value`` on one side (whole sequences: nothing goes in between)."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}.")
    if side == "left":
        return [[value] * (length - len(s)) + s for s in sequences]
    return [s + [value] * (length - len(s)) for s in sequences]


def separates_texts(tokenizer: Any) -> bool:
    """Whether texts tokenised one by one read as separate words when their ids are concatenated.

    SentencePiece tokenizers (Llama-2 / Vicuna, T5) start every text with their word-start marker, so the ids of
    ``"x"`` followed by those of ``"a"`` decode to ``"x a"``; byte-level BPE tokenizers (GPT-2, OPT, Llama-3, Qwen,
    SmolLM) mark a word start only where the text has a space, and decode ``"xa"``. Decided from the tokenizer's
    behaviour, not its name.
    """
    x, a = tokenizer(["x", "a"], add_special_tokens=False)["input_ids"]
    return tokenizer.decode(x + a, clean_up_tokenization_spaces=False).strip() == "x a"


def continuation_text(prompt: str, target: str, separates: bool) -> str:
    """The text to tokenise (on its own) for ``target`` so that it follows ``prompt`` as natural text.

    With a tokenizer that does not separate texts by itself (``separates=False``, byte-level BPE: see
    `separates_texts`) a space is put before the target, unless the prompt is empty or ends with whitespace or the
    target starts with it; otherwise the target is returned as it is. LAVIS' Vicuna models tokenise the answer on its
    own with SentencePiece, whose word-start marker gives the same boundary; its BLIP-2 OPT models tokenise
    ``prompt + caption`` as one string, which keeps the prompt's space.

    Args:
        prompt: The text before the target (the instruction).
        target: The answer, or a candidate answer.
        separates: `separates_texts` of the tokenizer.
    """
    if separates or not prompt or not target or prompt[-1].isspace() or target[0].isspace():
        return target
    return " " + target


def _is_image_like(value: Any) -> bool:
    return not isinstance(value, (list, tuple))


def _split_batched_array(images: Any) -> Any:
    """A (B, H, W, C) / (B, C, H, W) array or tensor is a batch of images: one per sample."""
    if getattr(images, "ndim", None) == 4:
        return list(images)
    return images


class HfInstructBlipProcessor(ProcessorMixin):
    r"""Image processor + LLM tokenizer + Q-Former tokenizer for InstructBLIP (exported as `InstructBlipProcessor`).

    The class name differs from transformers' own `InstructBlipProcessor` because `AutoProcessor` resolves
    the saved ``processor_class`` by name, and transformers' class would win.

    Args:
        image_processor: Any image processor (default for new models: [`InstructBlipImageProcessor`]).
        tokenizer: The LLM's tokenizer. The image placeholder token is added if it is missing.
        qformer_tokenizer: The Q-Former's BERT tokenizer (with ``[DEC]``).
        num_query_tokens: Visual tokens per image/frame; must equal the model's ``num_query_tokens``.
        image_token: The placeholder token string.
        qformer_max_length: Longest Q-Former instruction; longer ones are truncated from the left.
        chat_template: Jinja template for `apply_chat_template`; defaults to [`DEFAULT_CHAT_TEMPLATE`].

    Example:

    ```python
    >>> inputs = processor(images=[photo1, photo2], text=["What is this?", "Describe it."], padding=True)
    >>> ids = model.generate(**inputs, max_new_tokens=20)
    >>> processor.decode_generated(ids, inputs["input_ids"])  # only the new text
    ```
    """

    qformer_tokenizer: Any  # set by ProcessorMixin from the __init__ argument

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any,
        qformer_tokenizer: Any,
        num_query_tokens: int = 32,
        image_token: str = "<image>",
        qformer_max_length: int = 128,
        chat_template: str | None = None,
        **kwargs: Any,
    ):
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_tokens([AddedToken(image_token, normalized=False, special=True)], special_tokens=True)
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.num_query_tokens = num_query_tokens
        self.qformer_max_length = qformer_max_length
        qformer_tokenizer.truncation_side = "left"  # LAVIS `blip2_t5_instruct.py`: keep the end of long instructions
        super().__init__(
            image_processor, tokenizer, qformer_tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE
        )

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "qformer_input_ids", "qformer_attention_mask"]

    # ----- inputs -> lists we can trust -------------------------------------------------------------------------
    @staticmethod
    def _texts(text: Any) -> list[str] | None:
        if text is None:
            return None
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)):
            raise TypeError(f"`text` must be a string or a list of strings, got {type(text).__name__}.")
        for i, sample in enumerate(texts):
            if not isinstance(sample, str):
                raise TypeError(f"`text` sample {i} must be a string, got {type(sample).__name__}.")
        return list(texts)

    def _frames(self, images: Any, batch_size: int | None) -> list[list[Any]] | None:
        """Normalise `images` to one list of frames per sample; check counts."""
        if images is None:
            return None
        images = _split_batched_array(images)
        if _is_image_like(images):
            samples = [[images]]
        elif len(images) == 0:
            raise ValueError("`images` is an empty list.")
        elif batch_size == 1 and all(_is_image_like(i) for i in images) and len(images) > 1:
            raise ValueError(
                f"`images` has {len(images)} images but `text` has 1 prompt. For several images/frames of one "
                "sample pass them as a nested list: images=[[frame1, frame2, ...]]."
            )
        else:
            samples = [[sample] if _is_image_like(sample) else list(sample) for sample in images]
        if batch_size is not None and len(samples) != batch_size:
            raise ValueError(
                f"`images` has {len(samples)} samples but `text` has {batch_size} prompts; pass one image (or one "
                "list of frames) per prompt."
            )
        for i, frames in enumerate(samples):
            if not frames:
                raise ValueError(f"`images` sample {i} is an empty list of frames.")
        counts = {len(frames) for frames in samples}
        if len(counts) > 1:
            detail = ", ".join(f"sample {i}: {len(f)}" for i, f in enumerate(samples))
            raise ValueError(f"All samples of a batch need the same number of frames ({detail}).")
        return samples

    # ----- the call ---------------------------------------------------------------------------------------------
    def __call__(  # type: ignore[override]
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        add_special_tokens: bool = True,
        return_tensors: str | None = "pt",
        qformer_max_length: int | None = None,
        videos: Any = None,
        audio: Any = None,
        **kwargs: Any,
    ) -> BatchFeature:
        r"""Process a batch of images and prompts.

        Args:
            images: One image, or one entry per prompt; an entry may be a list of frames/images (video, multi-image).
                Images may be PIL images, paths, bytes, NumPy arrays or torch tensors (HWC or CHW).
            text: One prompt or a list of prompts. Without images: text-only input.
            padding: ``True``/``"longest"`` or ``"max_length"``; needed for batches of different lengths.
            truncation: Shorten prompts longer than ``max_length`` (the text only; image tokens are kept).
            max_length: Longest LLM input, image placeholders included.
            pad_to_multiple_of: Pad lengths to a multiple of this.
            padding_side: ``"left"`` or ``"right"``; defaults to the tokenizer's.
            add_special_tokens: Let the LLM tokenizer add its special tokens (BOS/EOS) to the text.
            return_tensors: ``"pt"`` (default), ``"np"`` or ``None`` for lists.
            qformer_max_length: Overrides the Q-Former text length limit for this call.
            videos: Not used: pass a video as its frames, ``images=[[frame1, frame2, ...]]``.
            audio: Not used: InstructBLIP has no audio input.
            kwargs: Passed to the image processor.
        """
        if videos is not None:
            raise ValueError("Pass a video as a list of frames: images=[[frame1, frame2, ...]] (one list per sample).")
        if audio is not None:
            raise ValueError("InstructBLIP has no audio input.")
        for key in ("return_mm_token_type_ids", "return_token_type_ids"):
            kwargs.pop(key, None)  # asked for by generic callers (chat templates); this model has no token types
        image_kwargs = {**kwargs.pop("images_kwargs", {}), **kwargs}
        valid = getattr(getattr(self.image_processor, "valid_kwargs", None), "__annotations__", None)
        unknown = sorted(set(image_kwargs) - set(valid)) if valid is not None else []
        if unknown:
            raise TypeError(
                f"Unexpected keyword argument(s) for the processor: {', '.join(unknown)}. (Generation options go to "
                "`model.generate`, or to a pipeline as `generate_kwargs={...}`.)"
            )
        texts = self._texts(text)
        if images is None and texts is None:
            raise ValueError("Pass `images`, `text` or both.")
        frames = self._frames(images, None if texts is None else len(texts))
        batch_size = len(texts) if texts is not None else len(frames)  # type: ignore[arg-type]
        num_frames = len(frames[0]) if frames is not None else 0
        if texts is None:
            texts = [""] * batch_size
        if frames is None:
            for i, sample in enumerate(texts):
                if not sample.strip():
                    raise ValueError(f"`text` sample {i} is empty and there is no image: nothing to process.")
        for i, sample in enumerate(texts):
            if self.image_token in sample:
                raise ValueError(
                    f"`text` sample {i} contains the image placeholder {self.image_token!r}; the processor inserts "
                    "the placeholders itself. Pass the images with `images=`."
                )

        data: dict[str, Any] = {}
        n_image_tokens = self.num_query_tokens * num_frames
        data.update(
            self._llm_tokens(
                texts,
                n_image_tokens,
                padding,
                truncation,
                max_length,
                pad_to_multiple_of,
                padding_side,
                add_special_tokens,
            )
        )
        data.update(self.qformer_inputs(texts, qformer_max_length))
        if frames is not None:
            data["pixel_values"] = self._pixel_values(frames, image_kwargs)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def qformer_inputs(self, texts: list[str], max_length: int | None = None) -> dict[str, list[list[int]]]:
        """Q-Former tokens: truncated from the left to ``max_length`` (default 128), padded on the right."""
        qformer = self.qformer_tokenizer(
            texts,
            truncation=True,
            max_length=max_length or self.qformer_max_length,
            padding="longest",
            padding_side="right",  # the Q-Former's position ids start at its first token
            return_token_type_ids=False,
        )
        return {"qformer_input_ids": qformer["input_ids"], "qformer_attention_mask": qformer["attention_mask"]}

    def continuation_texts(self, prompts: Sequence[str], targets: Sequence[str]) -> list[str]:
        """Each target as the text to tokenise after its prompt in a causal LLM's sequence (`continuation_text`).

        The one place prompt and answer are joined: the training collator's targets and the ranked candidates use it,
        so a byte-level BPE tokenizer sees ``"...? circle"``, not ``"...?circle"``.
        """
        if len(prompts) != len(targets):
            raise ValueError(f"{len(prompts)} prompts but {len(targets)} targets; pass one prompt per target.")
        separates = separates_texts(self.tokenizer)
        return [continuation_text(prompt, target, separates) for prompt, target in zip(prompts, targets)]

    def continuation_ids(self, prompts: Sequence[str], targets: Sequence[str]) -> list[list[int]]:
        """Token ids (no special tokens) of `continuation_texts`: what follows each prompt's ids."""
        texts = self.continuation_texts(prompts, targets)
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def pixel_values(
        self,
        images: Any,
        *,
        train_transform: RandomResizedCrop | None = None,
        seeds: Sequence[int] | None = None,
        **image_kwargs: Any,
    ) -> torch.Tensor:
        """Pixel values for ``images`` (one image or one list of frames per sample), checked as in `__call__`.

        Args:
            images: One image, or one entry (an image or a list of frames) per sample.
            train_transform: LAVIS' training transform ([`RandomResizedCrop`]: random resized crop and flip to the
                image processor's size), applied before the image processor; ``None`` (default): the evaluation
                transform, the image processor's plain resize.
            seeds: With ``train_transform``: one int per sample; the same seeds give the same crops and flips. The
                frames of a sample share its seed.
            image_kwargs: Passed to the image processor.
        """
        frames = self._frames(images, None)
        assert frames is not None  # images is not None here
        if train_transform is not None and (seeds is None or len(seeds) != len(frames)):
            raise ValueError(
                f"`seeds` must give one int per sample with train_transform ({len(frames)} samples, "
                f"{'no seeds' if seeds is None else f'{len(seeds)} seeds'})."
            )
        return self._pixel_values(frames, image_kwargs, train_transform, seeds)

    def _llm_tokens(
        self,
        texts: list[str],
        n_image_tokens: int,
        padding: bool | str,
        truncation: bool | None,
        max_length: int | None,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        add_special_tokens: bool,
    ) -> dict[str, list[list[int]]]:
        if padding not in _PADDING:
            raise ValueError(f"`padding` must be True, False, 'longest' or 'max_length', got {padding!r}.")
        mode = _PADDING[padding]
        if (truncation or mode == "max_length") and max_length is None:
            raise ValueError("`max_length` is required with truncation=True or padding='max_length'.")
        text_ids = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        limit = max_length if max_length is not None else self.tokenizer.model_max_length
        sequences = []
        for i, ids in enumerate(text_ids):
            budget = limit - n_image_tokens
            if len(ids) > budget:
                if not truncation:
                    raise ValueError(
                        f"`text` sample {i} has {len(ids)} tokens; with {n_image_tokens} image tokens that exceeds "
                        f"the maximum length {limit}. Pass truncation=True (the text is shortened, never the images) "
                        "or a larger max_length."
                    )
                if budget < 1:
                    raise ValueError(
                        f"max_length={limit} leaves no room for text after {n_image_tokens} image tokens "
                        f"(`text` sample {i})."
                    )
                ids = ids[-budget:] if self.tokenizer.truncation_side == "left" else ids[:budget]
            sequences.append([self.image_token_id] * n_image_tokens + list(ids))

        lengths = [len(s) for s in sequences]
        target = max(lengths) if mode != "max_length" else max_length
        if mode is None and len(set(lengths)) > 1:
            target = None
        if target is not None and pad_to_multiple_of:
            target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
        if target is None:
            return {"input_ids": sequences, "attention_mask": [[1] * n for n in lengths]}
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None and any(n < target for n in lengths):
            raise ValueError("The LLM tokenizer has no pad token; set tokenizer.pad_token before padding.")
        side = padding_side or self.tokenizer.padding_side
        return {
            "input_ids": pad_sequences(sequences, pad_id, target, side),
            "attention_mask": pad_sequences([[1] * n for n in lengths], 0, target, side),
        }

    def _output_size(self, image_kwargs: dict[str, Any]) -> tuple[int, int] | None:
        """``(height, width)`` the image processor resizes to, if it says (a dict or transformers' ``SizeDict``)."""
        size = image_kwargs.get("size") or getattr(self.image_processor, "size", None)
        get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
        height, width = get("height"), get("width")
        return (int(height), int(width)) if height and width else None

    def _pixel_values(
        self,
        frames: list[list[Any]],
        image_kwargs: dict[str, Any],
        train_transform: RandomResizedCrop | None = None,
        seeds: Sequence[int] | None = None,
    ) -> torch.Tensor:
        max_side = None
        processor_size = getattr(self.image_processor, "size", None)
        if isinstance(processor_size, dict) and processor_size:
            max_side = 2 * max(v for v in processor_size.values() if isinstance(v, int))
        flat = [
            to_rgb_image(image, "images", (i, t) if len(sample) > 1 else i, max_side=max_side)
            for i, sample in enumerate(frames)
            for t, image in enumerate(sample)
        ]
        if train_transform is not None:
            size = self._output_size(image_kwargs)
            if size is None:
                raise ValueError(
                    "train_transform crops to the image processor's size, which needs 'height' and 'width' "
                    f"(got {getattr(self.image_processor, 'size', None)})."
                )
            assert seeds is not None  # checked by pixel_values
            resample = image_kwargs.get("resample") or getattr(self.image_processor, "resample", None)
            sample_seeds = [seed for seed, sample in zip(seeds, frames) for _ in sample]
            flat = [
                train_transform(image, size, seed, **({"resample": resample} if resample is not None else {}))
                for image, seed in zip(flat, sample_seeds)
            ]
        pixel_values = self.image_processor(flat, return_tensors="pt", **image_kwargs)["pixel_values"]
        num_frames = len(frames[0])
        if num_frames > 1:
            pixel_values = pixel_values.unflatten(0, (len(frames), num_frames))  # (B, T, C, H, W)
        return pixel_values

    # ----- outputs ----------------------------------------------------------------------------------------------
    def decode_generated(
        self, generated_ids: torch.Tensor, input_ids: torch.Tensor | None = None, skip_special_tokens: bool = True
    ) -> list[str]:
        """Decode only the newly generated text.

        Decoder-only LLMs return the prompt followed by the answer; when ``generated_ids`` starts with
        ``input_ids`` the prompt is cut off. Encoder-decoder LLMs return the answer only.
        """
        if input_ids is not None and generated_ids.shape[1] >= input_ids.shape[1]:
            prompt = generated_ids[:, : input_ids.shape[1]]
            if torch.equal(prompt.to(input_ids.device), input_ids):
                generated_ids = generated_ids[:, input_ids.shape[1] :]
        texts = self.tokenizer.batch_decode(generated_ids, skip_special_tokens=skip_special_tokens)
        return [t.strip() for t in texts]

    def post_process_image_text_to_text(
        self, generated_outputs: torch.Tensor, skip_special_tokens: bool = True, **kwargs: Any
    ) -> list[str]:
        """Decode generated ids (image placeholders are special tokens, so they vanish with the default)."""
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)


#: The name users know; `HfInstructBlipProcessor` is the class (see its docstring for why).
InstructBlipProcessor = HfInstructBlipProcessor
