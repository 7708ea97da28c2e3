"""The zero-shot harness: synthetic held-out tasks end to end, results.json + the Table-1 markdown, the CLI."""

from __future__ import annotations

import json

import pytest

from conftest import make_processor, model_for
from hf_instructblip.cli import main as cli_main
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_OUT, synthetic_dataset
from hf_instructblip.evaluation.harness import (
    evaluate_zero_shot,
    generation_settings,
    results_table,
    write_results,
)


@pytest.fixture(scope="module")
def tiny(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    return model_for(processor, "llama", seed=3), processor


def test_paper_generation_settings():
    assert generation_settings("captioning") == {
        "num_beams": 5,
        "max_new_tokens": 80,
        "min_new_tokens": 10,
        "repetition_penalty": 1.5,
        "length_penalty": 1.0,
        "do_sample": False,
    }
    short = generation_settings("short_vqa")
    assert short["max_new_tokens"] == 10 and short["length_penalty"] == -1.0 and short["num_beams"] == 5
    assert generation_settings("free_form")["max_new_tokens"] == 256
    assert generation_settings("short_vqa", {"num_beams": 1})["num_beams"] == 1


def test_synthetic_held_out_tasks_end_to_end(tiny, tmp_path):
    model, processor = tiny
    results = evaluate_zero_shot(
        model, processor, list(SYNTHETIC_HELD_OUT), num_samples=6, batch_size=4, progress=False
    )
    assert list(results) == list(SYNTHETIC_HELD_OUT)
    for name, result in results.items():
        dataset = synthetic_dataset(name, 6, seed=1234)
        assert result.inference == "rank" and result.metric == "accuracy" and result.held_out
        assert result.num_samples == 6 and len(result.predictions) == 6
        assert all(p in c for p, c in zip(result.predictions, dataset["candidates"]))  # a prediction is a candidate
        correct = sum(p == t for p, t in zip(result.predictions, dataset["target"]))
        assert result.score == pytest.approx(correct / 6)
    json_path, table_path = write_results(results, tmp_path, model_name="tiny")
    payload = json.loads(json_path.read_text())
    assert set(payload["results"]) == set(SYNTHETIC_HELD_OUT)
    table = table_path.read_text()
    assert "| this model |" not in table and "| tiny |" in table
    assert all(name in table for name in SYNTHETIC_HELD_OUT)


def test_generate_tasks_and_custom_datasets(tiny):
    model, processor = tiny
    data = {"synthetic_counting": synthetic_dataset("synthetic_counting", 4, seed=9)}
    results = evaluate_zero_shot(
        model, processor, data, generation={"num_beams": 1, "max_new_tokens": 3}, progress=False
    )
    result = results["synthetic_counting"]
    assert result.inference == "generate" and len(result.predictions) == 4
    assert 0.0 <= result.score <= 1.0


def test_table_follows_the_papers_column_order():
    from hf_instructblip.evaluation.harness import DatasetResult

    results = {
        name: DatasetResult(name, "accuracy", "rank", True, 1, value)
        for name, value in [("vizwiz", 0.3), ("nocaps", 1.2), ("synthetic_yes_no", 0.5), ("gqa", 0.48)]
    }
    header = results_table(results).splitlines()[0]
    assert header == "| model | NoCaps | GQA | VizWiz | synthetic_yes_no |"
    assert "| 120.0 | 48.0 | 30.0 | 50.0 |" in results_table(results)


def test_unknown_dataset_and_empty_candidates(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="unknown evaluation dataset 'nope'"):
        evaluate_zero_shot(model, processor, ["nope"], progress=False)
    bad = synthetic_dataset("synthetic_yes_no", 3, seed=0)
    bad = bad.map(lambda row, i: {"candidates": row["candidates"] if i != 1 else []}, with_indices=True)
    with pytest.raises(ValueError, match=r"dataset 'synthetic_yes_no', sample 1: the candidate list is empty"):
        evaluate_zero_shot(model, processor, {"synthetic_yes_no": bad}, progress=False)


def test_cli_evaluate_on_a_built_model(tmp_path, tokenizer_dirs):
    """`hf-instructblip build` then `hf-instructblip evaluate` on the synthetic held-out tasks."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    from hf_instructblip.assets import minilm_path

    torch.manual_seed(0)
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    ).save_pretrained(tmp_path / "bert")
    processor = make_processor(tokenizer_dirs)
    processor.qformer_tokenizer.save_pretrained(tmp_path / "bert")
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(processor.tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).save_pretrained(tmp_path / "llm")
    processor.tokenizer.save_pretrained(tmp_path / "llm")
    vit = '{"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "image_size": 32, "patch_size": 8}'
    assert minilm_path().is_dir()
    assert (
        cli_main(
            [
                "build",
                "--vision",
                vit,
                "--qformer",
                str(tmp_path / "bert"),
                "--llm",
                str(tmp_path / "llm"),
                "--num-query-tokens",
                "4",
                "--output",
                str(tmp_path / "model"),
            ]
        )
        == 0
    )
    out = tmp_path / "eval"
    assert cli_main(["evaluate", str(tmp_path / "model"), "--num-samples", "4", "--output-dir", str(out)]) == 0
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["results"]) == set(SYNTHETIC_HELD_OUT)
    assert (out / "results.md").read_text().startswith("# Zero-shot results")
