"""The zero-shot harness: synthetic held-out tasks end to end, results.json + the Table-1 markdown, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_processor, model_for
from hf_instructblip.cli import main as cli_main
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_OUT, synthetic_dataset
from hf_instructblip.evaluation.harness import (
    evaluate_zero_shot,
    generation_settings,
    results_table,
    write_results,
)
from hf_instructblip.evaluation.ranking import rank_candidates, score_verbalisers


@pytest.fixture(scope="module")
def tiny(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    return model_for(processor, "llama", seed=3), processor


def test_paper_generation_settings():
    for encoder_decoder in (False, True):
        assert generation_settings("captioning", encoder_decoder=encoder_decoder) == {
            "num_beams": 5,
            "max_new_tokens": 80,
            "min_new_tokens": 10,
            "repetition_penalty": 1.5,
            "length_penalty": 1.0,
            "do_sample": False,
        }
        assert generation_settings("free_form", encoder_decoder=encoder_decoder)["max_new_tokens"] == 256
    for family in ("short_vqa", "knowledge_vqa", "ocr_vqa", "video_qa"):
        t5, causal = (generation_settings(family, encoder_decoder=flag) for flag in (True, False))
        assert t5["max_new_tokens"] == causal["max_new_tokens"] == 10 and t5["num_beams"] == causal["num_beams"] == 5
        # LAVIS: -1 in blip2_t5_instruct.py, 0 in blip2_vicuna_instruct.py
        assert t5["length_penalty"] == -1.0 and causal["length_penalty"] == 0.0
    assert generation_settings("short_vqa", {"num_beams": 1}, encoder_decoder=True)["num_beams"] == 1


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
    # the chance level under each score: 1 / #candidates (yes/no, true/false: 50; classification: 4 shapes)
    chance = {name: result.chance for name, result in results.items()}
    assert chance["synthetic_yes_no"] == chance["synthetic_spatial"] == 0.5
    assert chance["synthetic_classification"] == 0.25
    assert payload["results"]["synthetic_yes_no"]["chance"] == 0.5
    assert "| chance level | 50.0 | 50.0 |" in table


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
    assert "| chance level | - | - | - | - |" in results_table(results)  # not computed: shown as unknown


@pytest.mark.parametrize(
    ("metric", "inference", "candidates", "expected"),
    [
        ("accuracy", "rank", [["yes", "no"], ["a", "b", "c", "d"]], (1 / 2 + 1 / 4) / 2),  # a uniform guess
        ("roc_auc", "rank", [["yes", "no"]], 0.5),  # random scores
        ("mrr", "rank", [["a", "b", "c"]], (1 + 1 / 2 + 1 / 3) / 3),  # expected reciprocal rank of a random order
        ("vqa_accuracy", "generate", [[]], None),  # open generation: nothing to guess from
        ("cider", "generate", [[]], None),
    ],
)
def test_chance_levels(metric, inference, candidates, expected):
    from hf_instructblip.evaluation.harness import chance_level

    assert chance_level(metric, inference, candidates) == (pytest.approx(expected) if expected is not None else None)


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


def _llm_alone(model, processor, batch, settings) -> list[str]:
    """LAVIS' generation: the LLM's own `generate` from the merged image + prompt embeddings, no prompt ids."""
    inputs = processor(
        images=[list(images) for images in batch["images"]],
        text=list(batch["instruction"]),
        padding=True,
        padding_side="left",
    )
    qformer = processor.qformer_inputs(list(batch["qformer_text"]))
    with torch.no_grad():
        features = model.get_image_features(
            pixel_values=inputs["pixel_values"],
            qformer_input_ids=torch.tensor(qformer["qformer_input_ids"]),
            qformer_attention_mask=torch.tensor(qformer["qformer_attention_mask"]),
        ).pooler_output
        embeds = model.merge_image_features(inputs["input_ids"], features)
        new = model.language_model.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], **settings)
    return [text.strip() for text in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _answer_words(model, logits: dict[int, float]):
    """Make the LLM's next-token logit ``logits[id] * s`` for the given token ids and 0 for every other one.

    Every token embedding gets a large constant in dimension 0, so the final hidden state's dimension 0 is a
    positive ``s`` at every text position; the output head reads only that dimension.
    """
    llm = model.language_model
    assert llm.lm_head.weight is not llm.model.embed_tokens.weight
    with torch.no_grad():
        llm.model.embed_tokens.weight[:, 0] += 50.0
        llm.lm_head.weight.zero_()
        for token, weight in logits.items():
            llm.lm_head.weight[token, 0] = weight
    return model


@pytest.mark.filterwarnings("ignore:Passing `repetition_penalty` with `inputs_embeds`")  # _llm_alone
def test_repetition_penalty_spares_the_prompt(tokenizer_dirs):
    """Harness generation = the LLM's own `generate` from the embeddings alone (LAVIS), so repetition_penalty=1.5
    counts generated tokens only; with the prompt ids as well (transformers' default) the answer changes."""
    processor = make_processor(tokenizer_dirs)
    dataset = synthetic_dataset("synthetic_counting", 6, seed=9)
    prompt_ids = [set(processor.tokenizer(text)["input_ids"]) for text in dataset["instruction"]]
    prompt_word = min(set.intersection(*prompt_ids))  # a token of every question (" many", " there", ...)
    other_word = processor.tokenizer(" zebra", add_special_tokens=False)["input_ids"][0]
    assert other_word not in set.union(*prompt_ids)
    # The prompt word's logit 2s beats the other word's 1.5s; a penalty of 1.5 on it (1.33s) would reverse that.
    model = _answer_words(model_for(processor, "llama", seed=3), {prompt_word: 2.0, other_word: 1.5})
    prompt_text, other_text = (processor.tokenizer.decode([word]).strip() for word in (prompt_word, other_word))
    for num_beams in (3, 1):  # greedy last: its answers are checked below
        overrides = {"num_beams": num_beams, "max_new_tokens": 3, "repetition_penalty": 1.5}
        results = evaluate_zero_shot(
            model, processor, {"counting": dataset}, batch_size=3, generation=overrides, progress=False
        )
        settings = generation_settings("short_vqa", overrides, encoder_decoder=False)
        expected = [p for i in (0, 3) for p in _llm_alone(model, processor, dataset[i : i + 3], settings)]
        assert results["counting"].predictions == expected  # same computation: bit-exact
    # Greedy: only generated tokens are penalised, so the prompt word wins; counting the prompt's ids as well
    # (transformers' default) penalises it from the start and the other word wins.
    assert all(p.startswith(prompt_text) for p in expected)
    with_prompt_ids = []
    for start in (0, 3):
        batch = dataset[start : start + 3]
        inputs = processor(
            images=[list(images) for images in batch["images"]],
            text=list(batch["instruction"]),
            padding=True,
            padding_side="left",
        )
        inputs.update({k: torch.tensor(v) for k, v in processor.qformer_inputs(list(batch["qformer_text"])).items()})
        with_prompt_ids += processor.decode_generated(model.generate(**inputs, **settings), inputs["input_ids"])
    assert all(p.startswith(other_text) for p in with_prompt_ids)


def _word(processor, text: str) -> int:
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


def test_binary_tasks_rank_the_papers_verbaliser_sets(tokenizer_dirs):
    """Yes/no and true/false tasks rank positive yes/true against negative no/false (arXiv 2305.06500 §2.5): a
    model that says "true" most, then "no", answers yes to a yes/no question (ranking only yes/no would say no)."""
    processor = make_processor(tokenizer_dirs)
    # each word's token as ranked after a prompt (joined as a training target: " yes" for SmolLM2's BPE)
    words = {
        w: _word(processor, processor.continuation_texts(["Is it?"], [w])[0]) for w in ("yes", "no", "true", "false")
    }
    model = _answer_words(model_for(processor, "llama", seed=3), {words["true"]: 2.0, words["no"]: 1.5})
    data = {name: synthetic_dataset(name, 4, seed=5) for name in ("synthetic_yes_no", "synthetic_spatial")}
    results = evaluate_zero_shot(model, processor, data, progress=False)
    assert results["synthetic_yes_no"].predictions == ["yes"] * 4
    assert results["synthetic_spatial"].predictions == ["true"] * 4
    sample = data["synthetic_yes_no"][0]
    alone = rank_candidates(model, processor, [sample["images"]], [sample["instruction"]], [["yes", "no"]])
    assert alone.predictions == [1]  # ranking yes against no only would answer "no"


def test_binary_auc_scores_the_verbaliser_classes(tiny):
    """HatefulMemes-style ROC-AUC over the positive class's verbaliser score against the negative one's."""
    model, processor = tiny
    data = synthetic_dataset("synthetic_yes_no", 8, seed=5).map(lambda row: {"candidates": ["no", "yes"]})
    assert set(data["target"]) == {"yes", "no"}
    result = evaluate_zero_shot(model, processor, {"hateful_memes": data}, progress=False)["hateful_memes"]
    assert (result.metric, result.inference) == ("auc", "rank")
    binary = score_verbalisers(
        model,
        processor,
        [list(images) for images in data["images"]],
        list(data["instruction"]),
        reduce="max",
        qformer_prompts=list(data["qformer_text"]),
    )
    positive = [o for o, t in zip(binary.log_odds, data["target"]) if t == "yes"]
    negative = [o for o, t in zip(binary.log_odds, data["target"]) if t == "no"]
    pairs = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    assert result.score == pytest.approx(sum(pairs) / len(pairs))
    assert result.predictions == [("yes" if label else "no") for label in binary.labels]
