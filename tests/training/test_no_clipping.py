"""LAVIS does not clip gradients, so InstructBlipTrainingArguments' default turns transformers' clipping (1.0) off."""

from __future__ import annotations

import torch

from conftest import NUM_QUERY, QFORMER, make_inputs, perturb_, tiny_config
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

LEARNING_RATE = 0.5


def _model() -> InstructBlipForConditionalGeneration:
    config = tiny_config().to_dict()
    config["qformer_config"] = {**QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    model = perturb_(InstructBlipForConditionalGeneration(InstructBlipConfig(**config)))
    with torch.no_grad():  # sharper logits: a gradient norm of about 10, which clipping at 1.0 would shrink
        model.language_model.lm_head.weight.mul_(10)
    return model


def _batch() -> dict[str, torch.Tensor]:
    inputs = make_inputs("llama", batch=4)
    labels = inputs["input_ids"].clone()
    labels[:, : NUM_QUERY + 1] = -100  # image and prompt positions
    inputs["labels"] = labels
    return inputs


def test_the_default_steps_on_the_unclipped_gradient(tmp_path):
    args = InstructBlipTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=1,
        optim="sgd",
        learning_rate=LEARNING_RATE,
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="constant",
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    assert args.max_grad_norm == 0  # transformers clips only when max_grad_norm > 0
    model = _model()
    model.apply_trainable_policy()
    batch = _batch()

    model.train()
    model(**batch).loss.backward()
    gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gradients.values()]))
    assert norm > 2, "the gradient must be large enough that transformers' default (1.0) would have clipped it"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    samples = [{key: value[i] for key, value in batch.items()} for i in range(4)]
    collate = lambda features: {key: torch.stack([f[key] for f in features]) for key in features[0]}  # noqa: E731
    InstructBlipTrainer(model=model, args=args, train_dataset=samples, data_collator=collate).train()

    for name, param in model.named_parameters():
        expected = before[name] - LEARNING_RATE * gradients[name] if name in gradients else before[name]
        torch.testing.assert_close(param.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)
