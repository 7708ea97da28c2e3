"""The collator: label masking for causal and seq2seq LLMs; the target joined to its prompt as natural text for
byte-level BPE and SentencePiece tokenizers; LAVIS' text lengths (instruction 128 tokens, truncated from the left with
its BOS kept; target 256); truncation that keeps images and target; frames; the Q-Former's text (the instruction, OCR
tokens included); LAVIS' training image transform, seeded, and the evaluation transform for evaluation.

Tokenizers: SmolLM2's real byte-level BPE tokenizer (`tokenizer_dirs`), and, since no SentencePiece model ships
offline (and the `sentencepiece` package is not installed), SentencePiece-style tokenizers built here with the
`tokenizers` library: a Unigram model behind the Metaspace pre-tokenizer, Llama-2-style (word-start marker on the
first word, BOS prepended) and T5-style (marker on every word, ``</s>`` appended).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from conftest import NUM_QUERY, assert_close_fp32, make_processor, model_for
from hf_instructblip import InstructBlipImageProcessor, InstructBlipProcessor, to_rgb_image
from hf_instructblip.data.collator import IGNORE_INDEX, InstructBlipDataCollator
from hf_instructblip.data.feature_cache import VisionFeatureCache
from hf_instructblip.data.synthetic import synthetic_sample
from hf_instructblip.data.templates import render_instruction
from hf_instructblip.image_processing_instructblip import RandomResizedCrop
from hf_instructblip.processing_instructblip import separates_texts


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
#: (instruction, target) pairs whose training sequence must read as natural text.
NATURAL = [
    ("Question: What shape is the green object?", "circle"),
    ("A short image caption:", "a red square"),
]
LONG_INSTRUCTION = " ".join(f"word{i % 7} is here" for i in range(200)) + " What is it?"


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


def _sentencepiece_style(scheme: str, template: str) -> PreTrainedTokenizerFast:
    """A small SentencePiece-style tokenizer: Unigram + Metaspace, trained on the texts these tests use."""
    corpus = [f"{instruction} {target}" for instruction, target in NATURAL] + [
        LONG_INSTRUCTION,
        "Question: what colour is the ball? Short answer: red x a",
        "OCR tokens: STOP, Main St. What does the sign say?",
    ]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    special = ["<unk>", "<s>", "</s>", "<pad>"]
    tokenizer.train_from_iterator(corpus * 10, trainers.UnigramTrainer(vocab_size=150, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[("<s>", special.index("<s>")), ("</s>", special.index("</s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def llama_style(tokenizer_dirs):
    """Llama-2 / Vicuna-style: the word-start marker on the first word, BOS prepended."""
    return InstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": 30, "width": 30}),
        _sentencepiece_style("first", "<s> $A"),
        AutoTokenizer.from_pretrained(tokenizer_dirs[1]),
        num_query_tokens=NUM_QUERY,
    )


@pytest.fixture(scope="module")
def t5_style(tokenizer_dirs):
    """T5-style: the word-start marker on every word, ``</s>`` appended."""
    return InstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": 30, "width": 30}),
        _sentencepiece_style("always", "$A </s>"),
        AutoTokenizer.from_pretrained(tokenizer_dirs[1]),
        num_query_tokens=NUM_QUERY,
    )


def _text_ids(batch: dict, i: int, processor) -> list[int]:
    """Sample ``i``'s LLM ids without image tokens and padding."""
    ids = batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
    assert ids[:NUM_QUERY] == [processor.image_token_id] * NUM_QUERY
    return ids[NUM_QUERY:]


# ----- labels -------------------------------------------------------------------------------------------------------
def test_causal_labels_cover_the_target_only(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    batch = collator(SAMPLES)
    tok = processor.tokenizer
    for i, sample in enumerate(SAMPLES):
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        prompt = tok(sample["instruction"])["input_ids"]
        # SmolLM2's byte-level BPE: the target is tokenised with the space that separates it from the prompt
        target = [*tok(" " + sample["target"], add_special_tokens=False)["input_ids"], tok.eos_token_id]
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
    assert_close_fp32(out.loss, expected)  # the model's loss path vs a hand-written cross-entropy


def test_seq2seq_encoder_prompt_and_decoder_labels(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=False)
    batch = collator(SAMPLES)
    tok = processor.tokenizer
    for i, sample in enumerate(SAMPLES):
        prompt = tok(sample["instruction"])["input_ids"]
        target = [*tok(sample["target"], add_special_tokens=False)["input_ids"], tok.eos_token_id]  # stands alone
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :n].tolist() == [processor.image_token_id] * NUM_QUERY + prompt
        labels = batch["labels"][i]
        assert labels[: len(target)].tolist() == target
        assert (labels[len(target) :] == IGNORE_INDEX).all()
        assert processor.image_token_id not in labels.tolist()
    model = model_for(processor, "t5")
    assert torch.isfinite(model(**batch).loss)


# ----- the target follows the prompt as natural text ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["byte_level_bpe", "sentencepiece"])
def test_training_sequence_reads_as_natural_text(kind, processor, llama_style):
    """SmolLM2 (byte-level BPE) would glue "...object?circle"; the collator joins with a space it needs, and a
    SentencePiece tokenizer gets none added, since its word-start marker already separates the two."""
    processor = processor if kind == "byte_level_bpe" else llama_style
    tok = processor.tokenizer
    assert separates_texts(tok) == (kind == "sentencepiece")  # decided from behaviour, not from the name
    samples = [_sample(instruction, target, seed=i) for i, (instruction, target) in enumerate(NATURAL)]
    batch = InstructBlipDataCollator(processor, decoder_only=True)(samples)
    for i, (instruction, target) in enumerate(NATURAL):
        ids = _text_ids(batch, i, processor)
        natural = f"{instruction} {target}"
        assert ids == [*tok(natural)["input_ids"], tok.eos_token_id]  # = the joined text, tokenised in one go
        assert tok.decode(ids, skip_special_tokens=True) == natural
        assert tok.decode(ids[-1:]) == tok.eos_token
    glued = tok.decode(_text_ids(batch, 0, processor), skip_special_tokens=True)
    assert "object? circle" in glued and "?circle" not in glued


def test_continuation_keeps_existing_whitespace(processor):
    texts = processor.continuation_texts(["Answer:", "Answer: ", "", "Answer:"], ["red", "red", "red", " red"])
    assert texts == [" red", "red", "red", " red"]  # one space, never two; none before a text that starts one


# ----- text lengths ---------------------------------------------------------------------------------------------------
def test_defaults_are_lavis(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    assert (collator.max_instruction_length, collator.max_target_length, collator.max_length) == (128, 256, None)
    assert collator.train_transform == RandomResizedCrop(scale=(0.5, 1.0), hflip=0.5)


@pytest.mark.parametrize("kind", ["no_bos", "bos"])
def test_instruction_truncated_from_the_left_keeping_bos(kind, processor, llama_style):
    processor = processor if kind == "no_bos" else llama_style
    tok = processor.tokenizer
    full = tok(LONG_INSTRUCTION)["input_ids"]
    assert len(full) > 200
    batch = InstructBlipDataCollator(processor, decoder_only=True)([_sample(LONG_INSTRUCTION, "yes")])
    labels = batch["labels"][0][NUM_QUERY:]
    prompt = [t for t, label in zip(_text_ids(batch, 0, processor), labels.tolist()) if label == IGNORE_INDEX]
    assert len(prompt) == 128
    if kind == "bos":
        assert full[0] == tok.bos_token_id and prompt == [tok.bos_token_id, *full[-127:]]  # BOS kept
    else:
        assert prompt == full[-128:]  # SmolLM2 adds no BOS: the last 128 tokens


def test_t5_instruction_keeps_its_closing_eos(t5_style):
    tok = t5_style.tokenizer
    full = tok(LONG_INSTRUCTION)["input_ids"]
    assert full[-1] == tok.eos_token_id
    batch = InstructBlipDataCollator(t5_style, decoder_only=False)([_sample(LONG_INSTRUCTION, "yes")])
    assert _text_ids(batch, 0, t5_style) == full[-128:]  # the text's last 127 tokens, then its </s>


@pytest.mark.parametrize("decoder_only", [True, False])
def test_target_limit_256_as_lavis(processor, decoder_only):
    long_target = " ".join(f"w{i}" for i in range(300))
    batch = InstructBlipDataCollator(processor, decoder_only=decoder_only)([_sample("Describe it.", long_target)])
    labels = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    assert len(labels) == 256
    eos = processor.tokenizer.eos_token_id
    # LAVIS: Vicuna cuts "target + eos" as text (the eos goes); T5's tokenizer appends </s> after cutting
    assert (labels[-1] == eos) == (not decoder_only)


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


def test_max_length_keeps_bos(llama_style):
    tok = llama_style.tokenizer
    batch = InstructBlipDataCollator(llama_style, decoder_only=True, max_length=NUM_QUERY + 20)(
        [_sample(LONG_INSTRUCTION, "yes")]
    )
    ids = _text_ids(batch, 0, llama_style)
    target = tok(" yes", add_special_tokens=False)["input_ids"]  # irrelevant spacing: SentencePiece marks it
    assert len(ids) == 20 and ids[0] == tok.bos_token_id
    assert ids[1 : -(len(target) + 1)] == tok(LONG_INSTRUCTION)["input_ids"][-(19 - len(target) - 1) :]


def test_max_target_length(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=False, max_target_length=3)
    assert collator(SAMPLES)["labels"].shape[1] == 3


def test_bad_lengths_are_refused(processor, llama_style):
    with pytest.raises(ValueError, match="max_instruction_length=1 leaves no room"):
        InstructBlipDataCollator(llama_style, decoder_only=True, max_instruction_length=1)
    with pytest.raises(ValueError, match="max_target_length must be >= 1"):
        InstructBlipDataCollator(processor, decoder_only=True, max_target_length=0)


# ----- frames, Q-Former -----------------------------------------------------------------------------------------------
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


def test_qformer_reads_the_instruction_with_its_ocr_tokens(processor):
    """LAVIS feeds the Q-Former the LLM's instruction, OCR tokens included (at most 30 of them)."""
    tokens = [f"tok{i}" for i in range(40)]
    instruction = render_instruction("ocr_vqa", seed=0, index=0, question="What is written?", ocr_tokens=tokens)
    assert "tok28, tok29. " in instruction and "tok30" not in instruction  # the first 30
    synthetic = synthetic_sample("synthetic_ocr", seed=0, index=0)
    synthetic["images"] = [image["bytes"] for image in synthetic["images"]]  # as PNG bytes
    samples = [{**_sample(instruction, "tok3"), "qformer_text": None}, synthetic]
    assert synthetic["qformer_text"] == synthetic["instruction"] and synthetic["instruction"].startswith("OCR tokens")
    batch = InstructBlipDataCollator(processor, decoder_only=True)(samples)
    expected = processor.qformer_inputs([instruction, synthetic["instruction"]])
    assert batch["qformer_input_ids"].tolist() == expected["qformer_input_ids"]
    decoded = processor.qformer_tokenizer.decode(batch["qformer_input_ids"][0], skip_special_tokens=True)
    # 30 OCR tokens are more than 128 Q-Former tokens: the left truncation keeps the last ones and the question
    assert "tok28, tok29." in decoded and decoded.endswith("what is written?")
    assert "ocr tokens" in processor.qformer_tokenizer.decode(batch["qformer_input_ids"][1], skip_special_tokens=True)


# ----- images ---------------------------------------------------------------------------------------------------------
def test_images_of_any_mode_are_converted(processor):
    rgb = np.random.RandomState(5).randint(0, 255, (30, 30, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    modes = [base.convert(m) for m in ("L", "LA", "P", "RGBA", "CMYK", "I;16")]
    samples = [{"images": [img], "instruction": "What?", "target": "x"} for img in modes]
    batch = InstructBlipDataCollator(processor, decoder_only=True, augment_images=False)(samples)
    for i, img in enumerate(modes):
        reference = processor.pixel_values([[to_rgb_image(img)]])  # the conversions test_bad_input.py checks
        assert torch.equal(batch["pixel_values"][i], reference[0]), img.mode
    assert torch.isfinite(batch["pixel_values"]).all()


def _pixels(collator: InstructBlipDataCollator, samples=SAMPLES) -> torch.Tensor:
    return collator(samples)["pixel_values"]


def test_training_crops_are_seeded_and_reproducible(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    plain = processor.pixel_values([s["images"] for s in SAMPLES])
    torch_state = torch.get_rng_state()
    first = _pixels(collator)
    assert torch.equal(torch.get_rng_state(), torch_state)  # no global random state is used ...
    torch.manual_seed(1234)
    assert torch.equal(_pixels(collator), first)  # ... nor depended on
    assert torch.equal(_pixels(InstructBlipDataCollator(processor, decoder_only=True)), first)  # a fresh collator
    assert all(not torch.equal(first[i], plain[i]) for i in range(len(SAMPLES)))  # cropped, not the plain resize
    assert not torch.equal(_pixels(InstructBlipDataCollator(processor, decoder_only=True, seed=1)), first)
    collator.set_epoch(1)
    second_epoch = _pixels(collator)
    assert all(not torch.equal(second_epoch[i], first[i]) for i in range(len(SAMPLES)))  # new crops per epoch
    collator.set_epoch(0)
    assert torch.equal(_pixels(collator), first)


def test_a_sample_gets_its_crop_whatever_batch_it_is_in(processor):
    """Gradient accumulation and multi-process training split a batch: the crops must not change with the split."""
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    whole = _pixels(collator)
    split = torch.cat([_pixels(collator, SAMPLES[:1]), _pixels(collator, SAMPLES[1:])])
    assert torch.equal(split, whole)
    assert torch.equal(_pixels(collator, SAMPLES[::-1]), whole.flip(0))  # nor with the order
    twice = _pixels(collator, [SAMPLES[0], SAMPLES[0]])
    assert torch.equal(twice[0], whole[0]) and not torch.equal(twice[1], twice[0])  # a repeat is cropped anew


def test_training_transform_is_crop_then_flip(processor):
    """A crop of the whole image is the plain resize: with it, hflip=1 mirrors the evaluation pixels exactly and
    hflip=0 gives them unchanged."""
    plain = processor.pixel_values([s["images"] for s in SAMPLES])
    whole = {"decoder_only": True, "crop_scale": (1.0, 1.0)}
    assert torch.equal(_pixels(InstructBlipDataCollator(processor, hflip=1.0, **whole)), plain.flip(-1))
    assert torch.equal(_pixels(InstructBlipDataCollator(processor, hflip=0.0, **whole)), plain)


def test_frames_of_a_sample_are_cropped_alike(processor):
    frame = SAMPLES[0]["images"][0]
    video = {**SAMPLES[0], "images": [frame, frame.copy()]}
    pixels = _pixels(InstructBlipDataCollator(processor, decoder_only=True), [video, video])
    assert torch.equal(pixels[0, 0], pixels[0, 1])
    assert not torch.equal(pixels[0, 0], processor.pixel_values([[frame]])[0])


def test_evaluation_uses_the_plain_resize(processor):
    collator = InstructBlipDataCollator(processor, decoder_only=True)
    evaluation = collator.for_evaluation()
    assert evaluation.train_transform is None and collator.train_transform is not None
    assert torch.equal(_pixels(evaluation), processor.pixel_values([s["images"] for s in SAMPLES]))
    no_augment = InstructBlipDataCollator(processor, decoder_only=True, augment_images=False)
    assert no_augment.for_evaluation() is no_augment


def test_feature_cache_trains_on_the_evaluation_transform(processor, tmp_path):
    """The cache holds features of the plain resize: with it the collator uses no random crops (the fast path), and
    asking for them is refused."""
    model = model_for(processor, "llama")
    cache = VisionFeatureCache.build(model, processor, SAMPLES, tmp_path / "cache")
    collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)
    assert collator.train_transform is None
    with torch.no_grad():
        expected = model.get_vision_features(processor.pixel_values([s["images"] for s in SAMPLES]))
    torch.testing.assert_close(collator(SAMPLES)["image_embeds"], expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="augment_images=True cannot be combined with feature_cache"):
        InstructBlipDataCollator.for_model(model, processor, feature_cache=cache, augment_images=True)
