"""Training computes the causal LLM's head only at the target positions: same loss and gradients as the full path."""

from __future__ import annotations

import pytest
import torch

from conftest import LLAMA, NUM_QUERY, QFORMER, make_inputs, perturb_, tiny_config
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration

# Tiny text configs of every plain-head family (hidden 32, 2 layers, vocab 100).
FAMILIES = {
    "llama": LLAMA,
    "mistral": {**LLAMA, "model_type": "mistral"},
    "qwen2": {**LLAMA, "model_type": "qwen2"},
    "qwen3": {**LLAMA, "model_type": "qwen3", "head_dim": 8},
    "gemma": {**LLAMA, "model_type": "gemma", "head_dim": 8},
    "phi3": {**LLAMA, "model_type": "phi3"},
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 100,
        **dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop"), 0.0),
    },
    "opt": {
        "model_type": "opt",
        "hidden_size": 32,
        "ffn_dim": 64,
        "word_embed_proj_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 100,
        "dropout": 0.0,
    },
}


def _model(text_config: dict) -> InstructBlipForConditionalGeneration:
    """A tiny model in training mode without dropout, so the two loss paths see the same activations."""
    config = tiny_config().to_dict()
    config["text_config"] = text_config
    config["qformer_config"] = {**QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    model = InstructBlipForConditionalGeneration(InstructBlipConfig(**config))
    return perturb_(model).train()


def _labelled_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    inputs = make_inputs("llama", batch=3, seed=seed)
    labels = inputs["input_ids"].clone()
    labels[:, : NUM_QUERY + 2] = -100  # image and prompt positions carry no label
    labels[1, -1] = -100  # a padded sample
    inputs["attention_mask"][1, -1] = 0
    inputs["labels"] = labels
    return inputs


def _loss_and_grads(model, inputs, **kwargs):
    model.zero_grad()
    out = model(**inputs, **kwargs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_target_only_loss_equals_the_llm_loss(family):
    model = _model(FAMILIES[family])
    inputs = _labelled_inputs()

    fast, fast_grads = _loss_and_grads(model, inputs)
    full, full_grads = _loss_and_grads(model, inputs, return_logits=True)

    assert fast.logits is None and full.logits is not None  # the fast path never built the vocabulary logits
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-6, atol=1e-6)
    assert fast_grads.keys() == full_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(fast_grads[name], full_grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_num_items_in_batch_divides_the_summed_loss_like_the_llm():
    model = _model(LLAMA)
    inputs = _labelled_inputs(seed=1)
    items = torch.tensor(7)
    fast = model(**inputs, num_items_in_batch=items).loss
    full = model(**inputs, num_items_in_batch=items, return_logits=True).loss
    torch.testing.assert_close(fast, full)


def test_eval_mode_keeps_the_logits_and_training_can_ask_for_them():
    model = _model(LLAMA).eval()
    inputs = _labelled_inputs()
    out = model(**inputs)
    assert out.logits.shape == (*inputs["input_ids"].shape, LLAMA["vocab_size"])
    # in training mode the user can still ask for them
    assert model.train()(**inputs, return_logits=True).logits is not None
