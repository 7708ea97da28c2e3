"""The demo end to end on tiny parts: what it prints, and the folder it leaves (model, results, plot, model card).

`make demo` runs the same code on the real parts (EfficientNet-Lite0, MiniLM, SmolLM2); here a tiny random ViT, a
tiny BERT and a tiny Llama with the real tokenizers keep it to seconds. What a user relies on: the saved folder loads
back and answers, its card names where every part came from, the training mixture and the hyperparameters, the
results carry chance levels, and the plot is a real PNG.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

from conftest import LLAMA, VISION
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.data.synthetic import COLORS, SHAPES, SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_dataset
from hf_instructblip.demo import EVAL_TASKS, DemoConfig, blind_baseline, claims_section, guess_chance, run_demo


def make_tiny_parts(root: Path, tokenizer_dirs) -> tuple[Path, Path]:
    """A tiny BERT (MiniLM's tokenizer) and a tiny Llama (SmolLM2's tokenizer), saved as folders."""
    llm_tokenizer, qformer_tokenizer = tokenizer_dirs
    torch.manual_seed(0)
    bert = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    BertModel(bert).save_pretrained(root / "bert")
    AutoTokenizer.from_pretrained(qformer_tokenizer).save_pretrained(root / "bert")
    tokenizer = AutoTokenizer.from_pretrained(llm_tokenizer)
    llama = {k: v for k, v in LLAMA.items() if k not in ("model_type", "vocab_size")}
    LlamaForCausalLM(LlamaConfig(**{**llama, "vocab_size": len(tokenizer)})).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    return root / "bert", root / "llm"


def tiny_demo_config(bert: Path, llm: Path) -> DemoConfig:
    vision = {k: v for k, v in VISION.items() if k != "image_size"}
    return DemoConfig(
        vision={"model_type": "vit", **vision},
        qformer=str(bert),
        llm=str(llm),
        image_size=32,
        num_query_tokens=4,
        max_steps=3,
        batch_size=2,
        warmup_steps=1,
        eval_samples=2,
        frozen_dtype="float32",
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tokenizer_dirs):
    root = tmp_path_factory.mktemp("demo")
    bert, llm = make_tiny_parts(root, tokenizer_dirs)
    config = tiny_demo_config(bert, llm)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run = run_demo(root / "demo-model", config)
    return run, root / "demo-model", config, printed.getvalue()


def test_saved_folder_loads_and_answers(demo):
    _, folder, config, _ = demo
    model = InstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=Image.new("RGB", (40, 40), "white"), text="What is in the photo?")
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[-1] >= 1
    assert processor.image_processor.size == {"height": config.image_size, "width": config.image_size}


def test_card_names_every_part_mixture_and_hyperparameters(demo):
    _, folder, config, _ = demo
    card = (folder / "README.md").read_text()
    assert "not recorded" not in card
    assert "random initialisation (vit config, seed 0)" in card  # the vision tower
    assert f"{config.qformer} (BERT weights by the BLIP-2 recipe" in card
    assert f"| {config.llm} |" in card
    assert "| query tokens, projection |" in card and "| new, initialised at the build (seed 0) | yes |" in card
    for task in SYNTHETIC_HELD_IN:  # the training mixture, with its sampling weights
        assert f"| {task} | {config.max_steps * config.batch_size} | 1.0 | 0.200 |" in card
    for line in (f"- learning_rate: {config.learning_rate}", f"- max_steps: {config.max_steps}", "- max_grad_norm: "):
        assert line in card
    assert "held-out datasets: zero-shot" in card and "held-in datasets: unseen samples" in card


def test_results_carry_chance_levels(demo):
    run, folder, _, _ = demo
    results = json.loads((folder / "results.json").read_text())["results"]
    assert set(results) == set(EVAL_TASKS) | set(SYNTHETIC_HELD_OUT)
    for name in SYNTHETIC_HELD_OUT:
        assert results[name]["held_out"] and results[name]["chance"] is not None
    for name in EVAL_TASKS:
        assert not results[name]["held_out"] and 0 < results[name]["chance"] < 1
    table = (folder / "results.md").read_text()
    assert table.startswith("# Held-in and zero-shot held-out results of demo-model")  # not "zero-shot" alone
    assert "| chance level |" in table
    assert run.after.held_in["synthetic_counting"].chance == pytest.approx(0.25)


def test_plot_is_a_png_with_three_panels_worth_of_pixels(demo):
    _, folder, _, _ = demo
    with Image.open(folder / "demo_results.png") as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 2.5 * height  # three panels side by side


def test_config_records_part_sources_across_save_and_load(demo):
    _, folder, config, _ = demo
    saved = json.loads((folder / "config.json").read_text())["part_sources"]
    assert set(saved) == {"vision", "qformer", "llm", "new"}
    assert saved["llm"] == config.llm


def test_demo_prints_before_after_chance_and_tables(demo):
    printed = demo[3]
    assert "vision tower random vit tower (frozen)" in printed
    assert "before  after chance  blind" in printed and "short VQA (vqa + counting)" in printed
    assert "| chance level |" in printed  # the held-out table as the harness writes it
    assert "What is in the photo?" in printed  # the README's plain prompt, shown before and after


def test_guess_chance_follows_each_question_vocabulary():
    vqa = synthetic_dataset("synthetic_vqa", 40, seed=3)
    colours = sum(target in COLORS for target in vqa["target"])
    shapes = sum(target in SHAPES for target in vqa["target"])
    assert colours + shapes == 40
    assert guess_chance(vqa) == pytest.approx((colours / 5 + shapes / 4) / 40)
    assert guess_chance(synthetic_dataset("synthetic_counting", 10)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="synthetic_captioning"):
        guess_chance(synthetic_dataset("synthetic_captioning", 2))


def test_blind_baseline_is_each_kind_most_common_answer():
    counting = synthetic_dataset("synthetic_counting", 60, seed=5)
    most_common = max(counting["target"].count(answer) for answer in set(counting["target"]))
    assert blind_baseline(counting) == pytest.approx(most_common / 60)
    assert blind_baseline(counting) > guess_chance(counting)  # counts are skewed towards 1: "chance" flatters
    vqa = synthetic_dataset("synthetic_vqa", 60, seed=5)
    colours = [t for t in vqa["target"] if t in COLORS]
    shapes = [t for t in vqa["target"] if t in SHAPES]
    expected = max(map(colours.count, colours)) + max(map(shapes.count, shapes))
    assert blind_baseline(vqa) == pytest.approx(expected / 60)


def test_card_claims_section_comes_from_the_committed_replication(tmp_path):
    results = tmp_path / "paper_claims.md"
    assert claims_section(results) is None  # an installed wheel: no such file, no section
    results.write_text(
        "# Claims\n\n## Held-in\n\n| a |\n\n## Verdicts\n\n| (a) | reproduced |\n\n## Mixture\n\n| x |\n"
    )
    section = claims_section(results)
    assert section.startswith("## The paper's three claims at this scale")
    assert "| (a) | reproduced |" in section and "## Mixture" not in section and "## Held-in" not in section
