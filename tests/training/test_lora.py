"""LoRA through PEFT: presets per LLM family, the trainable set, adapter and merged round trips, the Trainer."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors import safe_open

from conftest import (
    IMAGE_TOKEN,
    LLAMA,
    NUM_QUERY,
    QFORMER,
    T5,
    VISION,
    assert_close_fp32,
    assert_moved_exactly,
    make_inputs,
    perturb_,
    tiny_model,
)
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration
from hf_instructblip.training import (
    LORA_TARGETS,
    InstructBlipPeftModel,
    InstructBlipTrainer,
    InstructBlipTrainingArguments,
    apply_lora,
    load_adapter,
    lora_config,
    lora_target_modules,
)

QUERY_TOKENS_KEY = "base_model.model.query_tokens"
DECODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
# Tiny LLMs of each family with a preset, and the layer names LoRA must adapt in each (attention + feed-forward).
FAMILIES = {
    "llama": (LLAMA, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
    "qwen2": (
        {"model_type": "qwen2", **DECODER, "num_key_value_heads": 2, "vocab_size": 100},
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    ),
    "mistral": (
        {"model_type": "mistral", **DECODER, "num_key_value_heads": 2, "vocab_size": 100},
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    ),
    "t5": (T5, {"q", "k", "v", "o", "wi", "wo"}),  # T5's relu FFN: wi/wo (gated FlanT5 has wi_0/wi_1 instead)
    "opt": (
        {"model_type": "opt", **DECODER, "ffn_dim": 64, "word_embed_proj_dim": 32, "vocab_size": 100},
        {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
    ),
    "gpt2": (
        {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": 100},
        {"c_attn", "c_proj", "c_fc"},
    ),
}
QFORMER_LAYERS = {"query", "key", "value", "dense"}


def _family_model(family: str) -> InstructBlipForConditionalGeneration:
    config = InstructBlipConfig(
        vision_config={"model_type": "instructblip_vision_model", **VISION},
        qformer_config=dict(QFORMER),
        text_config=dict(FAMILIES[family][0]),
        num_query_tokens=NUM_QUERY,
        image_token_index=IMAGE_TOKEN,
    )
    torch.manual_seed(0)
    return perturb_(InstructBlipForConditionalGeneration(config)).eval()


def _lora_module_names(peft_model) -> set[str]:
    return {name for name, module in peft_model.get_base_model().named_modules() if isinstance(module, LoraLayer)}


def _inputs_with_labels(llm: str) -> dict[str, torch.Tensor]:
    inputs = make_inputs("t5" if llm == "t5" else "llama")
    if llm == "t5":
        inputs["labels"] = inputs.pop("decoder_input_ids")
    else:
        inputs["labels"] = inputs["input_ids"].masked_fill(inputs["input_ids"] == IMAGE_TOKEN, -100)
    return inputs


def _logits(model, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


def _train(peft_model, llm: str, steps: int = 3) -> None:
    """A few real AdamW steps, so LoRA B, the query tokens and the fully trained modules all move."""
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    inputs = _inputs_with_labels(llm)
    peft_model.train()
    for _ in range(steps):
        peft_model(**inputs).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()


# ----- presets -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", LORA_TARGETS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_preset_adapts_exactly_the_right_layers_of_each_family(family, target):
    model = _family_model(family)
    unused = model.unused_qformer_modules()
    linear_names = {n for n, m in model.named_modules() if hasattr(m, "weight") and m.weight.ndim == 2}
    expected_llm = {
        n for n in linear_names if n.startswith("language_model.") and n.rsplit(".", 1)[-1] in FAMILIES[family][1]
    }
    expected_qformer = {
        n
        for n in linear_names
        if n.startswith("qformer.encoder.")
        and n.rsplit(".", 1)[-1] in QFORMER_LAYERS
        and not any(n.startswith(u + ".") for u in unused)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPT-2 + "both": PEFT switches fan_in_fan_out per layer type, with a warning
        peft_model = apply_lora(model, target)
    adapted = _lora_module_names(peft_model)

    assert {n.rsplit(".", 1)[-1] for n in expected_llm} == FAMILIES[family][1]
    assert {n for n in adapted if n.startswith("language_model.")} == (expected_llm if target != "qformer" else set())
    assert {n for n in adapted if n.startswith("qformer.")} == (expected_qformer if target != "llm" else set())
    assert all(n.startswith(("language_model.", "qformer.")) for n in adapted)  # never the vision tower
    if family == "gpt2":  # Conv1D stores its weight transposed; the Q-Former's nn.Linear does not
        modules = dict(peft_model.get_base_model().named_modules())
        assert all(modules[n].fan_in_fan_out == n.startswith("language_model.") for n in adapted)


def test_gpt2_conv1d_lora_merges_into_what_the_adapter_computes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = apply_lora(_family_model("gpt2"), "both", init_lora_weights=False)  # random A and B
    inputs = make_inputs("llama")
    expected = _logits(peft_model, inputs)
    with peft_model.disable_adapter():
        assert not torch.allclose(_logits(peft_model, inputs), expected, atol=1e-3)  # the adapter matters
    merged = peft_model.merge_and_unload()
    assert_close_fp32(_logits(merged, inputs), expected)


def test_any_llm_family_is_adapted_on_its_linear_layers_found_in_the_model():
    """No hand-kept family list: a family never named in the code (Bloom) gets LoRA on its attention and feed-forward
    layers, never on the output head; an explicit target_modules still wins."""
    config = InstructBlipConfig(
        vision_config={"model_type": "instructblip_vision_model", **VISION},
        qformer_config=dict(QFORMER),
        text_config={"model_type": "bloom", "hidden_size": 32, "n_layer": 2, "n_head": 4, "vocab_size": 100},
        num_query_tokens=NUM_QUERY,
        image_token_index=IMAGE_TOKEN,
    )
    model = InstructBlipForConditionalGeneration(config)
    adapted = _lora_module_names(apply_lora(copy.deepcopy(model), "llm"))
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
    }
    assert all(n.startswith("language_model.") and "lm_head" not in n for n in adapted)
    assert lora_target_modules(model, "qformer")  # the Q-Former preset does not depend on the LLM
    peft_model = apply_lora(model, "llm", target_modules=r"language_model\..*\.query_key_value")
    assert {n.rsplit(".", 1)[-1] for n in _lora_module_names(peft_model)} == {"query_key_value"}


def test_bad_target_and_double_wrapping_are_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"target='vision' is not a LoRA preset"):
        lora_target_modules(model, "vision")
    peft_model = apply_lora(model, "llm")
    with pytest.raises(ValueError, match="already has PEFT adapters"):
        apply_lora(peft_model, "llm")


# ----- what trains ---------------------------------------------------------------------------------------------------
TRAINABLE_CASES = [(llm, target, True) for llm in ("llama", "t5") for target in LORA_TARGETS]
TRAINABLE_CASES += [("llama", "llm", False), ("llama", "both", False)]  # BLIP-2-style Q-Former: more unused modules


@pytest.mark.parametrize("llm,target,text_input", TRAINABLE_CASES)
def test_trainable_set_is_the_presets_and_every_trainable_parameter_gets_a_gradient(llm, target, text_input):
    model = tiny_model(llm, qformer_text_input=text_input)
    fully_trained = {
        n
        for n, _ in model.named_parameters()
        if model.is_trainable_by_default(n) and (target == "llm" or not n.startswith("qformer."))
    }
    peft_model = apply_lora(model, target, init_lora_weights=False)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if ".lora_" in n}
    # PEFT trains copies of the modules_to_save: map their names back onto the base model's.
    full = {n.removeprefix("base_model.model.").replace(".modules_to_save.default", "") for n in trainable - lora}
    assert full == fully_trained
    assert "query_tokens" in full
    lora_scopes = {n.removeprefix("base_model.model.").split(".")[0] for n in lora}
    assert (
        lora_scopes
        == {"llm": {"language_model"}, "qformer": {"qformer"}, "both": {"language_model", "qformer"}}[target]
    )

    peft_model.train()
    peft_model(**_inputs_with_labels(llm)).loss.backward()
    no_gradient = [
        n for n, p in peft_model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert not no_gradient  # DDP would stop on these
    assert all(p.grad is None for p in peft_model.parameters() if not p.requires_grad)


# ----- saving and loading --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[("llama", "llm"), ("t5", "llm"), ("t5", "both")], ids="-".join)
def trained(request, tmp_path_factory):
    """A base folder, and a LoRA model trained from it for a few steps."""
    llm, target = request.param
    base_dir = tmp_path_factory.mktemp(f"base_{llm}")
    tiny_model(llm).save_pretrained(base_dir)
    peft_model = apply_lora(InstructBlipForConditionalGeneration.from_pretrained(base_dir), target)
    _train(peft_model, llm)
    return llm, base_dir, peft_model


def test_adapter_round_trips_exactly_through_plain_peft(trained, tmp_path):
    llm, base_dir, peft_model = trained
    inputs = make_inputs(llm)
    expected = _logits(peft_model, inputs)
    peft_model.save_pretrained(tmp_path / "adapter")

    fresh = InstructBlipForConditionalGeneration.from_pretrained(base_dir)
    untrained = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    assert torch.equal(_logits(loaded, inputs), expected)

    trained_state, loaded_state = peft_model.state_dict(), loaded.state_dict()
    assert trained_state.keys() == loaded_state.keys()
    for name, value in trained_state.items():
        assert torch.equal(loaded_state[name], value), name
    trained_names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert QUERY_TOKENS_KEY in trained_names
    for name in trained_names:  # each part really was trained (so the equality above says it was restored)
        if ".lora_" in name:
            assert ".lora_A." in name or trained_state[name].any(), name  # B starts at zero
        else:
            base_name = name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
            assert not torch.equal(untrained[base_name], trained_state[name]), name


def test_merged_model_matches_the_adapter_and_round_trips(trained, tmp_path):
    llm, _, peft_model = trained
    inputs = make_inputs(llm)
    expected = _logits(peft_model, inputs)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    assert type(merged) is InstructBlipForConditionalGeneration
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    # W + B A is rounded once into W: equal up to float rounding, not bit for bit.
    assert_close_fp32(_logits(merged, inputs), expected)

    merged.save_pretrained(tmp_path / "merged")
    reloaded = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "merged")
    assert torch.equal(_logits(reloaded, inputs), _logits(merged, inputs))


def test_adapter_folder_holds_safetensors_only_and_names_its_base(trained, tmp_path):
    _, base_dir, peft_model = trained
    peft_model.save_pretrained(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_dir)
    assert config["auto_mapping"]["base_model_class"] == "InstructBlipForConditionalGeneration"
    with safe_open(tmp_path / "adapter" / "adapter_model.safetensors", framework="pt") as weights:
        assert QUERY_TOKENS_KEY in set(weights.keys())
    with pytest.raises(ValueError, match="safetensors only"):
        peft_model.save_pretrained(tmp_path / "pickled", safe_serialization=False)


def test_load_adapter_keeps_query_tokens_trainable_and_saved(trained, tmp_path):
    _, base_dir, peft_model = trained
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter(InstructBlipForConditionalGeneration.from_pretrained(base_dir), tmp_path / "adapter", True)
    assert isinstance(loaded, InstructBlipPeftModel)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in peft_model.named_parameters() if p.requires_grad
    }
    loaded.save_pretrained(tmp_path / "again")  # a reloaded adapter still carries its query tokens
    with safe_open(tmp_path / "again" / "adapter_model.safetensors", framework="pt") as weights:
        assert torch.equal(weights.get_tensor(QUERY_TOKENS_KEY), peft_model.get_base_model().query_tokens)

    with pytest.raises(FileNotFoundError, match=r"No adapter_model\.safetensors in adapter folder"):
        load_adapter(InstructBlipForConditionalGeneration.from_pretrained(base_dir), tmp_path)


def test_load_adapter_warns_when_the_query_tokens_are_missing(tmp_path):
    model = tiny_model("llama")
    get_peft_model(model, lora_config(model, "llm")).save_pretrained(tmp_path / "plain")  # plain PEFT drops them
    with pytest.warns(UserWarning, match="holds no query tokens"):
        load_adapter(tiny_model("llama"), tmp_path / "plain")


# ----- the Trainer ---------------------------------------------------------------------------------------------------
def test_trainer_trains_the_lora_model_and_its_checkpoint_restores_and_resumes_exactly(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "base")
    peft_model = apply_lora(InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "base"), "llm")
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    batch = _inputs_with_labels("llama")
    dataset = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["input_ids"]))] * 2
    args = InstructBlipTrainingArguments(  # apply_trainable_policy stays True: the trainer leaves a PeftModel alone
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=1e-2,
        warmup_steps=0,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    InstructBlipTrainer(model=peft_model, args=args, train_dataset=dataset).train()

    assert {n for n, p in peft_model.named_parameters() if p.requires_grad} == trainable
    assert_moved_exactly(peft_model.named_parameters(), before, trainable)  # all and only these move

    checkpoint = tmp_path / "run" / "checkpoint-2"
    fresh = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "base")
    restored = PeftModel.from_pretrained(fresh, checkpoint)
    assert torch.equal(_logits(restored, batch), _logits(peft_model, batch))

    # The Trainer's own resume (PeftModel.load_adapter) restores the whole state too, query tokens included.
    resumed = apply_lora(InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "base"), "llm")
    InstructBlipTrainer(model=resumed, args=args, train_dataset=dataset).train(resume_from_checkpoint=str(checkpoint))
    resumed_state = resumed.state_dict()
    for name, value in peft_model.state_dict().items():
        assert torch.equal(resumed_state[name], value), name
