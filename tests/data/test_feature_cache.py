"""The frozen vision-feature cache: same loss, gradients and trained weights as the pixel path; incremental builds;
content keys; refusal of a cache made for another tower or other image processing; frames; damaged caches."""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pytest
import torch

from conftest import assert_close_fp32, make_processor, model_for
from hf_instructblip import InstructBlipImageProcessor
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.feature_cache import MANIFEST_NAME
from hf_instructblip.data.mixture import concatenate_mixture
from hf_instructblip.data.schema import BadSampleError
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
from hf_instructblip.training import (
    InstructBlipTrainer,
    InstructBlipTrainingArguments,
    MissingFeaturesError,
    VisionFeatureCache,
)


@pytest.fixture(scope="module")
def processor(tokenizer_dirs):
    return make_processor(tokenizer_dirs)


@pytest.fixture(scope="module")
def parts():
    return synthetic_mixture(SYNTHETIC_HELD_IN[:3], 4, seed=0, image_size=32)


@pytest.fixture(scope="module")
def rows(parts):
    dataset = concatenate_mixture(parts)
    return [dataset[i] for i in range(len(dataset))]  # images decoded to PIL, as a Trainer's dataset yields them


class _TowerCalls:
    """Counts the images the vision tower encodes (a forward hook on the real tower)."""

    def __init__(self, model):
        self.images = 0
        model.vision_model.register_forward_hook(self._count)

    def _count(self, module, args, output):
        self.images += output.last_hidden_state.shape[0]


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.loss.detach(), grads


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_cached_batch_gives_exactly_the_pixel_path_loss_and_gradients(processor, rows, tmp_path, llm):
    model = model_for(processor, llm, seed=1)
    trainable = model.apply_trainable_policy()
    samples = rows[:4]
    # Exact equality is asserted, not closeness: the cache is built over exactly these samples in one batch of 4,
    # the composition the pixel path encodes them in, so the tower runs the very same kernels on the very same
    # tensors. (Other batch compositions may differ in the last bits of a float32 matmul; see the Trainer test.)
    cache = VisionFeatureCache.build(model, processor, samples, tmp_path / "cache", batch_size=len(samples))
    # the pixel path with the transform the cache holds: the plain resize (no random crops)
    pixel_batch = InstructBlipDataCollator.for_model(model, processor, augment_images=False)(samples)
    cached_batch = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)(samples)

    assert set(cached_batch) == set(pixel_batch) - {"pixel_values"} | {"image_embeds"}
    for key, value in pixel_batch.items():  # everything but the image input is identical
        if key != "pixel_values":
            assert torch.equal(cached_batch[key], value), key
    with torch.no_grad():
        expected_embeds = model.get_vision_features(pixel_batch["pixel_values"])
    assert torch.equal(cached_batch["image_embeds"], expected_embeds)  # (B, N, D)

    pixel_loss, pixel_grads = _loss_and_grads(model, pixel_batch)
    cached_loss, cached_grads = _loss_and_grads(model, cached_batch)
    assert torch.equal(cached_loss, pixel_loss)
    assert set(pixel_grads) == set(trainable)
    for name in trainable:
        assert pixel_grads[name] is not None and torch.equal(cached_grads[name], pixel_grads[name]), name


def test_multi_image_samples_give_frames_in_order(processor, rows, tmp_path):
    model = model_for(processor, "llama", seed=2)
    samples = [{**rows[i], "images": [rows[i]["images"][0], rows[i + 1]["images"][0]]} for i in range(3)]
    swapped = {**samples[0], "images": samples[0]["images"][::-1]}
    cache = VisionFeatureCache.build(model, processor, samples, tmp_path / "cache", batch_size=4)

    batch = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)(samples)
    pixel_batch = InstructBlipDataCollator.for_model(model, processor, augment_images=False)(samples)
    assert batch["image_embeds"].shape == (3, 2, *cache.feature_shape)  # (B, T, N, D)
    first, second = cache.features(samples[0]["images"]), cache.features(swapped["images"])
    assert torch.equal(first, second.flip(0))  # the frames keep their order
    with torch.no_grad():
        # batches of 4 (cache) and 6 (pixel path) images: other kernel shapes, equal up to float32 rounding
        assert_close_fp32(model(**batch).loss, model(**pixel_batch).loss)
    assert torch.equal(batch["input_ids"], pixel_batch["input_ids"])  # 2 x num_query_tokens placeholders each


def test_build_is_incremental_and_dedups_images(processor, parts, tmp_path):
    model = model_for(processor, "llama")
    calls = _TowerCalls(model)
    first = dict(list(parts.items())[:2])
    cache = VisionFeatureCache.build(model, processor, first, tmp_path, batch_size=3)
    unique = {
        VisionFeatureCache.image_key(image) for part in first.values() for row in part for image in row["images"]
    }
    assert len(cache) == len(unique) == calls.images

    manifest = (tmp_path / MANIFEST_NAME).read_text()
    files = sorted(p.name for p in tmp_path.iterdir())
    again = VisionFeatureCache.build(model, processor, first, tmp_path, batch_size=3)
    assert calls.images == len(unique)  # nothing computed the second time
    assert len(again) == len(cache) and (tmp_path / MANIFEST_NAME).read_text() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == files

    doubled = list(parts[SYNTHETIC_HELD_IN[2]]) * 2  # repeated images are computed once
    grown = VisionFeatureCache.build(model, processor, {**first, "doubled": doubled}, tmp_path, batch_size=3)
    new = {VisionFeatureCache.image_key(row["images"][0]) for row in doubled} - unique
    assert calls.images == len(unique) + len(new) and len(grown) == len(unique) + len(new)
    reloaded = VisionFeatureCache.load(tmp_path, model, processor)
    assert len(reloaded) == len(grown)
    image = doubled[0]["images"]
    assert torch.equal(reloaded.features(image), grown.features(image))


def test_path_bytes_pil_array_and_dict_of_one_picture_share_a_key(rows, tmp_path):
    picture = rows[0]["images"][0]  # PIL, decoded from PNG by datasets
    png = io.BytesIO()
    picture.save(png, format="PNG")
    path = tmp_path / "picture.png"
    path.write_bytes(png.getvalue())
    forms = [picture, str(path), path, png.getvalue(), {"bytes": png.getvalue(), "path": None}, np.asarray(picture)]
    keys = {VisionFeatureCache.image_key(form) for form in forms}
    assert len(keys) == 1
    assert VisionFeatureCache.image_key(rows[1]["images"][0]) not in keys
    assert VisionFeatureCache.image_key(picture.convert("RGBA")) not in keys  # another mode is another input


def _other_size(tokenizer_dirs):
    return make_processor(tokenizer_dirs, image_size=28)


def _other_normalisation(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    processor.image_processor = InstructBlipImageProcessor(size={"height": 30, "width": 30}, image_mean=[0.5] * 3)
    return processor


REFUSALS = [  # (what changes, model seed, vision_feature_layer, processor factory, field named in the error)
    ("vision weights", 7, -1, make_processor, "vision_weights_sha256"),
    ("feature layer", 0, -2, make_processor, "vision_feature_layer"),
    ("image size", 0, -1, _other_size, "image_processor.size"),
    ("normalisation", 0, -1, _other_normalisation, "image_processor.image_mean"),
]


@pytest.mark.parametrize(("change", "seed", "layer", "make", "field"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_cache_for_another_tower_or_image_processing_is_refused(
    processor, tokenizer_dirs, rows, tmp_path, change, seed, layer, make, field
):
    model = model_for(processor, "llama", seed=0)
    cache = VisionFeatureCache.build(model, processor, rows[:2], tmp_path)
    other_model = model_for(processor, "llama", seed=seed)
    other_model.config.vision_feature_layer = layer
    other_processor = make(tokenizer_dirs)

    with pytest.raises(ValueError, match=rf"does not match .*{field} \(cache: "):
        VisionFeatureCache.load(tmp_path, other_model, other_processor)
    with pytest.raises(ValueError, match=field):
        cache.check_compatible(other_model, other_processor)
    with pytest.raises(ValueError, match=field):  # attaching it to a collator is refused too
        InstructBlipDataCollator.for_model(other_model, other_processor, feature_cache=cache)
    with pytest.raises(ValueError, match=field):  # and so is extending it
        VisionFeatureCache.build(other_model, other_processor, rows[2:4], tmp_path)
    cache.check_compatible(model, processor)  # the original pair still matches


def test_cache_still_matches_after_save_load_and_training_of_the_vision_layernorm(processor, rows, tmp_path):
    from transformers import AutoProcessor

    from hf_instructblip import InstructBlipForConditionalGeneration

    model = model_for(processor, "llama")
    VisionFeatureCache.build(model, processor, rows[:1], tmp_path / "cache")
    with torch.no_grad():  # the output LayerNorm trains; the features are taken before it
        model.get_submodule(model.vision_norm_name).weight.add_(1.0)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    loaded_model = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "model")
    loaded_processor = AutoProcessor.from_pretrained(tmp_path / "model")
    cache = VisionFeatureCache.load(tmp_path / "cache", loaded_model, loaded_processor)
    assert len(cache) == 1


def test_an_image_missing_from_the_cache_names_the_batch_position(processor, rows, tmp_path):
    model = model_for(processor, "llama")
    cache = VisionFeatureCache.build(model, processor, rows[:1], tmp_path)
    collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)
    with pytest.raises(MissingFeaturesError, match=r"batch sample 1: image 0 .* VisionFeatureCache.build") as error:
        collator(rows[:2])
    assert isinstance(error.value, KeyError)


def test_killed_build_leaves_a_loadable_cache_and_damage_is_reported(processor, rows, tmp_path):
    model = model_for(processor, "llama")
    VisionFeatureCache.build(model, processor, rows[:2], tmp_path, batch_size=1, shard_bytes=1)  # 2 shards
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest["shards"] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    # A build killed after writing a shard but before listing it: the leftover is ignored, then replaced.
    (tmp_path / "shard-00002.safetensors").write_bytes(b"half a shard")
    (tmp_path / "shard-00002.safetensors.tmp").write_bytes(b"half a shard")
    assert len(VisionFeatureCache.load(tmp_path, model, processor)) == 2
    cache = VisionFeatureCache.build(model, processor, rows[:3], tmp_path)
    assert len(VisionFeatureCache.load(tmp_path)) == len(cache) == 3

    (tmp_path / "shard-00001.safetensors").unlink()
    with pytest.raises(ValueError, match=r"shard-00001.safetensors is listed in feature_cache.json but missing"):
        VisionFeatureCache.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="No vision feature cache"):
        VisionFeatureCache.load(tmp_path / "elsewhere")


def test_undecodable_images_raise_or_are_skipped(processor, rows, tmp_path):
    model = model_for(processor, "llama")
    broken = [rows[0], {**rows[1], "images": [b"not an image"], "dataset": "mine"}, rows[2]]
    with pytest.raises(BadSampleError, match=r"dataset 'mine', row 1: image 0: .*cannot decode"):
        VisionFeatureCache.build(model, processor, broken, tmp_path / "a")
    cache = VisionFeatureCache.build(model, processor, broken, tmp_path / "b", on_bad_sample="skip")
    assert len(cache) == 2


def test_cache_pickles_for_dataloader_workers(processor, rows, tmp_path):
    model = model_for(processor, "llama")
    cache = VisionFeatureCache.build(model, processor, rows[:2], tmp_path)
    expected = cache.features(rows[0]["images"])  # opens a shard
    copy = pickle.loads(pickle.dumps(cache))
    assert torch.equal(copy.features(rows[0]["images"]), expected)


def _train(processor, dataset, tmp_path, feature_cache=None):
    model = model_for(processor, "llama", seed=3)
    args = InstructBlipTrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-3,
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=feature_cache, augment_images=False)
    InstructBlipTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    return model


def test_trainer_run_with_the_cache_trains_the_same_weights(processor, parts, tmp_path):
    dataset = concatenate_mixture(parts)
    reference = _train(processor, dataset, tmp_path / "pixels")
    # The cache is built in batches of 32 images, the training batches have 4: on some CPUs float32 features differ
    # in the last bits, so the weights are compared with a tolerance rather than bit for bit.
    cache = VisionFeatureCache.build(model_for(processor, "llama", seed=3), processor, parts, tmp_path / "cache")
    cached = _train(processor, dataset, tmp_path / "cached", feature_cache=cache)
    before, trained = model_for(processor, "llama", seed=3).state_dict(), reference.state_dict()
    largest_update = max((trained[name] - before[name]).abs().max().item() for name in trained)
    assert largest_update > 1e-4  # the runs did train
    # Adam turns float noise in near-zero gradients into lr-sized steps (as in test_distributed.py), so weights must
    # agree to 1% of the largest change training made to any weight.
    for name, value in trained.items():
        torch.testing.assert_close(cached.state_dict()[name], value, rtol=0, atol=1e-2 * largest_update, msg=name)
