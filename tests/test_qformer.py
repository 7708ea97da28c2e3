"""The instruction-aware Q-Former (arXiv 2305.06500 §2.3)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from conftest import assert_close_fp32, make_inputs, tiny_model
from hf_instructblip import InstructBlipQFormerConfig, InstructBlipQFormerModel
from hf_instructblip.building import qformer_config_from_bert, qformer_state_dict_from_bert


def _qformer(attn: str = "sdpa", seed: int = 0) -> InstructBlipQFormerModel:
    torch.manual_seed(seed)
    config = InstructBlipQFormerConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=50,
        encoder_hidden_size=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = attn
    model = InstructBlipQFormerModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _qformer_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    queries = torch.randn(2, 4, 32, generator=g)
    image = torch.randn(2, 9, 24, generator=g)
    ids = torch.randint(1, 50, (2, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 3:] = 0
    return queries, image, ids, mask


def test_only_query_outputs_are_returned():
    queries, image, ids, mask = _qformer_inputs()
    out = _qformer()(query_embeds=queries, encoder_hidden_states=image, input_ids=ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (2, 4, 32)  # (B, Q, D): the instruction outputs are dropped


def test_cross_attention_layers_follow_frequency():
    config = InstructBlipQFormerConfig(
        hidden_size=32, num_hidden_layers=5, num_attention_heads=4, cross_attention_frequency=2
    )
    model = InstructBlipQFormerModel(config)
    assert [layer.has_cross_attention for layer in model.encoder.layer] == [True, False, True, False, True]
    assert [hasattr(layer, "crossattention") for layer in model.encoder.layer] == [True, False, True, False, True]


def test_padding_is_masked():
    """Changing what sits under padding changes nothing; changing a real token changes the queries."""
    model = _qformer()
    queries, image, ids, mask = _qformer_inputs()
    base = model(
        query_embeds=queries, encoder_hidden_states=image, input_ids=ids, attention_mask=mask
    ).last_hidden_state
    ids_pad = ids.clone()
    ids_pad[1, 3:] = 7
    padded = model(query_embeds=queries, encoder_hidden_states=image, input_ids=ids_pad, attention_mask=mask)
    torch.testing.assert_close(padded.last_hidden_state, base, atol=1e-6, rtol=0)
    ids_real = ids.clone()
    ids_real[1, 0] = (ids[1, 0] % 49) + 1
    changed = model(query_embeds=queries, encoder_hidden_states=image, input_ids=ids_real, attention_mask=mask)
    assert (changed.last_hidden_state[1] - base[1]).abs().max() > 1e-4


def test_instruction_never_sees_the_image_directly():
    """Text tokens get no cross-attention: with no queries the image has no influence at all."""
    model = _qformer()
    _, image, ids, mask = _qformer_inputs()
    a = model(encoder_hidden_states=image, input_ids=ids, attention_mask=mask).last_hidden_state
    b = model(encoder_hidden_states=image * 3 + 1, input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_eager_and_sdpa_agree():
    queries, image, ids, mask = _qformer_inputs()
    eager = _qformer("eager")(query_embeds=queries, encoder_hidden_states=image, input_ids=ids, attention_mask=mask)
    sdpa = _qformer("sdpa")(query_embeds=queries, encoder_hidden_states=image, input_ids=ids, attention_mask=mask)
    assert_close_fp32(eager.last_hidden_state, sdpa.last_hidden_state)


def test_output_attentions_and_hidden_states():
    queries, image, ids, mask = _qformer_inputs()
    out = _qformer("eager")(
        query_embeds=queries,
        encoder_hidden_states=image,
        input_ids=ids,
        attention_mask=mask,
        output_attentions=True,
        output_hidden_states=True,
    )
    assert len(out.hidden_states) == 4 and out.hidden_states[-1].shape == (2, 10, 32)
    assert len(out.attentions) == 3 and out.attentions[0].shape == (2, 4, 10, 10)
    assert len(out.cross_attentions) == 2 and out.cross_attentions[0].shape == (2, 4, 4, 9)
    # padded text positions get zero attention
    assert out.attentions[0][1, :, :, 4 + 3 :].abs().max() == 0


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model()
    model.train()
    for module in model.modules():  # no dropout, so both runs are deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.0
    inputs = make_inputs()
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == model.config.image_token_index, -100)

    def grads():
        model.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.qformer.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert model.qformer.encoder.layer[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_bert_initialisation_reproduces_bert_text_encoder():
    """BLIP-2 recipe: with no queries, a BERT-initialised Q-Former is that BERT (token types folded in)."""
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    bert = BertModel(bert_config, add_pooling_layer=False).eval()
    with torch.no_grad():
        bert.embeddings.token_type_embeddings.weight.normal_()
    config = qformer_config_from_bert(bert_config, vocab_size=60, encoder_hidden_size=24)
    qformer = InstructBlipQFormerModel(config).eval()
    missing, unexpected = qformer.load_state_dict(qformer_state_dict_from_bert(bert.state_dict(), 2), strict=False)
    assert not unexpected
    assert all(".crossattention." in k for k in missing)  # cross-attention alone starts random
    layer = qformer.encoder.layer[1]
    torch.testing.assert_close(layer.intermediate_query.dense.weight, layer.intermediate.dense.weight)
    ids = torch.randint(1, 60, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        actual = qformer(input_ids=ids, attention_mask=mask).last_hidden_state
    assert_close_fp32(actual[mask.bool()], expected[mask.bool()])


def test_too_long_instruction_is_a_clear_error():
    model = _qformer()
    queries, image, _, _ = _qformer_inputs()
    ids = torch.ones(2, model.config.max_position_embeddings + 1, dtype=torch.long)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(query_embeds=queries, encoder_hidden_states=image, input_ids=ids)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of"):
        InstructBlipQFormerConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="cross_attention_frequency"):
        InstructBlipQFormerConfig(cross_attention_frequency=0)
