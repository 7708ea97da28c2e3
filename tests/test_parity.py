"""Parity with transformers' own InstructBLIP, the reference implementation (litgpt-style, tiny random configs)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from conftest import assert_close_fp32, make_inputs, tiny_model
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.cli import main as cli_main
from hf_instructblip.conversion import convert_checkpoint, export_to_transformers


def _generate_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k != "decoder_input_ids"}


def test_official_layout_loads_with_no_missing_or_unexpected_keys(reference_folder):
    path, reference = reference_folder
    model, info = InstructBlipForConditionalGeneration.from_pretrained(path, output_loading_info=True)
    assert info["missing_keys"] == set() or not info["missing_keys"]
    assert not info["unexpected_keys"]
    assert not info["mismatched_keys"]
    assert set(model.state_dict()) == set(reference.state_dict())


def test_logits_and_greedy_generate_match_transformers(reference_folder, llm):
    path, reference = reference_folder
    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    inputs = make_inputs(llm)
    with torch.no_grad():
        expected = reference(**inputs).logits
        actual = model(**inputs).logits
    assert actual.shape == expected.shape
    assert_close_fp32(actual, expected)  # our Q-Former's last layer runs other kernel shapes (queries only)

    kwargs = {"max_new_tokens": 8, "do_sample": False}
    expected_ids = reference.generate(**_generate_inputs(inputs), **kwargs)
    actual_ids = model.generate(**_generate_inputs(inputs), **kwargs)
    assert actual_ids.tolist() == expected_ids.tolist()


def test_loss_matches_transformers(reference_folder, llm):
    path, reference = reference_folder
    model = InstructBlipForConditionalGeneration.from_pretrained(path).eval()
    inputs = make_inputs(llm)
    if llm == "llama":
        labels = inputs["input_ids"].clone()
        labels[labels == model.config.image_token_index] = -100
    else:
        labels = inputs.pop("decoder_input_ids")
    with torch.no_grad():
        expected = reference(**inputs, labels=labels).loss
        actual = model(**inputs, labels=labels).loss
    assert_close_fp32(actual, expected)


def test_export_round_trip_loads_in_stock_transformers(tmp_path, llm):
    model = tiny_model(llm)
    export_to_transformers(model, tmp_path / "exported")
    config = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert config["model_type"] == "instructblip"
    stock, info = transformers.InstructBlipForConditionalGeneration.from_pretrained(
        tmp_path / "exported", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    stock.eval()
    inputs = make_inputs(llm, seed=3)
    with torch.no_grad():
        assert_close_fp32(stock(**inputs).logits, model(**inputs).logits)
    assert list((tmp_path / "exported").glob("*.safetensors"))


def test_export_refuses_what_transformers_cannot_represent(tmp_path):
    model = tiny_model(qformer_text_input=False)
    with pytest.raises(ValueError, match="qformer_text_input=False"):
        export_to_transformers(model, tmp_path / "x")
    model = tiny_model(vision_type="vit")
    with pytest.raises(ValueError, match="vision tower 'vit'"):
        export_to_transformers(model, tmp_path / "y")


def test_cli_convert_both_directions(reference_folder, tmp_path, llm):
    path, reference = reference_folder
    (path / "tokenizer_config.json").write_text("{}")  # side files travel with the weights
    ours = tmp_path / "ours"
    back = tmp_path / "back"
    assert cli_main(["convert", str(path), str(ours)]) == 0
    assert json.loads((ours / "config.json").read_text())["model_type"] == "hf_instructblip"
    assert (ours / "tokenizer_config.json").is_file()
    assert cli_main(["convert", str(ours), str(back)]) == 0
    assert json.loads((back / "config.json").read_text())["model_type"] == "instructblip"

    inputs = make_inputs(llm, seed=5)
    converted = InstructBlipForConditionalGeneration.from_pretrained(ours).eval()
    stock = transformers.InstructBlipForConditionalGeneration.from_pretrained(back).eval()
    with torch.no_grad():
        expected = reference(**inputs).logits
        assert_close_fp32(converted(**inputs).logits, expected)
        # transformers' own code on weights converted there and back: the same computation, bit for bit
        assert torch.equal(stock(**inputs).logits, expected)


def test_convert_errors_are_clear(tmp_path, capsys):
    assert cli_main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type 'bert'"):
        convert_checkpoint(tmp_path / "bert", tmp_path / "out")
