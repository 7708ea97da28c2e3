"""The fast path's precision (`InstructBlipForConditionalGeneration.hold_frozen_in`, `modeling_precision`): frozen
vision tower and LLM stored in half precision, trained parts in fp32, casts at the boundaries, the loss in fp32,
gradients through the half-precision LLM; "auto" from the hardware; saving and loading; the feature cache in bf16."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import QFORMER, TEXT_CONFIGS, make_inputs, make_processor, model_for, perturb_, tiny_model
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration, modeling_precision
from hf_instructblip.data.synthetic import synthetic_dataset
from hf_instructblip.modeling_precision import cpu_has_native_bf16, resolve_frozen_dtype
from hf_instructblip.training import VisionFeatureCache

#: bf16 keeps 8 bits of mantissa (2**-8 ~ 0.4% per rounding): a loss over a few layers moves by about 1%.
BF16_LOSS_RTOL = 3e-2
EFFICIENTNET = {
    "model_type": "efficientnet",
    "width_coefficient": 0.125,
    "depth_coefficient": 0.5,
    "hidden_dim": 160,
    "hidden_act": "relu6",
    "image_size": 64,
}


def _map_tower_model(llm: str = "llama") -> InstructBlipForConditionalGeneration:
    """A tiny EfficientNet tower: feature maps, BatchNorm buffers, the model's own vision_layernorm."""
    config = InstructBlipConfig(
        vision_config=dict(EFFICIENTNET),
        qformer_config=dict(QFORMER),
        text_config=dict(TEXT_CONFIGS[llm]),
        num_query_tokens=4,
        image_token_index=99,
    )
    torch.manual_seed(0)
    return perturb_(InstructBlipForConditionalGeneration(config), 0).eval()


def _model(tower: str, llm: str) -> InstructBlipForConditionalGeneration:
    return tiny_model(llm) if tower == "token" else _map_tower_model(llm)


def _inputs(tower: str, llm: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs(llm)
    if tower == "map":
        inputs["pixel_values"] = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = inputs["decoder_input_ids"].clone() if llm == "t5" else inputs["input_ids"].clone()
    if llm == "llama":
        labels[:, :6] = -100  # image tokens and the prompt's first token
    inputs["labels"] = labels
    return inputs


def _is_trained_part(model: InstructBlipForConditionalGeneration, name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in model.trainable_module_names())


@pytest.mark.parametrize("tower", ["token", "map"])
@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_frozen_parts_are_stored_in_bf16_trained_parts_in_fp32(tower, llm):
    model = _model(tower, llm)
    assert model.hold_frozen_in("bfloat16") == torch.bfloat16
    expected_norm = "vision_model.post_layernorm" if tower == "token" else "vision_layernorm"
    assert model.vision_norm_name == expected_norm
    for name, param in model.named_parameters():
        dtype = torch.float32 if _is_trained_part(model, name) else torch.bfloat16
        assert param.dtype == dtype, name
    assert {p.dtype for p in model.get_submodule(expected_norm).parameters()} == {torch.float32}
    assert {b.dtype for b in model.vision_model.buffers() if b.is_floating_point()} <= {torch.bfloat16}  # BN stats
    if llm == "llama":  # rotary frequencies are a non-persistent buffer: they keep their fp32 values
        assert {b.dtype for n, b in model.language_model.named_buffers() if "inv_freq" in n} == {torch.float32}


@pytest.mark.parametrize("tower", ["token", "map"])
@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_training_step_in_bf16_gives_an_fp32_loss_and_gradients_to_the_qformer(tower, llm):
    reference, model = _model(tower, llm), _model(tower, llm)
    model.hold_frozen_in(torch.bfloat16)
    inputs = _inputs(tower, llm)
    for m in (reference, model):
        m.apply_trainable_policy()
        m.train()
    expected = reference(**inputs).loss
    loss = model(**inputs).loss
    assert loss.dtype == torch.float32  # T5's own loss is computed in its logits' dtype: ours is fp32
    torch.testing.assert_close(loss, expected, rtol=BF16_LOSS_RTOL, atol=0)
    loss.backward()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert {p.dtype for _, p in trained} == {torch.float32}
    # through the bf16 LLM and the merge's cast: the Q-Former's first layer, the queries, the vision LayerNorm
    for name in ("query_tokens", "qformer.encoder.layer.0.attention.attention.query.weight", model.vision_norm_name):
        grads = [p.grad for n, p in trained if n == name or n.startswith(name + ".")]
        assert grads and all(g is not None and g.dtype == torch.float32 and g.abs().sum() > 0 for g in grads), name
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_the_t5_loss_in_bf16_is_the_cross_entropy_of_its_upcast_logits():
    model = tiny_model("t5")
    model.hold_frozen_in("bfloat16")
    inputs = _inputs("token", "t5")
    out = model(**inputs, return_logits=True)
    expected = torch.nn.functional.cross_entropy(out.logits.float().flatten(0, 1), inputs["labels"].flatten())
    assert out.logits.dtype == torch.bfloat16
    assert torch.equal(out.loss, expected)


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_generation_runs_in_bf16_and_starts_like_fp32(llm):
    reference, model = tiny_model(llm), tiny_model(llm)
    model.hold_frozen_in("bfloat16")
    inputs = {k: v for k, v in make_inputs(llm).items() if k != "decoder_input_ids"}
    settings = {"max_new_tokens": 4, "num_beams": 1, "do_sample": False}
    generated = model.generate(**inputs, **settings)
    assert generated.shape == reference.generate(**inputs, **settings).shape
    # the first new token's scores agree to bf16 resolution
    got = model.generate(**inputs, **settings, output_scores=True, return_dict_in_generate=True).scores[0]
    want = reference.generate(**inputs, **settings, output_scores=True, return_dict_in_generate=True).scores[0]
    torch.testing.assert_close(got.float(), want, rtol=0, atol=5e-2 * want.abs().max().item())


def test_float32_turns_the_model_back_and_holding_is_idempotent():
    model = tiny_model("llama")
    inputs = _inputs("token", "llama")
    model.hold_frozen_in("bfloat16")
    held = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.hold_frozen_in("bfloat16")
    assert all(torch.equal(p, held[n]) and p.dtype == held[n].dtype for n, p in model.named_parameters())
    assert model.hold_frozen_in("float32") == torch.float32
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not model.get_submodule(model.vision_norm_name)._forward_pre_hooks  # the casts around it are gone
    assert model(**inputs).loss.dtype == torch.float32


def test_a_tower_held_in_bf16_runs_its_fp32_layernorm_between_casts():
    """Its own forward applies the (trained, fp32) post_layernorm to bf16 hidden states: no mixed-dtype kernel."""
    model = tiny_model("llama")
    model.hold_frozen_in("bfloat16")
    pixels = make_inputs("llama")["pixel_values"]
    out = model.vision_model(pixel_values=pixels.bfloat16())
    assert out.last_hidden_state.dtype == out.pooler_output.dtype == torch.bfloat16
    norm = model.get_submodule(model.vision_norm_name)
    assert norm(torch.ones(1, 2, 32)).dtype == torch.float32  # what the model feeds it: fp32 features


def test_unknown_and_unsafe_dtypes_are_refused():
    with pytest.raises(ValueError, match="frozen_dtype must be one of"):
        resolve_frozen_dtype("half")
    with pytest.raises(ValueError, match="float16 with a t5 LLM overflows"):
        tiny_model("t5").hold_frozen_in("float16")
    assert tiny_model("llama").hold_frozen_in(torch.float16) == torch.float16


@pytest.mark.parametrize(
    ("device", "cpu_bf16", "cuda_bf16", "llm", "expected"),
    [
        ("cpu", True, False, "llama", torch.bfloat16),
        ("cpu", False, False, "llama", torch.float32),
        ("cpu", False, False, "t5", torch.float32),
        ("cuda", False, True, "t5", torch.bfloat16),
        ("cuda", False, False, "llama", torch.float16),
        ("cuda", False, False, "t5", torch.float32),  # T5 overflows in fp16
        ("mps", True, True, "llama", torch.float32),
    ],
)
def test_auto_follows_the_hardware(monkeypatch, device, cpu_bf16, cuda_bf16, llm, expected):
    """The decision given what the hardware reports (the report itself is checked against the CPU's flags below)."""
    monkeypatch.setattr(modeling_precision, "cpu_has_native_bf16", lambda: cpu_bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: cuda_bf16)
    assert resolve_frozen_dtype("auto", device, llm) == expected


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64", reason="reads /proc/cpuinfo's x86 flags"
)
def test_native_bf16_is_read_from_the_cpu_itself():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_a_held_model_saves_as_held_and_loads_back_exactly(tmp_path):
    model = tiny_model("llama")
    model.hold_frozen_in("bfloat16")
    inputs = _inputs("token", "llama")
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        stored = {name: f.get_slice(name).get_dtype() for name in f.keys()}  # noqa: SIM118
    assert {d for n, d in stored.items() if _is_trained_part(model, n)} == {"F32"}
    assert {d for n, d in stored.items() if not _is_trained_part(model, n)} == {"BF16"}

    loaded = InstructBlipForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}  # bf16 values, widened exactly
    loaded.hold_frozen_in("bfloat16")
    for name, param in model.state_dict().items():
        assert loaded.state_dict()[name].dtype == param.dtype and torch.equal(loaded.state_dict()[name], param), name
    assert torch.equal(loaded(**inputs).loss, model(**inputs).loss)


def test_the_feature_cache_stores_bf16_features_and_refuses_an_fp32_tower(tokenizer_dirs, tmp_path):
    processor = make_processor(tokenizer_dirs)
    data = synthetic_dataset("synthetic_vqa", 4, seed=0, image_size=32)
    fp32_model, model = model_for(processor), model_for(processor)
    model.hold_frozen_in("bfloat16")
    fp32_cache = VisionFeatureCache.build(fp32_model, processor, data, tmp_path / "fp32")
    cache = VisionFeatureCache.build(model, processor, data, tmp_path / "bf16")
    features = cache.features(data[0]["images"])
    assert features.dtype == torch.bfloat16
    assert features.shape == fp32_cache.features(data[0]["images"]).shape
    size = {name: sum(f.stat().st_size for f in (tmp_path / name).glob("shard-*")) for name in ("fp32", "bf16")}
    assert size["bf16"] < 0.55 * size["fp32"]  # half the bytes (plus the same small header)
    with pytest.raises(ValueError, match=r"dtype \(cache: 'float32', now: 'bfloat16'\)"):
        fp32_cache.check_compatible(model, processor)
    pixels = processor.pixel_values([row["images"] for row in data])  # the batch the build ran
    assert torch.equal(model.get_vision_features(pixels)[0], features[0])  # what forward(pixel_values=...) computes


def test_half_precision_attention_on_cpu_is_sdpa_on_fp32_copies():
    """`UPCAST_SDPA`: bf16 queries/keys/values are attended in fp32 and the output cast back (bf16 SDPA kernels are
    slow on CPUs); fp32 inputs take plain SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    module = torch.nn.Module()
    module.is_causal = False
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=generator) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    half = [t.bfloat16() for t in (q, k, v)]
    output, _ = modeling_precision.upcast_sdpa_attention(module, *half, mask)
    expected, _ = sdpa_attention_forward(module, *(t.float() for t in half), mask)
    assert output.dtype == torch.bfloat16 and torch.equal(output, expected.bfloat16())
    assert torch.equal(
        modeling_precision.upcast_sdpa_attention(module, q, k, v, mask)[0],
        sdpa_attention_forward(module, q, k, v, mask)[0],
    )


@pytest.mark.parametrize("grouped_heads", [True, False], ids=["kernel-groups-heads", "heads-repeated"])
@pytest.mark.parametrize("mask_kind", ["causal", "bool", "float"])
def test_half_precision_attention_with_a_backward_keeps_half_precision_inputs_and_the_same_gradients(
    mask_kind, grouped_heads, monkeypatch
):
    """Where a backward will run, the fp32 attention keeps the bf16 queries/keys/values for it (not fp32 copies, keys
    and values un-repeated for grouped-query attention) and gives the gradients SDPA on fp32 copies gives, whether
    the kernel takes the grouped key/value heads itself or they are repeated for it (torch versions differ)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if grouped_heads and not modeling_precision._GROUPED_HEADS:
        pytest.skip("this torch's fused CPU attention kernel does not take grouped key/value heads")
    monkeypatch.setattr(modeling_precision, "_GROUPED_HEADS", grouped_heads)
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, 3
    generator = torch.Generator().manual_seed(0)
    shapes = {"q": (2, 6, 7, 16), "k": (2, 2, 7, 16), "v": (2, 2, 7, 16)}
    q, k, v = (torch.randn(*shape, generator=generator).bfloat16().requires_grad_() for shape in shapes.values())
    mask = None
    if mask_kind != "causal":
        mask = torch.ones(2, 1, 7, 7, dtype=torch.bool).tril()
        mask[0, :, 2:, :2] = False  # the first sample's first two tokens are padding
        if mask_kind == "float":
            mask = torch.where(mask, 0.0, -1e9).bfloat16()
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        output, _ = modeling_precision.upcast_sdpa_attention(module, q, k, v, mask, scaling=0.3)
    grad = torch.randn(output.shape, generator=generator).bfloat16()
    grads = torch.autograd.grad(output, (q, k, v), grad)

    upcast = [t.detach().float().requires_grad_() for t in (q, k, v)]
    fp32_mask = mask.float() if mask is not None and mask.is_floating_point() else mask
    expected, _ = sdpa_attention_forward(module, *upcast, fp32_mask, scaling=0.3)
    expected_grads = torch.autograd.grad(expected.bfloat16(), upcast, grad)
    torch.testing.assert_close(output, expected.bfloat16(), rtol=0, atol=1e-6)
    for got, want in zip(grads, expected_grads):
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, want.bfloat16(), rtol=1e-2, atol=1e-5)
    inputs = [t for t in saved if t.dtype == torch.bfloat16]
    assert sorted(t.shape for t in inputs) == sorted(t.shape for t in (q, k, v))  # kept in bf16, not repeated
    fp32 = sorted(tuple(t.shape) for t in saved if t.dtype == torch.float32)  # the kernel's output, log-sum-exp, mask
    assert fp32 == sorted([tuple(q.shape), (2, 6, 7)] + ([] if mask is None else [(2, 1, 7, 7)]))
    with torch.no_grad():  # no backward: nothing to keep, the plain path
        assert torch.equal(modeling_precision.upcast_sdpa_attention(module, q, k, v, mask, scaling=0.3)[0], output)


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_a_held_llm_attends_in_fp32_on_cpu_with_its_padding_masks(llm):
    """The LLM switches to `UPCAST_SDPA` in half precision (and back), and its attention still gets the padding
    masks SDPA gets (an attention implementation without a registered mask function would get none)."""
    model = tiny_model(llm)
    assert model.language_model.config._attn_implementation == "sdpa"
    model.hold_frozen_in("bfloat16")
    assert model.language_model.config._attn_implementation == modeling_precision.UPCAST_SDPA
    inputs = _inputs("token", llm)
    inputs["attention_mask"][0, :2] = 0  # the first sample is padded on the left
    masks: list[torch.Tensor | None] = []
    attention = [m for n, m in model.language_model.named_modules() if n.endswith(("self_attn", "0.SelfAttention"))]
    attention = [m for m in attention if llm == "llama" or not m.is_decoder]  # T5: the encoder reads the padding
    hooks = [
        m.register_forward_pre_hook(
            lambda m, a, kw: masks.append(kw.get("attention_mask", kw.get("mask"))), with_kwargs=True
        )
        for m in attention
    ]
    with torch.no_grad():
        model(**inputs)
    for hook in hooks:
        hook.remove()
    assert len(masks) == len(attention) > 0
    for mask in masks:
        assert mask is not None
        hidden = ~mask[0, 0, :, :2] if mask.dtype == torch.bool else mask[0, 0, :, :2] < -1e3
        assert hidden.all()
    model.hold_frozen_in("float32")
    assert model.language_model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's memory map (Linux)")
def test_holding_in_bf16_lets_the_mapped_fp32_checkpoint_go(tmp_path):
    """from_pretrained maps the safetensors file; once the frozen parts are cast away from it, nothing may keep it
    mapped (its pages would stay resident: 600 MiB for a 135M LLM)."""
    import gc

    tiny_model("llama").save_pretrained(tmp_path)
    checkpoint = str(tmp_path / "model.safetensors")
    model = InstructBlipForConditionalGeneration.from_pretrained(tmp_path)
    assert checkpoint in Path("/proc/self/maps").read_text()
    model.hold_frozen_in("bfloat16")
    gc.collect()
    assert checkpoint not in Path("/proc/self/maps").read_text()
    assert model.query_tokens.dtype == torch.float32 and model.qformer.dtype == torch.float32
