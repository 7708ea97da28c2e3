"""`generate(penalize_prompt=...)`: whether the prompt's tokens count for the repetition penalty (LAVIS: they do not)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_inputs, tiny_model


def _prompt_inputs(llm: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs(llm, batch=2)
    inputs.pop("decoder_input_ids", None)
    # left padding: the first sample gets two more text tokens, the second two pads in front
    ids = inputs["input_ids"]
    inputs["input_ids"] = torch.stack(
        [torch.cat([ids[0], torch.tensor([7, 8])]), torch.cat([torch.tensor([0, 0]), ids[1]])]
    )
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["attention_mask"][1, :2] = 0
    return inputs


def _first_step_scores(model, inputs, penalize_prompt: bool) -> torch.Tensor:
    out = model.generate(
        **inputs,
        max_new_tokens=1,
        repetition_penalty=1.5,
        output_scores=True,
        return_dict_in_generate=True,
        penalize_prompt=penalize_prompt,
    )
    return out.scores[0]  # (B, V): the processed scores of the first new token


def test_prompt_ids_are_penalised_only_by_default():
    """Default (transformers): the first token's scores are penalised at exactly the prompt's token ids;
    penalize_prompt=False (LAVIS): not at all, the scores are the LLM's own."""
    model = tiny_model("llama")
    inputs = _prompt_inputs("llama")
    penalised = _first_step_scores(model, inputs, penalize_prompt=True)
    spared = _first_step_scores(model, inputs, penalize_prompt=False)
    for row in range(2):
        real = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
        changed = torch.nonzero(penalised[row] != spared[row]).flatten()
        assert set(changed.tolist()) == set(real.tolist())
        raw = spared[row, changed]  # the penalty divides positive scores by 1.5 and multiplies negative ones
        torch.testing.assert_close(penalised[row, changed], torch.where(raw > 0, raw / 1.5, raw * 1.5))


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")
def test_embeddings_alone_equal_the_llms_own_generate():
    """penalize_prompt=False is the LLM's `generate` from the merged embeddings, with the prompt ids put in front."""
    model = tiny_model("llama")
    inputs = _prompt_inputs("llama")
    settings = {"num_beams": 2, "num_return_sequences": 2, "max_new_tokens": 4, "repetition_penalty": 1.5}
    ours = model.generate(**inputs, **settings, penalize_prompt=False)
    with torch.no_grad():
        features = model.get_image_features(
            inputs["pixel_values"], inputs["qformer_input_ids"], inputs["qformer_attention_mask"]
        ).pooler_output
        embeds = model.merge_image_features(inputs["input_ids"], features)
        new = model.language_model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **settings)
    prompt = inputs["input_ids"].repeat_interleave(2, dim=0)  # two returned sequences per prompt
    assert torch.equal(ours, torch.cat([prompt, new], dim=1))
    out = model.generate(**inputs, **settings, penalize_prompt=False, return_dict_in_generate=True)
    assert torch.equal(out.sequences, ours)


def test_without_penalties_the_switch_changes_nothing(llm):
    model = tiny_model(llm)
    inputs = _prompt_inputs(llm)
    both = [model.generate(**inputs, max_new_tokens=4, penalize_prompt=flag) for flag in (True, False)]
    assert torch.equal(both[0], both[1])
    if llm == "t5":  # the decoder never sees the prompt's ids: the flag changes nothing, penalty or not
        penalised = [_first_step_scores(model, inputs, flag) for flag in (True, False)]
        assert torch.equal(penalised[0], penalised[1])
