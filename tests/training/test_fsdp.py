"""FSDP2 training that has run: `examples/configs/fsdp.json` under `InstructBlipTrainer`, 2 processes on CPU (gloo).

One ``torchrun --nproc_per_node 2`` launch trains a tiny model (Llama LLM, no dropout) for 4 SGD-with-momentum steps
of 2 x 2 samples three times: under DDP, under FSDP2 with a checkpoint at step 2, and under FSDP2 resumed from that
checkpoint. FSDP2 must give DDP's weights (float32 rounding apart: the gradients are reduce-scattered and the clipping
norm summed over shards instead of all-reduced), and the resumed run the uninterrupted run's weights bit for bit (the
same computation; the momentum buffers come back from the sharded optimizer checkpoint).

FSDP on CPU: torch's ``fully_shard`` runs on CPU with gloo, but accelerate (1.15) enables FSDP only for accelerators:
``AcceleratorState.__init__`` (accelerate/state.py) switches to ``DistributedType.FSDP`` and keeps the plugin only
inside ``elif self.distributed_type in [MULTI_GPU, MULTI_XPU, MULTI_NPU, ...]``; CPU processes are ``MULTI_CPU``, so
the plugin is dropped and transformers' Trainer trains with plain DDP (``model_wrapped`` is a
``DistributedDataParallel``). `InstructBlipTrainer` refuses that instead of training silently without sharding (first
test). `_CpuFsdpTrainer` lifts only that gate, after the Accelerator is built; everything else (accelerate's FSDP2
preparation: ``fully_shard`` of every layer the config names, then the root; Trainer's FSDP checkpoint save and load;
the full state dict gathered for ``save_model``) is the code GPU runs go through. DeepSpeed needs CUDA and is not run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import IMAGE_TOKEN, NUM_QUERY, QFORMER, assert_close_fp32, perturb_, tiny_config
from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration
from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

FSDP_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "configs" / "fsdp.json"
STEPS, SAVE_AT = 4, 2
PER_DEVICE = 2
MAX_GRAD_NORM = 0.2
TIMEOUT = 300
RUNS = ("ddp", "fsdp", "resumed")


def _model() -> InstructBlipForConditionalGeneration:
    """A tiny random model without dropout, the same in every process and run."""
    config = tiny_config("llama").to_dict()
    config["qformer_config"] = {**QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    torch.manual_seed(0)
    return perturb_(InstructBlipForConditionalGeneration(InstructBlipConfig(**config)))  # every weight matters


def _samples(count: int = 16) -> list[dict[str, torch.Tensor]]:
    """Image placeholders, a 3-token prompt and a 3-token target (the only labelled positions)."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(count):
        text = torch.randint(3, IMAGE_TOKEN, (6,), generator=generator)
        input_ids = torch.cat([torch.full((NUM_QUERY,), IMAGE_TOKEN), text])
        labels = torch.cat([torch.full((NUM_QUERY + 3,), -100), text[3:]])
        samples.append(
            {
                "pixel_values": torch.randn(3, 30, 30, generator=generator),
                "qformer_input_ids": torch.randint(1, QFORMER["vocab_size"], (6,), generator=generator),
                "input_ids": input_ids,
                "attention_mask": torch.ones_like(input_ids),
                "labels": labels,
            }
        )
    return samples


def _arguments(output_dir: Path, fsdp: bool) -> InstructBlipTrainingArguments:
    engine = {"fsdp": True, "fsdp_config": str(FSDP_CONFIG)} if fsdp else {}
    return InstructBlipTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=PER_DEVICE,
        max_steps=STEPS,
        optim="sgd",
        optim_args="momentum=0.9",  # optimizer state that a resumed run must get back from the checkpoint
        learning_rate=0.5,
        weight_decay=0.0,
        warmup_steps=0,
        lr_scheduler_type="constant",
        max_grad_norm=MAX_GRAD_NORM,  # clipped by the norm over all shards (the logged norms exceed it)
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="steps",
        save_steps=SAVE_AT,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        **engine,
    )


class _CpuFsdpTrainer(InstructBlipTrainer):
    """`InstructBlipTrainer` with accelerate's accelerator-only FSDP gate lifted (see the module docstring)."""

    def create_accelerator_and_postprocess(self) -> None:
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

        super().create_accelerator_and_postprocess()
        state = self.accelerator.state
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        # accelerate keeps the type in two shared states (AcceleratorState copies PartialState's at every creation).
        state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.is_fsdp_enabled = True


class _StepCounter(TrainerCallback):
    """Optimizer steps taken in this run (a resumed run's log history also holds the checkpoint's entries)."""

    def __init__(self):
        self.count = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.count += 1


def _sharding(trainer: InstructBlipTrainer) -> dict:
    """Which modules FSDP2 wrapped, and how much of one parameter this process holds."""
    from torch.distributed.fsdp import FSDPModule

    model = trainer.model
    wrapped = [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]
    weight = model.get_parameter("qformer.encoder.layer.0.attention.attention.query.weight")
    return {"wrapped": wrapped, "local_rows": weight.to_local().shape[0], "rows": weight.shape[0]}


def _train(root: Path, run: str) -> None:
    fsdp = run != "ddp"
    trainer_class = _CpuFsdpTrainer if fsdp else InstructBlipTrainer
    steps = _StepCounter()
    trainer = trainer_class(
        model=_model(), args=_arguments(root / run, fsdp), train_dataset=_samples(), callbacks=[steps]
    )
    trainer.train(resume_from_checkpoint=str(root / "fsdp" / f"checkpoint-{SAVE_AT}") if run == "resumed" else None)
    trainer.save_model()  # FSDP: the full state dict gathered from the shards, written by process 0
    facts = {
        "log": trainer.state.log_history,
        "steps_run": steps.count,
        "wrapper": type(trainer.model_wrapped).__name__,
    }
    if fsdp:
        facts["sharding"] = _sharding(trainer)
    if trainer.is_world_process_zero():
        (root / f"{run}.json").write_text(json.dumps(facts))


def _refusal(root: Path) -> None:
    """A plain `InstructBlipTrainer` given the FSDP config on CPU processes: it must refuse, not train with DDP."""
    try:
        InstructBlipTrainer(model=_model(), args=_arguments(root / "refused", fsdp=True), train_dataset=_samples())
        message = None
    except ValueError as error:
        message = str(error)
    if int(os.environ["RANK"]) == 0:
        (root / "refused.json").write_text(json.dumps({"error": message}))


def _distributed_main(root: Path) -> None:
    _refusal(root)
    for run in RUNS:
        _train(root, run)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One torchrun launch of this file: the refusal, then the DDP, FSDP2 and resumed FSDP2 runs."""
    root = tmp_path_factory.mktemp("fsdp")
    tests_dir = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tests_dir), os.environ.get("PYTHONPATH")])),
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    run = subprocess.run([*launcher, __file__, str(root)], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return root


def _facts(root: Path, run: str) -> dict:
    return json.loads((root / f"{run}.json").read_text())


def _losses(facts: dict) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in facts["log"] if "loss" in entry}


def test_fsdp_on_cpu_processes_is_refused_not_replaced_by_ddp(runs):
    error = _facts(runs, "refused")["error"]
    assert error is not None and "FSDP" in error and "DDP" in error


def test_fsdp2_shards_every_layer_the_config_names(runs):
    facts = _facts(runs, "fsdp")
    assert facts["wrapper"] == "FSDPInstructBlipForConditionalGeneration"  # Trainer's model_wrapped is the root
    expected = [""]  # the root, holding what no layer holds (embeddings, queries, projection, LayerNorms, head)
    expected += [f"vision_model.encoder.layers.{i}" for i in range(2)]
    expected += [f"qformer.encoder.layer.{i}" for i in range(3)]
    expected += ["language_model.model.embed_tokens"]  # accelerate carves the LLM's embedding and output head
    expected += [f"language_model.model.layers.{i}" for i in range(2)]
    expected += ["language_model.lm_head"]
    assert facts["sharding"]["wrapped"] == expected
    assert facts["sharding"]["local_rows"] * 2 == facts["sharding"]["rows"]  # each process holds half
    assert _facts(runs, "ddp")["wrapper"] == "DistributedDataParallel"


def test_fsdp2_trains_as_ddp_with_the_same_global_batch(runs):
    ddp, fsdp = _facts(runs, "ddp"), _facts(runs, "fsdp")
    assert list(_losses(fsdp)) == list(_losses(ddp)) == list(range(1, STEPS + 1))
    assert list(_losses(fsdp).values()) == pytest.approx(list(_losses(ddp).values()), rel=1e-5)
    norms = [entry["grad_norm"] for entry in ddp["log"] if "grad_norm" in entry]
    assert max(norms) > MAX_GRAD_NORM  # so clipping changed at least one step

    model = _model()
    initial = {name: p.detach() for name, p in model.named_parameters()}
    trainable = set(model.apply_trainable_policy())  # the paper's policy, which InstructBlipTrainer applies
    ddp_weights = load_file(runs / "ddp" / "model.safetensors")
    fsdp_weights = load_file(runs / "fsdp" / "model.safetensors")
    assert fsdp_weights.keys() == ddp_weights.keys() == initial.keys()
    moved = {name for name, value in ddp_weights.items() if not torch.equal(value, initial[name])}
    key_biases = {name for name in trainable if name.endswith("key.bias")}  # softmax ignores them: zero gradient
    assert trainable - key_biases <= moved <= trainable
    for name, value in ddp_weights.items():
        if name in trainable:
            assert_close_fp32(fsdp_weights[name], value, msg=lambda m, n=name: f"{n}: {m}")
        else:  # frozen: neither engine may touch it
            assert torch.equal(fsdp_weights[name], value), name


def test_resuming_from_the_fsdp2_checkpoint_reaches_the_uninterrupted_weights(runs):
    checkpoint = runs / "fsdp" / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file() and (checkpoint / "optimizer.bin").is_file()  # FSDP's
    resumed, uninterrupted = _facts(runs, "resumed"), _facts(runs, "fsdp")
    assert (resumed["steps_run"], uninterrupted["steps_run"]) == (STEPS - SAVE_AT, STEPS)
    assert _losses(resumed) == _losses(uninterrupted)  # steps 1-2 from the checkpoint, 3-4 trained again
    resumed_weights = load_file(runs / "resumed" / "model.safetensors")
    uninterrupted_weights = load_file(runs / "fsdp" / "model.safetensors")
    assert resumed_weights.keys() == uninterrupted_weights.keys()
    for name, value in uninterrupted_weights.items():
        assert torch.equal(resumed_weights[name], value), name


def test_the_fsdp2_saved_folder_names_our_remote_code(runs):
    """fully_shard turns the model into an instance of torch's ``FSDP<Name>`` subclass: the folder must still carry
    and name our modeling files (and no files of torch's)."""
    folder = runs / "fsdp"
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForImageTextToText"] == "modeling_instructblip.InstructBlipForConditionalGeneration"
    assert auto_map["AutoModel"] == auto_map["AutoModelForImageTextToText"]
    assert (folder / "modeling_instructblip.py").is_file() and not list(folder.glob("_fsdp*.py"))
    loaded = InstructBlipForConditionalGeneration.from_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    assert all(torch.equal(p, saved[name]) for name, p in loaded.state_dict().items() if name in saved)


if __name__ == "__main__":
    _distributed_main(Path(sys.argv[1]))
