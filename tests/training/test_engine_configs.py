"""examples/configs: every run config parses, and the FSDP / DeepSpeed ZeRO-2 / ZeRO-3 engine configs go through the
plumbing `Trainer` runs them through (TrainingArguments -> accelerate's FSDP plugin -> the auto-wrap policy on our
model; transformers' DeepSpeed config filling of the "auto" values from the arguments and the model).

The engines themselves need GPUs (accelerate enables FSDP and DeepSpeed on GPUs only) and DeepSpeed is not a
dependency; where it is installed, the last test also builds `TrainingArguments(deepspeed=...)` and the Trainer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.deepspeed import HfDeepSpeedConfig as DeepSpeedConfigReader
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from transformers.integrations.deepspeed import (
    HfTrainerDeepSpeedConfig,
    is_deepspeed_available,
    unset_hf_deepspeed_config,
)

from conftest import tiny_model
from hf_instructblip.data.registry import REGISTRY
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments
from hf_instructblip.training.run import SYNTHETIC_GROUPS, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"
RUN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))
DEEPSPEED = [("deepspeed_zero2.json", 2), ("deepspeed_zero3.json", 3)]
ON_CPU = ["--training.use_cpu", "true", "--training.report_to", "none"]  # bf16 and reporters need no GPU then


@pytest.fixture(autouse=True)
def isolated_state():
    """TrainingArguments set FSDP/accelerate environment variables and DeepSpeed a global config: undo both."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    unset_hf_deepspeed_config()


def _args(tmp_path: Path, **kwargs: Any) -> InstructBlipTrainingArguments:
    settings = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "report_to": [], "use_cpu": True}
    return InstructBlipTrainingArguments(output_dir=str(tmp_path), **{**settings, **kwargs})


def test_there_are_engine_and_run_configs():
    assert {p.name for p in CONFIGS.glob("*.json")} == {"fsdp.json", "deepspeed_zero2.json", "deepspeed_zero3.json"}
    assert CONFIGS / "tiny.yaml" in RUN_CONFIGS and len(RUN_CONFIGS) >= 2


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_run_configs_parse_and_name_known_datasets(path):
    _, data_args, training_args = parse_config(path, ON_CPU)
    known = {*SYNTHETIC_GROUPS, *SYNTHETIC_HELD_IN, *SYNTHETIC_HELD_OUT, *REGISTRY}
    assert set(data_args.datasets) | set(data_args.eval_datasets) <= known
    assert set(data_args.dataset_kwargs) <= set(data_args.datasets)
    assert training_args.output_dir.startswith("outputs/")


def test_paper_config_takes_each_engine_as_an_override():
    paper = CONFIGS / "instructblip_vicuna7b.yaml"
    fsdp = ["--training.fsdp", "true", "--training.fsdp_config", str(CONFIGS / "fsdp.json")]
    assert parse_config(paper, [*ON_CPU, *fsdp])[2].fsdp_plugin_args["fsdp_version"] == 2


def test_fsdp_config_wraps_every_vision_qformer_and_llm_layer(tmp_path):
    args = _args(tmp_path, fsdp=True, fsdp_config=str(CONFIGS / "fsdp.json"))
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)  # as Trainer.create_accelerator_and_postprocess
    assert plugin.fsdp_version == 2  # FSDP2 keeps the original parameters: frozen and trained ones share a unit
    model = tiny_model()
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)  # as accelerator.prepare(model) under FSDP2
    wrapped = [name for name, module in model.named_modules() if policy(module)]
    expected = [f"vision_model.encoder.layers.{i}" for i in range(2)]
    expected += [f"qformer.encoder.layer.{i}" for i in range(3)]
    expected += [f"language_model.model.layers.{i}" for i in range(2)]
    assert wrapped == expected


def _walk(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in _walk(value, f"{prefix}{key}.")]
    return [(prefix.rstrip("."), node)]


def _trainer_deepspeed_config(path: Path) -> HfTrainerDeepSpeedConfig:
    """transformers' Trainer-side DeepSpeed config for ``path``, also where the deepspeed package is missing.

    Without the package transformers' class lacks its base (accelerate's config reader) and refuses to construct;
    the reader is supplied here, so that transformers' own filling logic runs unchanged.
    """
    checked = type("CheckedDeepSpeedConfig", (HfTrainerDeepSpeedConfig, DeepSpeedConfigReader), {})
    config = checked.__new__(checked)
    DeepSpeedConfigReader.__init__(config, str(path))
    config._dtype, config.mismatches = None, []
    return config


@pytest.mark.parametrize(("name", "stage"), DEEPSPEED)
def test_deepspeed_configs_are_completed_from_the_arguments_and_the_model(tmp_path, name, stage):
    args = _args(tmp_path, bf16=True)
    model = tiny_model()
    config = _trainer_deepspeed_config(CONFIGS / name)
    config.trainer_config_process(args)  # what TrainingArguments(deepspeed=...) runs
    config.trainer_config_finalize(args, model, num_training_steps=100)  # what Trainer.train runs
    values = dict(_walk(config.config))
    assert [key for key, value in values.items() if value == "auto"] == []
    assert values["zero_optimization.stage"] == stage
    assert (values["train_micro_batch_size_per_gpu"], values["gradient_accumulation_steps"]) == (4, 2)
    assert values["train_batch_size"] == 8 and values["gradient_clipping"] == args.max_grad_norm
    assert values["bf16.enabled"] is True and values["fp16.enabled"] is False
    hidden = model.config.text_config.hidden_size  # bucket sizes follow the LLM's width
    assert values["zero_optimization.reduce_bucket_size"] == hidden * hidden
    if stage == 3:
        assert values["zero_optimization.stage3_param_persistence_threshold"] == 10 * hidden
        assert values["zero_optimization.stage3_gather_16bit_weights_on_model_save"] is True  # a loadable model
    # No DeepSpeed optimizer or scheduler: the Trainer's AdamW and warm-up + cosine, the paper's recipe, are used.
    assert not any(key.startswith(("optimizer", "scheduler")) for key in values)


@pytest.mark.skipif(not is_deepspeed_available(), reason="DeepSpeed is optional and not installed")
@pytest.mark.parametrize(("name", "stage"), DEEPSPEED)
def test_trainer_accepts_the_deepspeed_configs(tmp_path, name, stage):
    model = tiny_model()  # first: while ZeRO-3 arguments live, new models are partitioned at creation
    args = _args(tmp_path, deepspeed=str(CONFIGS / name), bf16=True)
    assert args.hf_deepspeed_config.is_zero3() == (stage == 3)
    trainer = InstructBlipTrainer(model=model, args=args)
    assert trainer.is_deepspeed_enabled
