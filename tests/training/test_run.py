"""`hf-instructblip train CONFIG.yaml`: config parsing, the tiny example end to end, outputs, NaN stop, bad samples."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from conftest import NUM_QUERY, make_processor, model_for
from hf_instructblip.cli import main
from hf_instructblip.data.feature_cache import MANIFEST_NAME
from hf_instructblip.data.synthetic import synthetic_dataset
from hf_instructblip.training.arguments import DataArguments, ModelArguments
from hf_instructblip.training.config import parse_config
from hf_instructblip.training.run import last_complete_checkpoint, run_from_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tokenizer_dirs, tmp_path_factory):
    """A tiny random model + processor saved as a folder: the config's ``model.model_name_or_path``."""
    processor = make_processor(tokenizer_dirs)
    path = tmp_path_factory.mktemp("tiny-model")
    model_for(processor, "llama", seed=0).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def _write_config(path: Path, model_dir: Path, output_dir: Path, **sections: dict) -> Path:
    config = {
        "model": {"model_name_or_path": str(model_dir)},
        "data": {"datasets": ["synthetic_vqa", "synthetic_counting"], "samples_per_dataset": 16},
        "training": {
            "output_dir": str(output_dir),
            "max_steps": 4,
            "per_device_train_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": True,
            "seed": 0,
        },
    }
    path.write_text(yaml.safe_dump(_merge(config, sections)))
    return path


# ----- parsing ----------------------------------------------------------------------------------------------------
def test_sections_parse_into_the_argument_dataclasses_with_yaml_12_scalars_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "model: {model_name_or_path: some/folder, lora_target: llm}\n"
        "data: {datasets: [synthetic_held_in], max_length: 64}\n"
        "training: {output_dir: out, learning_rate: 1e-3, save_strategy: no, max_steps: 7}\n"
    )
    model_args, data_args, training_args = parse_config(
        path, ["--training.max_steps", "9", "--data.on_bad_sample=skip", "--training.bf16", "false"]
    )
    assert isinstance(model_args, ModelArguments) and model_args.lora_target == "llm"
    assert isinstance(data_args, DataArguments) and data_args.on_bad_sample == "skip" and data_args.max_length == 64
    assert training_args.learning_rate == 1e-3  # YAML 1.1 would read "1e-3" as a string
    assert training_args.save_strategy == "no"  # ... and `no` as False
    assert training_args.max_steps == 9 and training_args.bf16 is False
    assert training_args.weight_decay == 0.05  # the paper's recipe stays the default

    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"model": {"model_name_or_path": "m"}, "data": {"datasets": ["synthetic_vqa"]}}))
    assert parse_config(as_json)[1].datasets == ["synthetic_vqa"]


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("training: {max_step: 3}", [], r"section `training`: unknown key `max_step` \(did you mean `max_steps`\?\)"),
        ("optimizer: {lr: 1}", [], r"unknown section\(s\) \['optimizer'\]"),
        ("training: {max_steps: ten}", [], r"training.max_steps: expected int, got 'ten'"),
        ("data: {datasets: [synthetic_vqa], on_bad_sample: ignore}", [], r"data.on_bad_sample must be 'raise' or"),
        ("data: {}", [], r"data: name at least one training dataset"),
        (
            "data: {datasets: [synthetic_vq]}",
            [],
            r"data.datasets: unknown dataset 'synthetic_vq' \(did you mean 'synthetic_vqa'\?\)",
        ),
        ("data: {datasets: [gqa], samples_per_dataset: 0}", [], r"data.samples_per_dataset must be >= 1"),
        ("model: {model_name_or_path: a, llm: b}", [], r"model: give either `model_name_or_path` or the parts"),
        ("model: {vision: v}", [], r"qformer, llm missing"),
        ("model: {model_name_or_path: a, lora_target: vision}", [], r"model.lora_target must be one of"),
        ("training: {}", ["training.max_steps", "3"], r"expected --section.key value"),
        ("training: {}", ["--max_steps", "3"], r"name a section and a key"),
        ("training: {}", ["--training.max_steps"], r"--training.max_steps has no value"),
        # values transformers accepts but that cannot train, named before anything is loaded
        ("training: {max_steps: 0}", [], r"training.max_steps must be > 0 \(or -1: train num_train_epochs epochs\)"),
        ("training: {learning_rate: -1.0e-3}", [], r"training.learning_rate must be > 0, got -0.001"),
        ("training: {per_device_train_batch_size: 0}", [], r"training.per_device_train_batch_size must be >= 1"),
        ("training: {gradient_accumulation_steps: 0}", [], r"training.gradient_accumulation_steps must be >= 1"),
        ("training: {weight_decay: -1}", [], r"training.weight_decay must be >= 0"),
        ("training: {max_steps: -1, num_train_epochs: 0}", [], r"training.num_train_epochs must be > 0"),
    ],
)
def test_bad_configs_are_refused_naming_the_section_and_key(tmp_path, text, overrides, message):
    base = {"model": {"model_name_or_path": "m"}, "data": {"datasets": ["synthetic_vqa"]}}
    config = {**base, **yaml.safe_load(text)}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match=message):
        parse_config(path, overrides)


def test_cli_reports_config_errors_and_missing_files(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("training: {max_step: 3}\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key `max_step`" in capsys.readouterr().err


# ----- the tiny example, end to end -------------------------------------------------------------------------------
def test_tiny_example_config_trains_and_saves_everything(tmp_path):
    """What a user runs after `make test`: the console script, the example file verbatim (but the output folder)."""
    out = tmp_path / "tiny-run"
    script = Path(sys.executable).with_name("hf-instructblip")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "hf_instructblip.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*command, "train", str(EXAMPLES / "tiny.yaml"), "--training.output_dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"outputs in {out}" in done.stdout and "60/60" in done.stderr  # the summary and the progress bar

    model = AutoModelForImageTextToText.from_pretrained(out).eval()  # the user's flow 1 on the result
    processor = AutoProcessor.from_pretrained(out)
    sample = synthetic_dataset("synthetic_vqa", 1, seed=5, image_size=32)[0]
    inputs = processor(images=sample["images"][0], text=sample["instruction"])
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert generated.shape[-1] > 0

    results = json.loads((out / "train_results.json").read_text())
    assert math.isfinite(results["train_loss"]) and results["train_samples"] == 5 * 64
    losses = [e["loss"] for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(losses) == 12 and losses[-1] < losses[0]  # logging_steps 5 over 60 steps; it learns
    with Image.open(out / "loss_curve.png") as png:
        assert png.format == "PNG" and png.size == (700, 450)  # loss + chance level, learning rate on a 2nd axis
    assert last_complete_checkpoint(out) == out / "checkpoint-60"  # save_total_limit 1 kept the last one


# ----- failure modes ----------------------------------------------------------------------------------------------
class _PoisonAt(TrainerCallback):
    """Records checkpoint-``save_step``'s bytes when it is saved, then makes the loss NaN from step ``nan_step``."""

    def __init__(self, save_step: int, nan_step: int):
        self.save_step, self.nan_step, self.saved = save_step, nan_step, {}

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.save_step:
            self.saved = _digests(Path(args.output_dir) / f"checkpoint-{self.save_step}")

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.nan_step:
            with torch.no_grad():
                model.language_projection.bias.fill_(float("nan"))


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_nan_loss_stops_naming_the_step_and_leaves_the_last_checkpoint_intact(model_dir, tmp_path):
    out = tmp_path / "run"
    config = _write_config(
        tmp_path / "run.yaml",
        model_dir,
        out,
        training={"max_steps": 6, "save_strategy": "steps", "save_steps": 2},
    )
    poison = _PoisonAt(save_step=4, nan_step=5)
    with pytest.raises(FloatingPointError, match="at step 5"):
        run_from_config(config, callbacks=[poison])
    assert poison.saved and _digests(out / "checkpoint-4") == poison.saved  # byte-identical after the error
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / "model.safetensors").exists()  # no "final" model from poisoned weights
    assert last_complete_checkpoint(out) == out / "checkpoint-4"


def test_resume_true_without_a_checkpoint_names_the_folder(model_dir, tmp_path):
    config = _write_config(tmp_path / "run.yaml", model_dir, tmp_path / "empty", training={})
    with pytest.raises(FileNotFoundError, match="empty holds no complete checkpoint"):
        run_from_config(config, ["--training.resume_from_checkpoint", "true"])


def test_skipped_bad_samples_are_reported_and_eval_sets_evaluated(model_dir, tmp_path):
    rows = [{"img": f"{i}.png", "q": "What colour?", "a": answer} for i, answer in enumerate(["red", "", "blue"])]
    for i in range(len(rows)):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "mine.jsonl").write_text("\n".join(map(json.dumps, rows)))
    custom = {
        "source": str(tmp_path / "mine.jsonl"),
        "task_family": "short_vqa",
        "columns": {"image": "img", "question": "q", "answer": "a"},
        "name": "my_vqa",
    }
    out = tmp_path / "run"
    config = _write_config(
        tmp_path / "run.yaml",
        model_dir,
        out,
        data={"custom_datasets": [custom], "on_bad_sample": "skip", "eval_datasets": ["synthetic_yes_no"]},
        training={"max_steps": 2, "eval_strategy": "no"},
    )
    run = run_from_config(config, ["--data.eval_samples_per_dataset", "4"])
    assert run.bad_samples is not None and run.bad_samples.total == 1
    report = (out / "bad_samples.txt").read_text()
    assert "my_vqa: 1 x empty target (rows 1)" in report
    assert math.isfinite(run.eval_metrics["eval_synthetic_yes_no_loss"])
    assert "eval_synthetic_yes_no_loss" in json.loads((out / "eval_results.json").read_text())


def test_lora_run_saves_the_adapter_and_the_processor(model_dir, tmp_path):
    out = tmp_path / "run"
    config = _write_config(tmp_path / "run.yaml", model_dir, out, model={"lora_target": "llm"})
    run = run_from_config(config)
    assert run.global_step == 4
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter, not a full copy of the base model
    assert AutoProcessor.from_pretrained(out).num_query_tokens == NUM_QUERY


def test_feature_cache_is_built_on_first_use_and_reused(model_dir, tmp_path):
    cache = tmp_path / "cache"
    config = _write_config(tmp_path / "run.yaml", model_dir, tmp_path / "run", data={"feature_cache_dir": str(cache)})
    first = run_from_config(config)
    manifest = (cache / MANIFEST_NAME).read_bytes()
    second = run_from_config(config, ["--training.output_dir", str(tmp_path / "again")])
    assert (cache / MANIFEST_NAME).read_bytes() == manifest  # every image was cached already
    assert math.isfinite(first.training_loss) and second.training_loss == first.training_loss


def test_values_that_cannot_train_stop_the_cli_before_the_model_is_built(tmp_path, capsys):
    """The model folder does not exist: a model built (or loaded) first would fail on that instead."""
    config = _write_config(tmp_path / "run.yaml", tmp_path / "no-model", tmp_path / "run", training={"max_steps": 0})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "hf-instructblip train: error: training.max_steps must be > 0" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# ----- your own data ----------------------------------------------------------------------------------------------
def test_the_own_data_example_trains_from_any_directory(tmp_path, monkeypatch):
    """examples/configs/own_data.yaml as shipped; its `source` is relative to the config file, not the cwd."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "own"
    run = run_from_config(EXAMPLES / "own_data.yaml", ["--training.output_dir", str(out), "--training.max_steps", "2"])
    assert run.global_step == 2 and math.isfinite(run.training_loss)
    assert json.loads((out / "train_results.json").read_text())["train_samples"] == 8 + 64  # the JSONL + synthetic


def _jsonl_with_bad_images(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    rows = [
        {"img": "good.png", "q": "What colour?", "a": "red"},
        {"img": "broken.jpg", "q": "What colour?", "a": "blue"},
        {"img": "missing.png", "q": "What colour?", "a": "green"},
        {"img": "good.png", "q": "What is it?", "a": "a square"},
    ]
    (folder / "mine.jsonl").write_text("\n".join(map(json.dumps, rows)))
    return folder / "mine.jsonl"


def _custom(source: Path) -> dict:
    return {
        "source": str(source),
        "task_family": "short_vqa",
        "columns": {"image": "img", "question": "q", "answer": "a"},
        "name": "mine",
    }


def test_bad_images_are_named_before_the_first_step(model_dir, tmp_path, capsys):
    source = _jsonl_with_bad_images(tmp_path / "data")
    out = tmp_path / "run"
    config = _write_config(tmp_path / "run.yaml", model_dir, out, data={"custom_datasets": [_custom(source)]})
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("hf-instructblip train: error:")]
    assert len(lines) == 1, err
    assert f"dataset 'mine', row 1: image file '{source.parent / 'broken.jpg'}' cannot be decoded" in lines[0]
    assert "Traceback" not in err and not (out / "trainer_state.json").exists()  # stopped before training

    skipping = _write_config(
        tmp_path / "skip.yaml",
        model_dir,
        out,
        data={"custom_datasets": [_custom(source)], "on_bad_sample": "skip"},
        training={"max_steps": 2},
    )
    run = run_from_config(skipping)
    assert run.global_step == 2 and run.bad_samples is not None and run.bad_samples.total == 2
    report = (out / "bad_samples.txt").read_text()
    assert f"mine: 1 x image file '{source.parent / 'broken.jpg'}' cannot be decoded" in report
    assert f"mine: 1 x image file '{source.parent / 'missing.png'}' does not exist (rows 2)" in report
    assert "(rows 1)" in report


def test_an_empty_jsonl_is_one_line(model_dir, tmp_path, capsys):
    (tmp_path / "empty.jsonl").write_text("")
    config = _write_config(
        tmp_path / "run.yaml",
        model_dir,
        tmp_path / "run",
        data={"custom_datasets": [_custom(tmp_path / "empty.jsonl")]},
    )
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        f"hf-instructblip train: error: to_instruction_dataset: {tmp_path / 'empty.jsonl'} is empty (no rows)." in err
    )
    assert "Traceback" not in err


# ----- finished runs, LoRA on a fresh base, the loss curve ------------------------------------------------------------
def test_resuming_a_finished_run_says_so_and_trains_no_further(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    config = _write_config(
        tmp_path / "run.yaml", model_dir, out, training={"max_steps": 2, "save_strategy": "steps", "save_steps": 2}
    )
    assert run_from_config(config).global_step == 2
    before = _digests(out)
    assert main(["train", str(config), "--training.resume_from_checkpoint", "true"]) == 0
    assert "already finished its 2 steps; nothing to train" in capsys.readouterr().out
    assert _digests(out) == before and not (out / "checkpoint-3").exists()
    longer = run_from_config(config, ["--training.resume_from_checkpoint", "true", "--training.max_steps", "3"])
    assert longer.global_step == 3 and not longer.already_finished  # a larger max_steps does train on


def test_lora_on_a_base_built_in_the_same_run_saves_the_base_beside_the_adapter(tmp_path, capsys):
    from hf_instructblip.loading import load_for_inference

    out = tmp_path / "lora"
    overrides = ["--model.lora_target", "llm", "--training.output_dir", str(out), "--training.max_steps", "2"]
    run = run_from_config(EXAMPLES / "tiny.yaml", overrides)
    assert run.global_step == 2
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "base_model" and (out / "base_model" / "config.json").is_file()
    merged, _ = load_for_inference(out)  # what `generate` loads: base + adapter, merged
    base, _ = load_for_inference(out / "base_model")
    assert not torch.equal(
        merged.language_projection.weight, base.language_projection.weight
    )  # trained, in the adapter
    Image.new("RGB", (32, 32), (0, 90, 200)).save(tmp_path / "photo.png")
    code = main(["generate", str(out), "--image", str(tmp_path / "photo.png"), "--max-new-tokens", "3"])
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err and "base model" not in err  # loads; 1: an empty answer


def test_the_loss_curve_shows_metrics_in_a_panel_of_their_own(tmp_path):
    from hf_instructblip.training.loss_curve import chance_loss, plot_loss_curve

    history = [
        {"step": step, "loss": 10.9 - 0.01 * step, "learning_rate": 1e-4 * min(step, 5) / 5} for step in range(1, 11)
    ]
    history += [{"step": 10, "eval_synthetic_vqa_accuracy": 0.25, "eval_synthetic_vqa_loss": 10.7, "eval_runtime": 3}]
    with Image.open(plot_loss_curve(history, tmp_path / "curve.png", vocab_size=49152)) as png:
        assert png.size == (700, 650)  # loss, then the metrics below
    with Image.open(plot_loss_curve(history[:-1], tmp_path / "plain.png", vocab_size=49152)) as png:
        assert png.size == (700, 450)
    assert chance_loss(49152) == pytest.approx(10.8027, abs=1e-4)
    assert plot_loss_curve([{"step": 1, "learning_rate": 1e-4}], tmp_path / "none.png") is None  # no loss logged


def test_a_missing_or_truncated_model_folder_is_one_line(model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in model_dir.iterdir():
        if file.is_file():
            (broken / file.name).write_bytes(file.read_bytes())
    (broken / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes()[:6])
    for folder, message in [
        (tmp_path / "missing", f"model.model_name_or_path: model folder '{tmp_path / 'missing'}' does not exist."),
        (broken, f"model.model_name_or_path: cannot read {broken / 'model.safetensors'}: "),
    ]:
        config = _write_config(tmp_path / "run.yaml", folder, tmp_path / "run", training={})
        assert main(["train", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"hf-instructblip train: error: {message}" in err and "Traceback" not in err
