"""`build_model` on the meta device: loaded parts used as loaded, new parts initialised as a constructed model's.

`tests/test_build.py` checks that the weights land where they belong (BERT's text path, the LLM's logits, the CLI);
this file checks what building on the meta device must not change: nothing left on meta, non-persistent buffers
(position ids, rotary frequencies) right, the random parts initialised as a normally constructed
`InstructBlipForConditionalGeneration(config)` initialises them, and the same seed giving the same model.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    ViTConfig,
    ViTModel,
)

from conftest import LLAMA, QFORMER, VISION, VISION_TOWERS
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.assets import minilm_path
from hf_instructblip.building import SHIPPED_PARTS, build_model, resolve_part

RANDOM_QFORMER = {k: v for k, v in QFORMER.items() if k != "vocab_size"}  # the vocabulary follows the tokenizer


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tokenizer_dirs):
    """A tiny saved ViT, BERT (MiniLM's tokenizer) and Llama (SmolLM2's tokenizer)."""
    llm_tokenizer, qformer_tokenizer = tokenizer_dirs
    root = tmp_path_factory.mktemp("building")
    torch.manual_seed(0)
    ViTModel(ViTConfig(**VISION)).save_pretrained(root / "vit")
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(qformer_tokenizer).save_pretrained(root / "bert")
    tokenizer = AutoTokenizer.from_pretrained(llm_tokenizer)
    llama = {k: v for k, v in LLAMA.items() if k not in ("model_type", "vocab_size")}
    LlamaForCausalLM(LlamaConfig(**{**llama, "vocab_size": len(tokenizer)})).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return root


def _assert_no_meta_and_buffers_as_constructed(model: InstructBlipForConditionalGeneration) -> None:
    on_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    assert not on_meta
    torch.manual_seed(0)
    constructed = dict(InstructBlipForConditionalGeneration(model.config).named_buffers())
    buffers = dict(model.named_buffers())
    assert buffers.keys() == constructed.keys()
    for name, buffer in buffers.items():  # position ids, rotary frequencies: computed, so exactly equal
        assert torch.equal(buffer, constructed[name]), name


def test_loaded_parts_are_used_as_saved(parts):
    built = build_model(parts / "vit", parts / "bert", parts / "llm", num_query_tokens=4)
    _assert_no_meta_and_buffers_as_constructed(built.model)
    saved_llm = AutoModelForCausalLM.from_pretrained(parts / "llm").state_dict()
    llm = built.model.language_model.state_dict()
    for name, tensor in saved_llm.items():  # the embeddings gained the <image> row at the end
        assert torch.equal(llm[name][: tensor.shape[0]], tensor), name
    saved_vit = ViTModel.from_pretrained(parts / "vit").state_dict()
    vision = built.model.vision_model.state_dict()
    assert vision.keys() == saved_vit.keys()
    for name, tensor in saved_vit.items():
        assert torch.equal(vision[name], tensor), name


@pytest.mark.parametrize("tower", sorted(VISION_TOWERS))
def test_random_parts_initialised_as_a_constructed_model(parts, tower):
    """Every new tensor (random tower, random Q-Former, queries, projection) has the distribution it gets when the
    whole model is constructed normally: constants equal, random tensors with the same spread."""
    vision = {"model_type": tower, **VISION_TOWERS[tower]}
    built = build_model(vision, RANDOM_QFORMER, parts / "llm", qformer_tokenizer=parts / "bert", num_query_tokens=4)
    model = built.model
    _assert_no_meta_and_buffers_as_constructed(model)
    torch.manual_seed(0)
    constructed = dict(InstructBlipForConditionalGeneration(model.config).named_parameters())
    for name, parameter in model.named_parameters():
        if name.startswith("language_model."):
            continue
        expected = constructed[name]
        assert parameter.dtype == expected.dtype and parameter.shape == expected.shape, name
        assert torch.isfinite(parameter).all(), name
        if expected.min() == expected.max():  # LayerNorm weights and biases, zero-initialised biases
            assert torch.equal(parameter, expected), name
        elif parameter.numel() >= 256:  # enough values for the spread to be a property of the initialiser
            ratio = (parameter.std() / expected.std()).item()
            assert 0.75 < ratio < 1.33, (name, ratio)
    assert model.query_tokens.std().item() == pytest.approx(0.02, rel=0.25)  # LAVIS `blip2.py`: normal(0, 0.02)


def test_same_seed_same_model_another_seed_other_random_parts(parts):
    kwargs = {"num_query_tokens": 4}
    first = build_model(dict(VISION, model_type="vit"), parts / "bert", parts / "llm", seed=3, **kwargs)
    again = build_model(dict(VISION, model_type="vit"), parts / "bert", parts / "llm", seed=3, **kwargs)
    other = build_model(dict(VISION, model_type="vit"), parts / "bert", parts / "llm", seed=4, **kwargs)
    first_state, again_state, other_state = (b.model.state_dict() for b in (first, again, other))
    for name, tensor in first_state.items():
        assert torch.equal(again_state[name], tensor), name
    differ = {name for name, tensor in first_state.items() if not torch.equal(other_state[name], tensor)}
    assert {"query_tokens", "language_projection.weight"} <= differ
    assert any(".crossattention." in name for name in differ)
    assert any(name.startswith("vision_model.") for name in differ)
    rows = len(first.tokenizer) - 1  # the LLM's own vocabulary; the <image> row is new (seeded)
    loaded = [n for n in first_state if n.startswith("language_model.") or ".attention.attention." in n]
    assert len(loaded) > 10
    for name in loaded:  # the LLM and BERT's self-attention come from the files
        assert torch.equal(first_state[name][:rows], other_state[name][:rows]), name


def test_random_llm_and_qformer_from_configs_follow_their_tokenizers(parts):
    llm = {k: v for k, v in LLAMA.items() if k not in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")}
    built = build_model(
        dict(VISION, model_type="vit"),
        RANDOM_QFORMER,
        llm,
        llm_tokenizer=parts / "llm",
        qformer_tokenizer="shipped:minilm",
        num_query_tokens=4,
    )
    _assert_no_meta_and_buffers_as_constructed(built.model)
    config = built.model.config
    assert config.qformer_config.vocab_size == len(built.qformer_tokenizer)  # MiniLM's vocabulary + [DEC]
    assert built.qformer_tokenizer.bos_token == "[DEC]"
    assert config.text_config.vocab_size == len(built.tokenizer)  # SmolLM2's vocabulary + <image>
    assert config.text_config.eos_token_id == built.tokenizer.eos_token_id


def test_shipped_names_and_bad_parts_are_named():
    assert resolve_part("shipped:minilm") == str(minilm_path())
    assert resolve_part("some/folder") == "some/folder"
    with pytest.raises(ValueError, match="unknown shipped part 'shipped:vicuna'"):
        resolve_part("shipped:vicuna")
    assert SHIPPED_PARTS == ("shipped:minilm", "shipped:smollm2", "shipped:efficientnet")
    with pytest.raises(ValueError, match="needs `llm_tokenizer`"):
        build_model(dict(VISION, model_type="vit"), RANDOM_QFORMER, dict(LLAMA), qformer_tokenizer="shipped:minilm")
    with pytest.raises(ValueError, match="needs a 'model_type'"):
        build_model({"hidden_size": 32}, RANDOM_QFORMER, dict(LLAMA), qformer_tokenizer="shipped:minilm")
