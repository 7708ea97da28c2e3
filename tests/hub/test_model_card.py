"""The model card: rendered from model_card.md, parsed back by huggingface_hub, its results and usage snippet real."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

from hf_instructblip.data.mixture import mixture_weights
from hf_instructblip.hub import CARD_TAG, CardInfo, load_results, push_to_hub, render_model_card

from .conftest import MODEL_REPO, SNIPPET_GENERATION, SNIPPET_PROMPT, USER

REPO_ROOT = Path(__file__).resolve().parents[2]


def _expected_model_index(results_folder: Path) -> list[list]:
    """``model-index`` as the card must hold it: Hub dataset id, metric, score x100 (the paper's scale)."""
    ids = {"gqa": "lmms-lab-encoder/GQA", "hateful_memes": "neuralcatcher/hateful_memes"}
    entries = json.loads((results_folder / "results.json").read_text())["results"]
    return [[ids.get(name, name), entry["metric"], round(100 * entry["score"], 2)] for name, entry in entries.items()]


def test_rendered_card_parses_back_with_its_results(published, tmp_path):
    results = load_results(published.root / "eval")
    card = render_model_card(published.root / "model", MODEL_REPO, published.card, results)
    assert str(card) == str(render_model_card(published.root / "model", MODEL_REPO, published.card, results))
    card.save(tmp_path / "README.md")

    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "image-text-to-text", "apache-2.0")
    assert CARD_TAG in data.tags and "custom_code" in data.tags
    index = [[r.dataset_type, r.metric_type, r.metric_value] for r in data.eval_results]
    assert index == _expected_model_index(published.root / "eval")
    assert data.model_name == "tiny-instructblip"
    assert data.datasets == [
        "Multimodal-Fatima/OK-VQA_train",
        "Multimodal-Fatima/VQAv2_train",
        "yerevann/coco-karpathy",
    ]

    text = loaded.text
    config = published.model.config
    vision = config.vision_config
    assert f"instructblip_vision_model, width {vision.hidden_size}, {vision.num_hidden_layers} layers," in text
    assert (
        f"llama, width {config.text_config.hidden_size}, 2 layers, vocabulary {config.text_config.vocab_size}" in text
    )
    assert "sentence-transformers/all-MiniLM-L6-v2" in text  # the Q-Former source the caller gave
    weights = mixture_weights(published.card.mixture_sizes, published.card.mixture_multipliers)
    assert f"| okvqa | 100 | 2.0 | {weights['okvqa']:.3f} |" in text
    assert "| GQA | HM | synthetic_yes_no |" in text and "| 41.7 | 57.3 | 62.5 |" in text  # paper layout, x100
    assert "arXiv" in text and "2305.06500" in text and "## Limitations" in text


def test_adapter_card_points_at_its_base(published):
    card = render_model_card(published.root / "adapter", f"{USER}/some-adapter", CardInfo(base_model=MODEL_REPO))
    assert (card.data.library_name, card.data.base_model) == ("peft", MODEL_REPO)
    assert (
        f'base_id = "{MODEL_REPO}"' in card.text
        and 'PeftModel.from_pretrained(base, "hub-tester/some-adapter")' in (card.text)
    )
    assert "`query_tokens`" in card.text and "`language_projection`" in card.text  # saved with the adapter


def test_pushed_card_loads_from_the_hub_with_its_model_index(published):
    assert published.report["model_index"] == _expected_model_index(published.root / "eval")
    assert CARD_TAG in published.report["tags"]


def test_usage_snippet_runs_against_the_hub(published):
    """The card's python block, unmodified, ran in a fresh process without hf_instructblip (conftest `published`)."""
    assert f"model_id = {MODEL_REPO!r}".replace("'", '"') in published.readme
    image = Image.open(published.root / "photo.jpg").convert("RGB")
    inputs = published.processor(images=image, text=SNIPPET_PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = published.model.generate(**inputs, **SNIPPET_GENERATION)
    expected = published.processor.decode_generated(output, inputs["input_ids"])[0]
    assert published.report["snippet_output"] == expected + "\n"


def test_pushing_results_updates_the_card_and_keeps_the_rest(hub, published):
    repo_id = f"{USER}/results-later"
    push_to_hub(published.root / "model", repo_id, token=hub.token, card=published.card)
    before = ModelCard(hub.read(repo_id, "README.md").decode())
    assert before.data.eval_results is None and "No evaluation results" in before.text

    push_to_hub(published.root / "eval", repo_id, token=hub.token)
    after = ModelCard(hub.read(repo_id, "README.md").decode())
    index = [[r.dataset_type, r.metric_type, r.metric_value] for r in after.data.eval_results]
    assert index == _expected_model_index(published.root / "eval")
    assert after.text.split("## Evaluation")[0] == before.text.split("## Evaluation")[0]  # components etc. kept
    assert "| 41.7 | 57.3 | 62.5 |" in after.text
    assert json.loads(hub.read(repo_id, "results.json")) == json.loads(
        (published.root / "eval/results.json").read_text()
    )


def test_the_package_ships_the_template():
    shipped = resources.files("hf_instructblip").joinpath("model_card.md").read_text(encoding="utf-8")
    assert shipped == (REPO_ROOT / "model_card.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("broken", ["{}", '{"results": {"gqa": {"score": 1}}}', "not json"])
def test_bad_results_file_is_refused_with_its_path(tmp_path, broken):
    (tmp_path / "results.json").write_text(broken)
    with pytest.raises(ValueError, match=r"results\.json is not a results\.json written by"):
        load_results(tmp_path)


def test_a_feature_map_tower_is_described_without_a_layer_count(tmp_path, tokenizer_dirs):
    """EfficientNet's config counts 64 "hidden layers" (its blocks' repeats): meaningless for a CNN's row."""
    from conftest import LLAMA, QFORMER
    from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration

    vision = {"model_type": "efficientnet", "width_coefficient": 0.125, "depth_coefficient": 0.5, "hidden_dim": 160}
    config = InstructBlipConfig(
        vision_config={**vision, "image_size": 64}, qformer_config=dict(QFORMER), text_config=dict(LLAMA)
    )
    InstructBlipForConditionalGeneration(config).save_pretrained(tmp_path)
    text = str(render_model_card(tmp_path, "me/cnn-instructblip", CardInfo(license="apache-2.0")))
    assert "efficientnet, width " in text and " px, feature layer " in text
    assert f"{config.vision_config.num_hidden_layers} layers" not in text
