"""Training under TRL's SFTTrainer with TRL's own vision collator: completion-only labels, the Q-Former reads the
prompt, exactly the trainable parameters move, encoder-decoder LLMs are refused clearly, and the example runs (full
and LoRA)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from trl import SFTConfig, SFTTrainer

from conftest import assert_close_fp32, assert_moved_exactly, make_processor, model_for
from hf_instructblip import InstructBlipForConditionalGeneration
from hf_instructblip.data.synthetic import synthetic_mixture
from hf_instructblip.training import load_adapter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_trl_sft.py"
TASKS = ("synthetic_captioning", "synthetic_vqa")


def _load_example():
    spec = importlib.util.spec_from_file_location("train_trl_sft", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


example = _load_example()


def _config(tmp_path, **overrides) -> SFTConfig:
    settings = {
        "output_dir": str(tmp_path / "run"),
        "per_device_train_batch_size": 4,
        "max_steps": 3,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
    }
    return SFTConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def setup(tokenizer_dirs):
    processor = make_processor(tokenizer_dirs)
    eos = processor.tokenizer.eos_token
    unified = synthetic_mixture(TASKS, 4, seed=0, image_size=32)
    rows = [sample for part in unified.values() for sample in part]
    plain = [{"images": s["images"], **example.to_prompt_completion(s, eos)} for s in rows]
    chat = [{"images": s["images"], **example.to_prompt_completion(s, eos, conversational=True)} for s in rows]
    dataset = example.synthetic_sft_dataset(eos, 4, image_size=32).select(range(8))
    return processor, plain, chat, dataset


def test_collated_batch_labels_the_completion_only_and_feeds_the_prompt_to_the_qformer(setup, tmp_path):
    processor, plain, chat, dataset = setup
    trainer = SFTTrainer(
        model=model_for(processor), args=_config(tmp_path), train_dataset=dataset, processing_class=processor
    )
    samples = plain[:2] + plain[-2:]  # two tasks: prompts and completions of different lengths
    batch = trainer.data_collator(samples)

    tokenizer, image = processor.tokenizer, [processor.image_token_id] * processor.num_query_tokens
    width = batch["input_ids"].shape[1]
    for row, sample in enumerate(samples):
        prompt = image + tokenizer(sample["prompt"], add_special_tokens=False)["input_ids"]
        completion = tokenizer(sample["completion"], add_special_tokens=False)["input_ids"]
        assert completion[-1] == tokenizer.eos_token_id
        length = len(prompt) + len(completion)
        padding = width - length
        # images first, then prompt, completion, and the padding on the right
        assert batch["input_ids"][row, :length].tolist() == prompt + completion
        assert batch["attention_mask"][row].tolist() == [1] * length + [0] * padding
        assert batch["labels"][row].tolist() == [-100] * len(prompt) + completion + [-100] * padding
    assert not (batch["labels"][batch["input_ids"] == processor.image_token_id] != -100).any()
    assert not batch["attention_mask"].all()  # the right padding above was exercised

    qformer = processor.qformer_inputs([s["prompt"] for s in samples])
    assert batch["qformer_input_ids"].tolist() == qformer["qformer_input_ids"]
    assert batch["qformer_attention_mask"].tolist() == qformer["qformer_attention_mask"]
    assert batch["pixel_values"].shape == (len(samples), 3, 30, 30)

    conversational = trainer.data_collator(chat[:2] + chat[-2:])
    assert conversational.keys() == batch.keys()
    for key in batch:
        assert torch.equal(conversational[key], batch[key]), key


def test_trl_fused_head_loss_equals_the_models_own_loss(setup, tmp_path):
    processor, plain, _, dataset = setup
    trainer = SFTTrainer(
        model=model_for(processor), args=_config(tmp_path), train_dataset=dataset, processing_class=processor
    )
    batch = trainer.data_collator(plain[1::2])
    model = trainer.model.eval()
    with torch.no_grad():
        fused = model(**batch, fused_lm_head=True)  # what SFTTrainer.compute_loss trains on
        own = model(**batch)
    assert_close_fp32(fused.loss, own.loss)  # the fused head sums the vocabulary in other chunks
    assert int(fused.label_mask.sum()) == int((batch["labels"] != -100).sum())


def test_sft_trainer_moves_exactly_the_trainable_parameters_and_lowers_the_loss(setup, tmp_path):
    processor, plain, _, dataset = setup
    model = model_for(processor, seed=3)
    trainable = set(model.apply_trainable_policy())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = SFTTrainer(model=model, args=_config(tmp_path), train_dataset=dataset, processing_class=processor)
    fixed = trainer.data_collator(plain[::2])
    with torch.no_grad():
        loss_before = model(**fixed).loss.item()

    trainer.train()

    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable
    assert_moved_exactly(model.named_parameters(), before, trainable)
    model.eval()
    with torch.no_grad():
        loss_after = model(**fixed).loss.item()
    assert loss_after < loss_before - 0.1, (loss_before, loss_after)


def test_encoder_decoder_llm_is_refused_with_a_clear_error(setup, tmp_path):
    processor, _, _, dataset = setup
    model = model_for(processor, "t5")
    trainer = SFTTrainer(model=model, args=_config(tmp_path), train_dataset=dataset, processing_class=processor)
    with pytest.raises(ValueError, match=r"encoder-decoder.*InstructBlipTrainer"):
        trainer.train()


def _saved_model(processor, folder: Path, seed: int) -> InstructBlipForConditionalGeneration:
    model = model_for(processor, seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model


def _run_example(folder: Path, output: Path, *extra: str):
    argv = ["--model", str(folder), "--output-dir", str(output), "--max-steps", "2", "--use-cpu"]
    argv += ["--per-device-train-batch-size", "2", "--num-samples-per-task", "2", "--image-size", "32"]
    return example.main([*argv, "--learning-rate", "1e-3", *extra])


def test_example_script_trains_the_paper_parts_on_chat_data_and_saves_a_loadable_model(setup, tmp_path):
    processor = setup[0]
    model = _saved_model(processor, tmp_path / "tiny", seed=5)

    result = _run_example(tmp_path / "tiny", tmp_path / "out", "--conversational")

    assert result.global_step == 2
    trained = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "out")
    initial = {name: param.detach() for name, param in model.named_parameters()}
    moving = {name for name in initial if model.is_trainable_by_default(name)}
    assert_moved_exactly(trained.named_parameters(), initial, moving)


def test_example_script_trains_lora_adapters_saved_with_the_query_tokens(setup, tmp_path):
    processor = setup[0]
    model = _saved_model(processor, tmp_path / "tiny", seed=6)

    result = _run_example(tmp_path / "tiny", tmp_path / "out", "--lora-target", "llm")

    assert result.global_step == 2
    reloaded = load_adapter(InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "tiny"), tmp_path / "out")
    assert not torch.equal(reloaded.get_base_model().query_tokens, model.query_tokens)
    assert any("lora_" in name for name, _ in reloaded.named_parameters())
