"""The collator: label masking for causal and seq2seq LLMs, truncation that keeps images and target, frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NUM_QUERY, make_processor, model_for
from hf_instructblip import to_rgb_image
from hf_instructblip.data.collator import IGNORE_INDEX, InstructBlipDataCollator


def _sample(instruction: str, target: str, frames: int = 1, qformer_text: str | None = None, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    images = [Image.fromarray(rng.randint(0, 255, (30, 30, 3), dtype=np.uint8)) for _ in range(frames)]
    return {
        "images": images,
        "instruction": instruction,
        "target": target,
        "qformer_text": qformer_text or instruction,
    }


SAMPLES = [
    _sample("Question: what colour is the ball? Short answer:", "red", seed=1),
    _sample("A short image caption:", "a cat sitting on a very old wooden chair", seed=2),
    _sample("How many dogs?", "2", seed=3),
]


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


def test_causal_labels_cover_the_target_only(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    batch = collator(SAMPLES)
    tok = processor.tokenizer
    for i, sample in enumerate(SAMPLES):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        prompt = tok(sample["instruction"])["input_ids"]
        target = [*tok(sample["target"], add_special_tokens=False)["input_ids"], tok.eos_token_id]
        n = int(mask.sum())
        assert ids[:NUM_QUERY].tolist() == [processor.image_token_id] * NUM_QUERY
        assert ids[NUM_QUERY : NUM_QUERY + len(prompt)].tolist() == prompt
        assert (labels[: NUM_QUERY + len(prompt)] == IGNORE_INDEX).all()  # no image or prompt position has a label
        assert labels[NUM_QUERY + len(prompt) : n].tolist() == target == ids[NUM_QUERY + len(prompt) : n].tolist()
        assert (labels[n:] == IGNORE_INDEX).all() and (mask[n:] == 0).all()  # padding (right) has no label

    model = model_for(processor, "llama")
    out = model(**batch)
    logits = out.logits[:, :-1]
    shifted = batch["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_seq2seq_encoder_prompt_and_decoder_labels(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=False)
    batch = collator(SAMPLES)
    tok = processor.tokenizer
    for i, sample in enumerate(SAMPLES):
        prompt = tok(sample["instruction"])["input_ids"]
        target = [*tok(sample["target"], add_special_tokens=False)["input_ids"], tok.eos_token_id]
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :n].tolist() == [processor.image_token_id] * NUM_QUERY + prompt
        labels = batch["labels"][i]
        assert labels[: len(target)].tolist() == target
        assert (labels[len(target) :] == IGNORE_INDEX).all()
        assert processor.image_token_id not in labels.tolist()
    model = model_for(processor, "t5")
    assert torch.isfinite(model(**batch).loss)


@pytest.mark.parametrize("decoder_only", [True, False])
def test_truncation_keeps_images_and_some_target(processor, decoder_only):
    long_prompt = "Please look very carefully at the picture and then answer: " * 6 + "what is it?"
    long_target = "an extremely long answer that goes on and on " * 5
    collator = InstructBlipDataCollator(processor, decoder_only=decoder_only, max_length=NUM_QUERY + 12)
    batch = collator([_sample(long_prompt, long_target), _sample("What?", "a dog", seed=4)])
    ids, labels = batch["input_ids"], batch["labels"]
    assert ((ids == processor.image_token_id).sum(1) == NUM_QUERY).all()  # never truncates image tokens
    assert ((labels != IGNORE_INDEX).sum(1) >= 1).all()  # never truncates away the whole target
    if decoder_only:
        assert ids.shape[1] == NUM_QUERY + 12
        prompt = processor.tokenizer(long_prompt)["input_ids"]
        kept = ids[0][NUM_QUERY:][labels[0][NUM_QUERY:] == IGNORE_INDEX].tolist()
        assert kept and kept == prompt[-len(kept) :]  # the instruction loses its beginning, keeps its end
    else:
        assert ids.shape[1] <= NUM_QUERY + 12
    with pytest.raises(ValueError, match="leaves 1 token"):
        InstructBlipDataCollator(processor, decoder_only=decoder_only, max_length=NUM_QUERY + 1)(SAMPLES)


def test_max_target_length(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=False, max_target_length=3)
    assert collator(SAMPLES)["labels"].shape[1] == 3


def test_frames_and_pad_to_multiple_of(processor):
    videos = [_sample("What happens?", "a ball rolls", frames=3, seed=s) for s in range(2)]
    batch = InstructBlipDataCollator(processor, decoder_only=True, pad_to_multiple_of=8)(videos)
    assert batch["pixel_values"].shape == (2, 3, 3, 30, 30)
    assert ((batch["input_ids"] == processor.image_token_id).sum(1) == 3 * NUM_QUERY).all()
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].shape == batch["input_ids"].shape
    model = model_for(processor, "llama")
    assert torch.isfinite(model(**batch).loss)
    with pytest.raises(ValueError, match="same number of frames"):
        InstructBlipDataCollator(processor, decoder_only=True)([videos[0], SAMPLES[0]])


def test_qformer_reads_qformer_text(processor):
    words = " ".join(f"w{i}" for i in range(300))
    sample = _sample("What word is written? OCR tokens: a, b, c", "cat", qformer_text="What word is written? " + words)
    batch = InstructBlipDataCollator(processor, decoder_only=True)([sample])
    decoded = processor.qformer_tokenizer.decode(batch["qformer_input_ids"][0], skip_special_tokens=True)
    assert batch["qformer_input_ids"].shape[1] == 128 and decoded.split()[-1] == "w299"  # left truncation
    assert "ocr" not in decoded


def test_images_of_any_mode_are_converted(processor):
    rgb = np.random.RandomState(5).randint(0, 255, (30, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    modes = [base.convert(m) for m in ("L", "LA", "P", "RGBA", "CMYK", "I;16")]
    samples = [{"images": [img], "instruction": "What?", "target": "x"} for img in modes]
    batch = InstructBlipDataCollator(processor, decoder_only=True)(samples)
    for i, img in enumerate(modes):
        reference = processor.pixel_values([[to_rgb_image(img)]])  # the conversions test_bad_input.py checks
        assert torch.equal(batch["pixel_values"][i], reference[0]), img.mode
    assert torch.isfinite(batch["pixel_values"]).all()
