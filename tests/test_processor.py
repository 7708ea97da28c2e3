"""The processor: placeholders, padding, truncation, frames, chat templates, decoding, official layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from transformers import AutoTokenizer, BlipImageProcessorPil

from conftest import NUM_QUERY, assert_close_fp32, make_processor, model_for
from hf_instructblip import HfInstructBlipProcessor, InstructBlipImageProcessor

PROMPTS = ["Hi", "What is in this picture? Tell me everything you see.", "Count the cats."]


def _images(n: int, seed: int = 0, size=(40, 50)) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (*size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


@pytest.mark.parametrize("side", ["left", "right"])
def test_image_tokens_first_and_padding_never_in_between(processor, side):
    out = processor(images=_images(3), text=PROMPTS, padding=True, padding_side=side)
    ids, mask = out["input_ids"], out["attention_mask"]
    image = processor.image_token_id
    for i, prompt in enumerate(PROMPTS):
        real = ids[i][mask[i].bool()].tolist()
        assert real[:NUM_QUERY] == [image] * NUM_QUERY  # image tokens open the prompt ...
        assert image not in real[NUM_QUERY:]
        text = processor.tokenizer(prompt)["input_ids"]
        assert real[NUM_QUERY:] == text  # ... directly followed by the text, no pad in between
        # padding sits at one end only
        pads = (~mask[i].bool()).nonzero().flatten().tolist()
        n = len(pads)
        expected = list(range(n)) if side == "left" else list(range(ids.shape[1] - n, ids.shape[1]))
        assert pads == expected
    assert (mask.sum(1) == torch.tensor([NUM_QUERY + len(processor.tokenizer(p)["input_ids"]) for p in PROMPTS])).all()


def test_transformers_port_puts_padding_between_image_and_text(tokenizer_dirs):
    """Why this processor exists: the reference port's left padding lands between the image tokens and the text."""
    ours = make_processor(tokenizer_dirs)
    theirs = transformers.InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": 30, "width": 30}),
        AutoTokenizer.from_pretrained(tokenizer_dirs[0], padding_side="left"),
        AutoTokenizer.from_pretrained(tokenizer_dirs[1]),
        num_query_tokens=NUM_QUERY,
    )
    short = 0  # "Hi" is the shortest prompt: it gets padding
    ids = theirs(images=_images(3), text=PROMPTS, padding=True, return_tensors="pt")["input_ids"][short].tolist()
    pad = theirs.tokenizer.pad_token_id
    assert ids[:NUM_QUERY] == [ours.image_token_id] * NUM_QUERY and ids[NUM_QUERY] == pad


def test_truncation_keeps_image_tokens(processor):
    long = " ".join(["word"] * 50)
    with pytest.raises(ValueError, match=r"`text` sample 1 has \d+ tokens.*exceeds the maximum length 20"):
        processor(images=_images(2), text=["short", long], max_length=20, padding="max_length")
    out = processor(images=_images(2), text=["short", long], max_length=20, truncation=True, padding="max_length")
    assert out["input_ids"].shape == (2, 20)
    assert ((out["input_ids"] == processor.image_token_id).sum(1) == NUM_QUERY).all()
    with pytest.raises(ValueError, match="leaves no room for text"):
        processor(images=_images(1), text="hello", max_length=NUM_QUERY, truncation=True)


def test_qformer_text_truncated_from_the_left_to_128(processor):
    words = [f"w{i}" for i in range(300)]
    out = processor(images=_images(1), text=" ".join(words))
    qformer_ids = out["qformer_input_ids"][0].tolist()
    assert len(qformer_ids) == 128
    decoded = processor.qformer_tokenizer.decode(qformer_ids, skip_special_tokens=True)
    assert decoded.split()[-1] == "w299" and "w0" not in decoded.split()  # the end of the instruction survives


def test_qformer_text_always_right_padded(processor):
    out = processor(images=_images(3), text=PROMPTS, padding=True, padding_side="left")
    mask = out["qformer_attention_mask"]
    assert (mask[:, 0] == 1).all()  # position ids of the Q-Former text start at its first token


def test_text_only_and_image_only(processor):
    text_only = processor(text=PROMPTS, padding=True)
    assert "pixel_values" not in text_only
    assert not (text_only["input_ids"] == processor.image_token_id).any()
    image_only = processor(images=_images(2))
    assert image_only["pixel_values"].shape == (2, 3, 30, 30)
    assert ((image_only["input_ids"] == processor.image_token_id).sum(1) == NUM_QUERY).all()


@pytest.mark.parametrize("frames", [2, 3, 5])
def test_any_number_of_frames(processor, frames):
    videos = [_images(frames, seed=s) for s in range(2)]
    out = processor(images=videos, text=PROMPTS[:2], padding=True)
    assert out["pixel_values"].shape == (2, frames, 3, 30, 30)
    assert ((out["input_ids"] == processor.image_token_id).sum(1) == frames * NUM_QUERY).all()
    model = model_for(processor)
    with torch.no_grad():
        assert model(**out).logits.shape[:2] == out["input_ids"].shape


def test_chat_template_survives_save_and_load(tokenizer_dirs, tmp_path):
    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    processor = make_processor(tokenizer_dirs, chat_template=template)
    processor.save_pretrained(tmp_path)
    loaded = HfInstructBlipProcessor.from_pretrained(tmp_path)
    assert loaded.chat_template == template
    assert loaded.apply_chat_template([{"role": "user", "content": "hello"}]) == "[user] hello\n"
    assert loaded.num_query_tokens == NUM_QUERY and loaded.qformer_max_length == 128
    default = make_processor(tokenizer_dirs)
    default.save_pretrained(tmp_path / "default")
    assert HfInstructBlipProcessor.from_pretrained(tmp_path / "default").chat_template == default.chat_template


def test_apply_chat_template_with_images(processor):
    image = _images(1)[0]
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is shown?"}]}
    ]
    assert processor.apply_chat_template(messages) == "What is shown?"
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    direct = processor(images=image, text="What is shown?")
    for key in ("input_ids", "qformer_input_ids", "pixel_values"):
        assert torch.equal(out[key], direct[key]), key


def test_decode_generated_returns_only_new_text(processor):
    model = model_for(processor)
    inputs = processor(images=_images(2), text=PROMPTS[:2], padding=True, padding_side="left")
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    texts = processor.decode_generated(generated, inputs["input_ids"])
    expected = processor.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert texts == [t.strip() for t in expected]
    seq2seq = model_for(processor, "t5")
    generated = seq2seq.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == 5  # decoder start + new tokens: nothing to cut
    assert processor.decode_generated(generated, inputs["input_ids"]) == [
        t.strip() for t in processor.tokenizer.batch_decode(generated, skip_special_tokens=True)
    ]


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_batch_generate_equals_one_by_one_with_left_padding(processor, llm):
    model = model_for(processor, llm, seed=1)
    images = _images(3)
    batch = processor(images=images, text=PROMPTS, padding=True, padding_side="left")
    options = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}
    together = model.generate(**batch, **options)
    width = batch["input_ids"].shape[1] if llm == "llama" else 0
    for i, (image, prompt) in enumerate(zip(images, PROMPTS)):
        single = processor(images=image, text=prompt)
        alone = model.generate(**single, **options)
        start = single["input_ids"].shape[1] if llm == "llama" else 0
        assert together[i, width:].tolist() == alone[0, start:].tolist(), f"sample {i}"


def test_forward_logits_equal_with_left_padding(processor):
    model = model_for(processor, "llama", seed=2)
    images = _images(3)
    batch = processor(images=images, text=PROMPTS, padding=True, padding_side="left")
    with torch.no_grad():
        logits = model(**batch).logits
    for i, (image, prompt) in enumerate(zip(images, PROMPTS)):
        single = processor(images=image, text=prompt)
        with torch.no_grad():
            alone = model(**single).logits[0]
        assert_close_fp32(logits[i, -alone.shape[0] :], alone)  # a padded batch runs other kernel shapes


def test_official_layout_processor_loads(tokenizer_dirs, tmp_path):
    """A folder written by transformers' InstructBlipProcessor (qformer_tokenizer/ subfolder) loads as ours."""
    official = transformers.InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": 30, "width": 30}),
        AutoTokenizer.from_pretrained(tokenizer_dirs[0]),
        AutoTokenizer.from_pretrained(tokenizer_dirs[1]),
        num_query_tokens=NUM_QUERY,
    )
    official.save_pretrained(tmp_path)
    assert (tmp_path / "qformer_tokenizer").is_dir()
    ours = HfInstructBlipProcessor.from_pretrained(tmp_path)
    assert ours.num_query_tokens == NUM_QUERY
    assert ours.qformer_tokenizer.bos_token == "[DEC]"
    image = _images(1)[0]
    mine, theirs = (
        ours(images=image, text="What is it?"),
        official(images=image, text="What is it?", return_tensors="pt"),
    )
    torch.testing.assert_close(mine["pixel_values"], theirs["pixel_values"], atol=1e-6, rtol=0)
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    assert torch.equal(mine["qformer_input_ids"], theirs["qformer_input_ids"])


def test_image_processor_matches_blip_image_processor():
    images = _images(4, size=(300, 280)) + _images(2, size=(224, 224))
    ours = InstructBlipImageProcessor()(images, return_tensors="pt")["pixel_values"]
    theirs = BlipImageProcessorPil(size={"height": 224, "width": 224})(images, return_tensors="pt")["pixel_values"]
    assert ours.shape == (6, 3, 224, 224)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_unknown_keyword_is_a_clear_error(processor):
    with pytest.raises(TypeError, match="do_sample"):
        processor(images=_images(1), text="hi", do_sample=False)
