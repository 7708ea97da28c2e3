"""`label_smoothing_factor > 0`: each label is scored at the position that predicts it, for causal and seq2seq LLMs.

transformers' `Trainer` takes the labels away from the model and applies its label smoother to the logits, shifting
them only for the classes in its causal-LM mapping; ours is not in it, so without `InstructBlipTrainer`'s own loss
function every position of a causal LLM would be scored on its own input token.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from conftest import IMAGE_TOKEN, assert_close_fp32, make_inputs, tiny_model
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

EPSILON = 0.1


def _batch(llm: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs(llm, batch=2, seed=1)
    if llm == "t5":
        inputs["labels"] = inputs.pop("decoder_input_ids")  # the decoder's inputs come from the labels
        return inputs
    labels = inputs["input_ids"].clone()
    labels[labels == IMAGE_TOKEN] = -100
    labels[:, :-3] = -100  # the last 3 tokens are the target
    inputs["labels"] = labels
    return inputs


def test_label_smoothing_scores_each_label_where_it_is_predicted(llm, tmp_path):
    model = tiny_model(llm)
    args = InstructBlipTrainingArguments(
        output_dir=str(tmp_path), label_smoothing_factor=EPSILON, report_to=[], use_cpu=True
    )
    trainer = InstructBlipTrainer(model=model, args=args)
    model.eval()  # no dropout: the trainer's loss and the reference below compute the same function
    batch = _batch(llm)
    loss = trainer.compute_loss(model, dict(batch))

    labels = batch["labels"]
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if llm == "t5":
        inputs["decoder_input_ids"] = model.language_model.prepare_decoder_input_ids_from_labels(labels=labels)
    with torch.no_grad():
        logits = model(**inputs, return_logits=True).logits
    if llm == "llama":  # position t predicts token t + 1
        logits, labels, unshifted = logits[:, :-1], labels[:, 1:], (logits, batch["labels"])
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=EPSILON)
    assert_close_fp32(loss.detach(), expected)
    if llm == "llama":  # what transformers' unshifted smoother gives is far from it
        wrong = F.cross_entropy(
            unshifted[0].flatten(0, 1), unshifted[1].flatten(), ignore_index=-100, label_smoothing=EPSILON
        )
        assert abs(float(wrong) - float(expected)) > 1e-2


def test_without_label_smoothing_the_models_own_loss_is_used(tmp_path):
    model = tiny_model("llama")
    args = InstructBlipTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = InstructBlipTrainer(model=model, args=args)
    assert trainer.compute_loss_func is None and trainer.label_smoother is None
    batch = _batch("llama")
    model.eval()
    assert torch.equal(trainer.compute_loss(model, dict(batch)), model(**batch).loss)
