"""InstructBlipForConditionalGeneration: inputs, multi-frame, image_embeds, placeholders, saving, trainable policy."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import IMAGE_TOKEN, NUM_QUERY, VISION_TOWERS, assert_close_fp32, make_inputs, tiny_config, tiny_model
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration


def _visual_tokens(model, inputs):
    with torch.no_grad():
        return model.get_image_features(
            pixel_values=inputs["pixel_values"],
            qformer_input_ids=inputs["qformer_input_ids"],
            qformer_attention_mask=inputs["qformer_attention_mask"],
        ).pooler_output


@pytest.mark.parametrize("text_input", [True, False])
def test_visual_tokens_depend_on_instruction_only_when_instruction_aware(text_input):
    model = tiny_model(qformer_text_input=text_input)
    inputs = make_inputs()
    other = dict(inputs, qformer_input_ids=(inputs["qformer_input_ids"] * 7) % 49 + 1)
    a, b = _visual_tokens(model, inputs), _visual_tokens(model, other)
    if text_input:
        assert (a - b).abs().max() > 1e-4  # InstructBLIP: instruction-aware visual features
    else:
        assert torch.equal(a, b)  # BLIP-2 ablation: the Q-Former never sees the instruction


def test_blip2_style_model_needs_no_qformer_text():
    model = tiny_model(qformer_text_input=False)
    inputs = make_inputs()
    with torch.no_grad():
        features = model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
    assert features.shape == (2, NUM_QUERY, 32)


def test_instruction_aware_model_requires_qformer_text():
    model = tiny_model()
    with pytest.raises(ValueError, match="qformer_input_ids is required"):
        model.get_image_features(pixel_values=torch.randn(1, 3, 30, 30))


def test_image_embeds_path_equals_pixel_values_path(llm):
    model = tiny_model(llm)
    inputs = make_inputs(llm)
    with torch.no_grad():
        image_embeds = model.get_vision_features(inputs["pixel_values"])
        from_pixels = model(**inputs).logits
        cached = dict(inputs, image_embeds=image_embeds)
        del cached["pixel_values"]
        from_embeds = model(**cached).logits
    assert torch.equal(from_pixels, from_embeds)
    generated = model.generate(**{k: v for k, v in cached.items() if k != "decoder_input_ids"}, max_new_tokens=4)
    assert generated.shape[0] == 2


def test_image_embeds_are_before_the_trainable_vision_layernorm():
    """A feature cache must not freeze the trained LayerNorm: changing it changes the output of the cached path."""
    model = tiny_model()
    inputs = make_inputs()
    image_embeds = model.get_vision_features(inputs["pixel_values"]).detach()
    kwargs = {k: v for k, v in inputs.items() if k != "pixel_values"}
    before = model(**kwargs, image_embeds=image_embeds).logits
    with torch.no_grad():
        model.get_submodule(model.vision_norm_name).weight.mul_(2)
    after = model(**kwargs, image_embeds=image_embeds).logits
    assert (before - after).abs().max() > 1e-4


def test_multiple_frames_give_frames_times_query_tokens(llm):
    model = tiny_model(llm)
    inputs = make_inputs(llm, frames=3)
    features = _visual_tokens(model, inputs)
    assert features.shape == (2, 3 * NUM_QUERY, 32)
    # each frame goes through the Q-Former alone, with the same instruction (in a batch of 3x the size: other kernels)
    for t in range(3):
        single = dict(inputs, pixel_values=inputs["pixel_values"][:, t])
        assert_close_fp32(features[:, t * NUM_QUERY : (t + 1) * NUM_QUERY], _visual_tokens(model, single))
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == (2, inputs["input_ids"].shape[1]) if llm == "llama" else logits.shape[0] == 2


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_placeholder_count_is_a_clear_error(delta):
    model = tiny_model()
    inputs = make_inputs()
    ids = inputs["input_ids"].clone()
    if delta < 0:
        ids[1, 0] = 5  # one placeholder too few in sample 1
    else:
        ids[1, -1] = IMAGE_TOKEN  # one too many
    inputs["input_ids"] = ids
    expected = NUM_QUERY + delta
    with pytest.raises(
        ValueError, match=rf"sample 1 holds {expected} image placeholder tokens .* give {NUM_QUERY} visual"
    ):
        model(**inputs)
    with pytest.raises(ValueError, match="sample 1"):
        model.generate(**{k: v for k, v in inputs.items()}, max_new_tokens=2)


def test_frames_need_frames_times_query_placeholders():
    model = tiny_model()
    inputs = make_inputs(frames=2)
    inputs["input_ids"] = make_inputs()["input_ids"]  # only one frame's worth of placeholders
    with pytest.raises(
        ValueError, match=rf"{NUM_QUERY} image placeholder tokens .* {2 * NUM_QUERY} visual tokens \(2 image"
    ):
        model(**inputs)


def test_labels_on_image_positions_are_refused():
    model = tiny_model()
    inputs = make_inputs()
    with pytest.raises(ValueError, match="labels must be -100 at image placeholder positions"):
        model(**inputs, labels=inputs["input_ids"])


def test_bad_shapes_are_clear_errors():
    model = tiny_model()
    inputs = make_inputs()
    with pytest.raises(ValueError, match="exactly one of `pixel_values` and `image_embeds`"):
        model(**inputs, image_embeds=torch.randn(2, 5, 32))
    with pytest.raises(ValueError, match=r"pixel_values must have shape"):
        model(**dict(inputs, pixel_values=torch.randn(3, 30, 30)))
    with pytest.raises(ValueError, match="input_ids has 2 samples but the images give features for 1"):
        model(
            **dict(
                inputs,
                pixel_values=inputs["pixel_values"][:1],
                qformer_input_ids=inputs["qformer_input_ids"][:1],
                qformer_attention_mask=inputs["qformer_attention_mask"][:1],
            )
        )
    with pytest.raises(ValueError, match="qformer_input_ids has 1 rows"):
        model(**dict(inputs, qformer_input_ids=inputs["qformer_input_ids"][:1], qformer_attention_mask=None))


def test_generate_without_prompt_uses_image_tokens(llm):
    model = tiny_model(llm)
    inputs = make_inputs(llm)
    out = model.generate(
        pixel_values=inputs["pixel_values"],
        qformer_input_ids=inputs["qformer_input_ids"],
        qformer_attention_mask=inputs["qformer_attention_mask"],
        max_new_tokens=3,
        min_new_tokens=3,
    )
    prompt = NUM_QUERY + 1 if llm == "llama" else 1  # image tokens + BOS; T5 returns decoder ids only
    assert out.shape == (2, prompt + 3)


def test_loss_only_on_labelled_positions():
    model = tiny_model()
    inputs = make_inputs()
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -2:] = inputs["input_ids"][:, -2:]
    out = model(**inputs, labels=labels)
    logits = out.logits[:, -3:-1]  # predictions for the two labelled positions
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, -2:].reshape(-1))
    assert_close_fp32(out.loss, expected)


def test_save_and_load_round_trip_is_exact_and_safetensors_only(tmp_path, llm):
    model = tiny_model(llm, vision_feature_layer=-2, qformer_text_input=True)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    loaded, info = InstructBlipForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.vision_feature_layer == -2 and loaded.config.model_type == "hf_instructblip"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    inputs = make_inputs(llm)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded.eval()(**inputs).logits)


def test_pickled_weights_are_refused(tmp_path):
    model = tiny_model()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError):
        InstructBlipForConditionalGeneration.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors weights only"):
        InstructBlipForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    assert InstructBlipForConditionalGeneration.from_pretrained(tmp_path) is not None


@pytest.mark.parametrize("text_input", [True, False])
def test_default_trainable_set_is_the_papers(text_input):
    model = tiny_model(qformer_text_input=text_input)
    trainable = set(model.apply_trainable_policy())
    last = model.config.qformer_config.num_hidden_layers - 1
    dead = (f"qformer.encoder.layer.{last}.intermediate.", f"qformer.encoder.layer.{last}.output.")
    if not text_input:  # BLIP-2 style: no text path at all
        text_ffns = [f"qformer.encoder.layer.{i}.{b}." for i in range(last + 1) for b in ("intermediate", "output")]
        dead = ("qformer.embeddings.word_embeddings.", "qformer.embeddings.position_embeddings.", *text_ffns)
    expected = {
        n
        for n, _ in model.named_parameters()
        if (n == "query_tokens" or n.startswith(("qformer.", "language_projection.", "vision_model.post_layernorm.")))
        and not n.startswith(dead)
    }
    assert trainable == expected
    assert "vision_model.post_layernorm.weight" in trainable
    assert not any(
        n.startswith(("vision_model.embeddings", "vision_model.encoder", "language_model.")) for n in trainable
    )
    for name, param in model.named_parameters():
        assert param.requires_grad == (name in expected)


@pytest.mark.parametrize("vision_type", sorted(VISION_TOWERS))
def test_any_vision_tower(vision_type):
    model = tiny_model(vision_type=vision_type)
    norm = model.get_submodule(model.vision_norm_name)
    assert isinstance(norm, torch.nn.LayerNorm)
    assert model.vision_norm_name in model.trainable_module_names()
    inputs = make_inputs()
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (2, inputs["input_ids"].shape[1], 100)
    assert torch.isfinite(logits).all()


def test_config_round_trip_and_derived_fields(tmp_path):
    config = tiny_config("t5", vision_type="vit", qformer_text_input=False, vision_feature_layer=-2)
    assert config.qformer_config.encoder_hidden_size == 32
    assert config.use_decoder_only_language_model is False
    config.save_pretrained(tmp_path)
    loaded = InstructBlipConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.vision_config.model_type == "vit" and loaded.text_config.model_type == "t5"
    assert loaded.image_token_id == IMAGE_TOKEN
    with pytest.raises(ValueError, match="num_query_tokens"):
        tiny_config(num_query_tokens=0)


def test_attention_mask_of_another_shape_is_refused():
    model = tiny_model()
    inputs = make_inputs()
    inputs["attention_mask"] = inputs["attention_mask"][:, :-1]
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(**inputs)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.generate(**inputs, max_new_tokens=2)


@pytest.mark.parametrize("text_input", [True, False])
def test_every_default_trainable_parameter_gets_a_gradient(text_input):
    """The policy trains nothing dead (DDP would fail on parameters that require grad but get none)."""
    model = tiny_model(qformer_text_input=text_input)
    trainable = set(model.apply_trainable_policy())
    inputs = make_inputs()
    labels = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN, -100)
    model(**inputs, labels=labels).loss.backward()
    got_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got_grad == trainable
