"""Vision towers: the shipped EfficientNet-Lite0 converted exactly into transformers' EfficientNet (checked against an
independent functional forward of the original weights and on a real photo), and feature-map towers (EfficientNet,
ConvNeXt, ResNet) as H*W visual tokens with the model's own LayerNorm: forward, generate, training, save/load,
``image_embeds``, the feature cache; token towers keep their layout."""

from __future__ import annotations

import json
import math

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, EfficientNetForImageClassification, EfficientNetModel

from conftest import (
    LLAMA,
    QFORMER,
    TEXT_CONFIGS,
    VISION_TOWERS,
    assert_close_fp32,
    assert_moved_exactly,
    make_processor,
    perturb_,
    tiny_config,
)
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration
from hf_instructblip.assets import efficientnet_lite0_file
from hf_instructblip.building import BuiltModel, build_model, resolve_part
from hf_instructblip.cli import main
from hf_instructblip.configuration_instructblip import vision_feature_width
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.modeling_vision import vision_tokens
from hf_instructblip.training import VisionFeatureCache
from hf_instructblip.vision_towers import (
    CACHE_ENV_VAR,
    convert_efficientnet_lite0,
    efficientnet_lite0_config,
    efficientnet_lite0_state_dict,
)

ESPRESSO = 967  # ImageNet-1k class index
IMAGE = 64  # tiny towers: 64 px gives 2 x 2 output maps


# ----- the shipped EfficientNet-Lite0 ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def source():
    """The shipped state dict (a pickle: tensors only, no code runs)."""
    return torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_folder(tmp_path_factory):
    return convert_efficientnet_lite0(tmp_path_factory.mktemp("towers") / "lite0")


@pytest.fixture(scope="module")
def coffee_pixels(lite0_folder):
    """scikit-image's coffee photo, through the folder's own processor: short side 256, centre 224, mean = std = 0.5."""
    return AutoImageProcessor.from_pretrained(lite0_folder)(skimage.data.coffee(), return_tensors="pt").pixel_values


# Strides of Lite0's 16 blocks (EfficientNet-B0's topology); kernel sizes and widths come from the weights.
_LITE0_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1)


def _tf_same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, groups: int = 1) -> torch.Tensor:
    """TensorFlow's "same" convolution, as lukemelas' EfficientNet-PyTorch (``Conv2dStaticSamePadding``) pads."""
    kernel = weight.shape[-1]
    pads = []
    for size in reversed(x.shape[-2:]):  # F.pad: width first
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


def _reference_lite0(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lite0 written from its paper's recipe with functional ops on the original tensors: (features, logits)."""

    def bn(x, name):  # eval-mode batch norm, TF's epsilon
        s = {k: state[f"{name}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
        return F.batch_norm(x, s["running_mean"], s["running_var"], s["weight"], s["bias"], False, 0.0, 1e-3)

    x = F.relu6(bn(_tf_same_conv(pixels, state["_conv_stem.weight"], stride=2), "_bn0"))
    for i, stride in enumerate(_LITE0_STRIDES):
        block, inputs = f"_blocks.{i}", x
        if f"{block}._expand_conv.weight" in state:
            x = F.relu6(bn(F.conv2d(x, state[f"{block}._expand_conv.weight"]), f"{block}._bn0"))
        depthwise = state[f"{block}._depthwise_conv.weight"]
        x = F.relu6(bn(_tf_same_conv(x, depthwise, stride, groups=depthwise.shape[0]), f"{block}._bn1"))
        x = bn(F.conv2d(x, state[f"{block}._project_conv.weight"]), f"{block}._bn2")  # linear bottleneck
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    features = F.relu6(bn(F.conv2d(x, state["_conv_head.weight"]), "_bn1"))
    return features, F.linear(features.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


def test_converted_lite0_calls_the_coffee_photo_an_espresso(lite0_folder, coffee_pixels):
    classifier = EfficientNetForImageClassification.from_pretrained(lite0_folder).eval()
    with torch.no_grad():
        probabilities = classifier(coffee_pixels).logits.softmax(-1)[0]
    assert int(probabilities.argmax()) == ESPRESSO
    assert probabilities[ESPRESSO] > 0.9  # 0.957


def test_conversion_computes_the_original_network(lite0_folder, source, coffee_pixels):
    model = EfficientNetForImageClassification.from_pretrained(lite0_folder).eval()
    pixels = torch.cat([coffee_pixels, torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        outputs = model(pixels, output_hidden_states=True)
        features, logits = _reference_lite0(source, pixels)
        backbone = model.efficientnet(pixels).last_hidden_state
    assert_close_fp32(outputs.logits, logits)
    assert_close_fp32(backbone, features)
    assert backbone.shape == (3, 1280, 7, 7)  # 49 visual tokens of width 1280
    # vision_feature_layer=-7: the last 14 x 14 block (112 channels), 196 tokens
    assert vision_feature_width(model.config, -7) == 112
    with torch.no_grad():
        assert vision_tokens(model.efficientnet, pixels[:1], -7, feature_map=True).shape == (1, 196, 112)


def test_conversion_uses_every_source_tensor_and_nothing_else(source):
    model = EfficientNetForImageClassification(efficientnet_lite0_config())
    state = efficientnet_lite0_state_dict(source, model)
    assert state.keys() == model.state_dict().keys()
    squeeze_excite = {k for k in state if ".squeeze_excite." in k}
    assert len(state) == len(source) + len(squeeze_excite)  # every source tensor placed once
    gates = {k: v for k, v in state.items() if k.endswith("squeeze_excite.expand.bias")}
    assert all(bool((v == 100).all()) for v in gates.values())
    assert all(not state[k].any() for k in squeeze_excite - set(gates))
    assert torch.sigmoid(torch.tensor(100.0)) == 1.0  # the gate passes x unchanged in float32
    with pytest.raises(ValueError, match=r"'_blocks\.3\._se_reduce\.weight' has no place"):
        efficientnet_lite0_state_dict({**source, "_blocks.3._se_reduce.weight": torch.zeros(1)}, model)
    with pytest.raises(ValueError, match=r"missing \['classifier\.bias'\]"):
        efficientnet_lite0_state_dict({k: v for k, v in source.items() if k != "_fc.bias"}, model)


def test_converted_folder_is_safetensors_with_the_tower_normalisation(lite0_folder, tmp_path):
    assert sorted(p.name for p in lite0_folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    settings = json.loads((lite0_folder / "preprocessor_config.json").read_text())
    assert settings["image_mean"] == settings["image_std"] == [0.5, 0.5, 0.5]
    assert settings["crop_size"] == {"height": 224, "width": 224}
    assert type(AutoModel.from_pretrained(lite0_folder)) is EfficientNetModel
    assert main(["convert-tower", "efficientnet-lite0", str(tmp_path / "backbone"), "--backbone-only"]) == 0
    backbone = EfficientNetModel.from_pretrained(tmp_path / "backbone")
    assert backbone.config.architectures == ["EfficientNetModel"]
    converted = EfficientNetModel.from_pretrained(lite0_folder).state_dict()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, converted[name]), name


def test_shipped_efficientnet_converts_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    folder = resolve_part("shipped:efficientnet")
    weights = tmp_path / "cache" / "efficientnet-lite0-v1" / "model.safetensors"
    assert folder == str(weights.parent)
    written = weights.stat().st_mtime_ns
    assert resolve_part("shipped:efficientnet") == folder
    assert weights.stat().st_mtime_ns == written  # not converted again
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["efficientnet-lite0-v1"]  # no staging left
    assert json.loads((weights.parent / "config.json").read_text())["architectures"] == ["EfficientNetModel"]


def _build_on_shipped_efficientnet(tokenizer_dirs) -> BuiltModel:
    return build_model(
        "shipped:efficientnet",
        {k: v for k, v in QFORMER.items() if k != "vocab_size"},  # the vocabularies follow the tokenizers
        {k: v for k, v in LLAMA.items() if k not in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")},
        llm_tokenizer=tokenizer_dirs[0],
        qformer_tokenizer=tokenizer_dirs[1],
        num_query_tokens=4,
    )


def test_build_from_shipped_efficientnet_uses_its_normalisation_and_49_tokens(
    tokenizer_dirs, tmp_path, monkeypatch, lite0_folder
):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    built = _build_on_shipped_efficientnet(tokenizer_dirs)
    image_processor = built.processor.image_processor
    assert list(image_processor.image_mean) == list(image_processor.image_std) == [0.5, 0.5, 0.5]
    assert image_processor.size["height"] == image_processor.size["width"] == 224
    model = built.model
    assert model.config.qformer_config.encoder_hidden_size == 1280
    assert model.vision_norm_name == "vision_layernorm"
    pixels = image_processor(Image.fromarray(skimage.data.coffee()), return_tensors="pt").pixel_values
    with torch.no_grad():
        tokens = model.get_vision_features(pixels)
        expected = EfficientNetModel.from_pretrained(lite0_folder)(pixels).last_hidden_state
    assert torch.equal(tokens, expected.flatten(2).transpose(1, 2))  # (1, 1280, 7, 7) -> (1, 49, 1280)


def test_the_same_seed_builds_the_same_model_whether_the_tower_is_converted_or_read_from_the_cache(
    tokenizer_dirs, tmp_path, monkeypatch
):
    """A fresh machine's first build converts Lite0 into the cache and later builds read it: `make demo` must give
    the first time what it gives every time after (the conversion must not draw from the seeded random stream)."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    converted = _build_on_shipped_efficientnet(tokenizer_dirs).model.state_dict()
    assert (tmp_path / "cache" / "efficientnet-lite0-v1" / "model.safetensors").is_file()
    cached = _build_on_shipped_efficientnet(tokenizer_dirs).model.state_dict()
    assert converted.keys() == cached.keys()
    differing = [name for name, tensor in converted.items() if not torch.equal(tensor, cached[name])]
    assert not differing, differing[:5]


# ----- feature-map towers as visual tokens -----------------------------------------------------------------------------
CONV_TOWERS = {
    "efficientnet": {
        "width_coefficient": 0.125,
        "depth_coefficient": 0.5,
        "hidden_dim": 160,  # the top convolution's width: round_filters(1280 * 0.125)
        "hidden_act": "relu6",
        "image_size": IMAGE,
    },
    "convnext": {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "image_size": IMAGE},
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "image_size": IMAGE},
}
OUTPUT_WIDTH = {"efficientnet": 160, "convnext": 32, "resnet": 32}


@pytest.fixture(params=sorted(CONV_TOWERS))
def tower(request) -> str:
    return request.param


def conv_config(tower: str, llm: str = "llama", **overrides) -> InstructBlipConfig:
    return InstructBlipConfig(
        vision_config={"model_type": tower, **CONV_TOWERS[tower]},
        qformer_config=dict(QFORMER),
        text_config=dict(TEXT_CONFIGS[llm]),
        **{"num_query_tokens": 4, "image_token_index": 99, **overrides},
    )


def conv_model(tower: str, llm: str = "llama", seed: int = 0, **overrides) -> InstructBlipForConditionalGeneration:
    torch.manual_seed(seed)
    return perturb_(InstructBlipForConditionalGeneration(conv_config(tower, llm, **overrides)), seed).eval()


def conv_inputs(llm: str = "llama", batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 99, (batch, 5), generator=generator)
    input_ids = torch.cat([torch.full((batch, 4), 99), text], dim=1)
    inputs = {
        "pixel_values": torch.randn(batch, 3, IMAGE, IMAGE, generator=generator),
        "qformer_input_ids": torch.randint(1, QFORMER["vocab_size"], (batch, 6), generator=generator),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
    }
    if llm == "t5":
        inputs["decoder_input_ids"] = torch.randint(3, 99, (batch, 4), generator=generator)
    return inputs


def test_every_feature_map_has_the_width_the_config_gives_the_qformer(tower):
    model = conv_model(tower)
    pixels = torch.randn(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        outputs = model.vision_model(pixels, output_hidden_states=True)
    maps = list(outputs.hidden_states)
    if tower == "efficientnet":  # its top convolution is one more map
        maps.append(outputs.last_hidden_state)
    assert model.config.qformer_config.encoder_hidden_size == OUTPUT_WIDTH[tower]
    for layer in range(-len(maps), len(maps)):
        assert vision_feature_width(model.config.vision_config, layer) == maps[layer].shape[1], layer
    for layer in (-1, -2, 0):
        with torch.no_grad():
            tokens = vision_tokens(model.vision_model, pixels, layer, feature_map=True)
        assert torch.equal(tokens, maps[layer].flatten(2).transpose(1, 2)), layer
    with pytest.raises(ValueError, match=f"vision_feature_layer={-len(maps) - 1} does not name a feature map"):
        conv_config(tower, vision_feature_layer=-len(maps) - 1)
    # an earlier map feeds the Q-Former through a LayerNorm of its width
    earlier = InstructBlipForConditionalGeneration(conv_config(tower, vision_feature_layer=-2)).eval()
    assert earlier.config.qformer_config.encoder_hidden_size == earlier.vision_layernorm.weight.shape[0]
    with torch.no_grad():
        assert torch.isfinite(earlier(**conv_inputs()).logits).all()


def test_last_feature_map_becomes_row_major_tokens(tower):
    model = conv_model(tower)
    pixels = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        maps = model.vision_model(pixels).last_hidden_state  # (2, C, 2, 2)
        tokens = model.get_vision_features(pixels)
    assert maps.shape == (2, OUTPUT_WIDTH[tower], 2, 2)
    assert torch.equal(tokens, maps.permute(0, 2, 3, 1).reshape(2, 4, -1))  # token h * W + w = position (h, w)


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_conv_tower_forward_generate_and_image_embeds(tower, llm):
    model = conv_model(tower, llm)
    inputs = conv_inputs(llm)
    with torch.no_grad():
        out = model(**inputs)
        embeds = model.get_vision_features(inputs["pixel_values"])  # (B, H*W, C)
        from_embeds = model(**{k: v for k, v in inputs.items() if k != "pixel_values"}, image_embeds=embeds)
        generated = model.generate(**{k: v for k, v in inputs.items() if k != "decoder_input_ids"}, max_new_tokens=3)
    assert embeds.shape == (2, 4, OUTPUT_WIDTH[tower])
    assert torch.equal(from_embeds.logits, out.logits)  # the same computation
    assert torch.isfinite(out.logits).all()
    assert generated.shape[0] == 2


def test_conv_tower_trains_its_layernorm_and_keeps_the_tower_frozen(tower):
    model = conv_model(tower)
    trainable = set(model.apply_trainable_policy())
    assert {"vision_layernorm.weight", "vision_layernorm.bias"} <= trainable
    assert not any(name.startswith("vision_model.") for name in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.vision_model.named_buffers()}
    inputs = conv_inputs()
    labels = inputs["input_ids"].clone()
    labels[:, :4] = -100
    with torch.no_grad():
        eval_features = model.get_vision_features(inputs["pixel_values"])
    model.train()
    assert model.training and model.qformer.training and not model.vision_model.training
    # the frozen tower's BatchNorm uses its running statistics in training too (LAVIS `disabled_train`)
    assert torch.equal(model.get_vision_features(inputs["pixel_values"]), eval_features)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**inputs, labels=labels).loss.backward()
    optimizer.step()
    assert_moved_exactly(model.named_parameters(), before, trainable)
    for name, buffer in model.vision_model.named_buffers():
        assert torch.equal(buffer, buffers[name]), f"tower buffer {name} changed"


def test_conv_tower_save_load_round_trip(tower, tmp_path):
    model = conv_model(tower)
    model.save_pretrained(tmp_path / "model")
    loaded = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "model").eval()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    inputs = conv_inputs()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_feature_cache_with_a_conv_tower_gives_the_pixel_path_loss(tower, tokenizer_dirs, tmp_path):
    processor = make_processor(tokenizer_dirs, image_size=IMAGE)
    vocab, pad = len(processor.tokenizer), processor.tokenizer.pad_token_id
    config = conv_config(
        tower, image_token_index=processor.image_token_id, num_query_tokens=processor.num_query_tokens
    )
    config.text_config.vocab_size, config.text_config.pad_token_id = vocab, pad
    config.qformer_config.vocab_size = len(processor.qformer_tokenizer)
    torch.manual_seed(0)
    model = perturb_(InstructBlipForConditionalGeneration(config)).eval()
    dataset = concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN[:2], 2, seed=0, image_size=32))
    samples = [dataset[i] for i in range(len(dataset))]
    cache = VisionFeatureCache.build(model, processor, samples, tmp_path / "cache", batch_size=len(samples))
    pixel_batch = InstructBlipDataCollator.for_model(model, processor, augment_images=False)(samples)
    cached_batch = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)(samples)
    assert cached_batch["image_embeds"].shape[-2:] == (4, OUTPUT_WIDTH[tower])  # 2 x 2 map -> 4 tokens
    with torch.no_grad():
        assert torch.equal(model(**cached_batch).loss, model(**pixel_batch).loss)


# ----- token towers keep their layout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("vision_type", sorted(VISION_TOWERS))
def test_token_towers_keep_their_own_output_layernorm(vision_type):
    model = InstructBlipForConditionalGeneration(tiny_config(vision_type=vision_type))
    assert model.vision_norm_name.startswith("vision_model.")
    assert not hasattr(model, "vision_layernorm")
    assert not any(name.startswith("vision_layernorm") for name in model.state_dict())
    assert model.config.qformer_config.encoder_hidden_size == VISION_TOWERS[vision_type]["hidden_size"]
    if vision_type == "instructblip_vision_model":  # the released checkpoints' ln_vision
        assert model.vision_norm_name == "vision_model.post_layernorm"
