"""What `generate` does before the LLM's own `generate`: whose settings apply, padding, prompts longer than the window."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import GenerationConfig

from conftest import IMAGE_TOKEN, NUM_QUERY, make_inputs, tiny_model
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.building import build_model
from hf_instructblip.generation_instructblip import PAPER_GENERATION_SETTINGS, fit_causal_prompts


@pytest.fixture
def received(monkeypatch):
    """Spies on the LLM's `generate`: the generation config it gets, with the call's other settings applied."""
    seen: list[GenerationConfig] = []

    def spy(model):
        original = model.language_model.generate

        def generate(*args, generation_config=None, **kwargs):
            config = GenerationConfig(**generation_config.to_dict()) if generation_config else GenerationConfig()
            config.update(**kwargs)
            seen.append(config)
            return original(*args, generation_config=generation_config, **kwargs)

        monkeypatch.setattr(model.language_model, "generate", generate)
        return seen

    return spy


def _prompt(llm: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs(llm, batch=2)
    inputs.pop("decoder_input_ids", None)
    return inputs


def test_the_models_generation_config_applies_and_explicit_arguments_win(llm, received):
    model = tiny_model(llm)
    model.generation_config.update(num_beams=3, repetition_penalty=1.3, max_new_tokens=4)
    model.language_model.generation_config.update(num_beams=1, max_new_tokens=50)  # the LLM's own: overruled
    seen = received(model)
    model.generate(**_prompt(llm))
    model.generate(**_prompt(llm), num_beams=2, max_new_tokens=3)
    model.generate(**_prompt(llm), generation_config=GenerationConfig(num_beams=4))
    assert [(c.num_beams, c.repetition_penalty, c.max_new_tokens) for c in seen] == [
        (3, 1.3, 4),  # the composite's config, not the LLM's
        (2, 1.3, 3),  # explicit arguments win
        (4, 1.3, 4),  # a given config wins; the model's fills what it leaves unset
    ]
    assert seen[0].eos_token_id == model.config.text_config.eos_token_id


def test_built_folders_carry_the_papers_settings_and_generate_uses_them(tmp_path, tokenizer_dirs, received):
    llm_tokenizer, qformer_tokenizer = tokenizer_dirs
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    built = build_model(
        dict(tiny, model_type="instructblip_vision_model", image_size=30, patch_size=2),
        tiny,
        dict(tiny, model_type="llama", num_key_value_heads=2),
        llm_tokenizer=llm_tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=4,
    )
    built.save_pretrained(tmp_path / "model")
    saved = GenerationConfig.from_pretrained(tmp_path / "model")
    assert {key: getattr(saved, key) for key in PAPER_GENERATION_SETTINGS} == PAPER_GENERATION_SETTINGS
    model = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    seen = received(model)
    inputs = built.processor(images=torch.zeros(3, 30, 30), text="What is in the photo?")
    model.generate(**inputs, max_new_tokens=2)
    assert (seen[0].num_beams, seen[0].min_new_tokens, seen[0].repetition_penalty) == (5, 1, 1.5)


def test_a_stock_folders_own_settings_are_honoured(reference_folder, llm, received):
    path, _ = reference_folder  # written by transformers' own InstructBLIP: no settings of ours
    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    seen = received(model)
    model.generate(**_prompt(llm), max_new_tokens=2)
    assert seen[-1].num_beams is None  # unset: the LLM's own and then transformers' default (greedy) apply
    config = GenerationConfig.from_pretrained(path)
    config.num_beams = 2
    config.save_pretrained(path)
    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    seen = received(model)
    model.generate(**_prompt(llm), max_new_tokens=2)
    assert seen[-1].num_beams == 2


# ----- causal prompts: padding and the window ------------------------------------------------------------------------
def test_right_padding_moves_to_the_left_keeping_every_token_in_order():
    ids = torch.tensor([[9, 9, 5, 6, 7], [9, 9, 5, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    new_ids, new_mask = fit_causal_prompts(
        ids, mask, image_token_index=9, window=None, max_new_tokens=4, pad_token_id=0
    )
    assert new_ids.tolist() == [[9, 9, 5, 6, 7], [0, 0, 9, 9, 5]]
    assert new_mask.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    same = fit_causal_prompts(new_ids, new_mask, image_token_index=9, window=None, max_new_tokens=4, pad_token_id=0)
    assert same[0] is new_ids and same[1] is new_mask  # left-padded already: untouched


def test_a_prompt_longer_than_the_window_loses_the_beginning_of_its_text_with_a_warning(caplog):
    model = tiny_model("llama")
    model.config.text_config.max_position_embeddings = 24  # window: 24 positions, 4 kept for new tokens
    inputs = make_inputs("llama", batch=1)
    text = torch.arange(3, 43).unsqueeze(0)  # 40 text tokens
    inputs["input_ids"] = torch.cat([torch.full((1, NUM_QUERY), IMAGE_TOKEN), text], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    with caplog.at_level(logging.WARNING):
        long = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert "cut from the left" in caplog.text
    assert torch.equal(long[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])  # the caller's prompt in front
    fitted = dict(inputs)
    fitted["input_ids"] = torch.cat([torch.full((1, NUM_QUERY), IMAGE_TOKEN), text[:, -16:]], dim=1)  # 24 - 4 - 4
    fitted["attention_mask"] = torch.ones_like(fitted["input_ids"])
    short = model.generate(**fitted, max_new_tokens=4, do_sample=False)
    assert torch.equal(long[:, -4:], short[:, -4:])  # the same answer as the prompt cut by hand


def test_image_tokens_that_fill_the_window_are_an_error():
    ids = torch.full((1, 10), 9)
    with pytest.raises(ValueError, match="image tokens fill the LLM's window"):
        fit_causal_prompts(ids, torch.ones_like(ids), image_token_index=9, window=12, max_new_tokens=4, pad_token_id=0)
