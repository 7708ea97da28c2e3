"""Training computes the causal LLM's head only at the target positions: same loss and gradients as the full path."""

from __future__ import annotations

import pytest
import torch

from conftest import LLAMA, NUM_QUERY, QFORMER, assert_close_fp32, make_inputs, perturb_, tiny_config
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
    assert_close_fp32(fast.loss, full.loss)  # the head runs on other rows: other kernel shapes
    assert fast_grads.keys() == full_grads.keys()
    largest = max(grad.abs().max().item() for grad in full_grads.values())
    for name, expected in full_grads.items():
        # a gradient that is zero in exact arithmetic (a key bias's: softmax ignores it) is rounding noise of the
        # other gradients' size, so none is scaled below 1% of the largest
        scale = max(expected.abs().max().item(), 1e-2 * largest)
        assert_close_fp32(fast_grads[name], expected, scale=scale, msg=name)


def test_num_items_in_batch_divides_the_summed_loss_like_the_llm():
    model = _model(LLAMA)
    inputs = _labelled_inputs(seed=1)
    items = torch.tensor(7)
    fast = model(**inputs, num_items_in_batch=items).loss
    full = model(**inputs, num_items_in_batch=items, return_logits=True).loss
    assert_close_fp32(fast, full)


def _t5_model() -> InstructBlipForConditionalGeneration:
    config = tiny_config("t5").to_dict()
    config["qformer_config"] = {**QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    config["text_config"]["dropout_rate"] = 0.0
    torch.manual_seed(0)
    return perturb_(InstructBlipForConditionalGeneration(InstructBlipConfig(**config))).train()


def _t5_labelled_inputs() -> dict[str, torch.Tensor]:
    inputs = make_inputs("t5", batch=3, seed=1)
    del inputs["decoder_input_ids"]  # derived from the labels
    inputs["labels"] = torch.tensor([[5, 6, 7, 8], [9, -100, -100, -100], [10, 11, -100, -100]])
    return inputs


# (model, inputs, forward kwargs) of every loss path: target-only head, the causal LLM's own loss, T5's own loss.
LOSS_PATHS = {
    "target_only": (lambda: _model(LLAMA), _labelled_inputs, {}),
    "llm_loss": (lambda: _model(LLAMA), _labelled_inputs, {"return_logits": True}),
    "t5": (_t5_model, _t5_labelled_inputs, {}),
}


def _summed_token_loss(model, inputs) -> torch.Tensor:
    """The batch's summed next-token cross-entropy, from the full logits."""
    logits = model(**inputs, return_logits=True).logits.float()
    labels = inputs["labels"]
    if model.config.use_decoder_only_language_model:
        logits, labels = logits[:, :-1], labels[:, 1:]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum")


@pytest.mark.parametrize("path", sorted(LOSS_PATHS))
def test_num_items_in_batch_divides_the_summed_token_loss_on_every_path(path):
    make_model, make_labelled, kwargs = LOSS_PATHS[path]
    model, inputs = make_model(), make_labelled()
    items = 23  # the whole batch's target tokens, of which this micro-batch holds fewer
    with torch.no_grad():
        loss = model(**inputs, **kwargs, num_items_in_batch=torch.tensor(items)).loss
        expected = _summed_token_loss(model, inputs) / items
        as_int = model(**inputs, **kwargs, num_items_in_batch=items).loss
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(as_int, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("path", sorted(LOSS_PATHS))
def test_a_micro_batch_without_targets_adds_nothing(path):
    make_model, make_labelled, kwargs = LOSS_PATHS[path]
    model, inputs = make_model(), make_labelled()
    inputs["labels"] = torch.full_like(inputs["labels"], -100)  # e.g. every target truncated away
    loss, grads = _loss_and_grads(model, inputs, **kwargs, num_items_in_batch=torch.tensor(9))
    assert loss.loss.item() == 0.0
    assert all(bool((g == 0).all()) for g in grads.values())  # no NaN from a 0 / 0 mean


def test_eval_mode_keeps_the_logits_and_training_can_ask_for_them():
    model = _model(LLAMA).eval()
    inputs = _labelled_inputs()
    out = model(**inputs)
    assert out.logits.shape == (*inputs["input_ids"].shape, LLAMA["vocab_size"])
    # in training mode the user can still ask for them
    assert model.train()(**inputs, return_logits=True).logits is not None
