"""The GPU at paper scale: ``hf_instructblip``'s fast path vs transformers' InstructBLIP in bf16, same random weights.

    python benchmarks/bench_gpu.py --output bench_gpu.json          # one H100/H200-class GPU: under 8 minutes
    python benchmarks/bench_gpu.py --tiny --output /tmp/smoke.json  # tiny shapes, CPU or GPU: a smoke test of seconds

The paper's shapes (arXiv 2305.06500 §2.5; LAVIS ``blip2_vicuna_instruct.py``, ``blip2_t5_instruct.py``), random
weights: EVA-CLIP ViT-g/14 at 224 px, 39 of its 40 layers (LAVIS drops the last), width 1408, MLP 6144, 16 heads;
a BERT-base Q-Former (12 layers, 768, cross-attention every 2nd layer) with 32 queries; and either a Vicuna-7B-shaped
Llama (32 layers, 4096, 32 heads, FFN 11008, vocabulary 32001) or a FlanT5-XL-shaped T5 v1.1 (gated-GELU, d_model
2048, 24 + 24 layers, 32 heads of 64, FFN 5120, vocabulary 32128). For each LLM, one after the other:

1. **ours**: `InstructBlipForConditionalGeneration` built directly on the GPU in bf16 (no fp32 CPU initialisation of
   7B parameters), SDPA attention, then the fast path (``model.hold_frozen_in(torch.bfloat16)``): the frozen vision
   tower and LLM stay in bf16, the trained parts (Q-Former, query tokens, projection, vision LayerNorm) go to fp32;
2. **transformers**: transformers' own ``InstructBlipForConditionalGeneration``, built on the GPU in bf16, SDPA, all
   of it in bf16 (its trained parts too), loaded with ours' state dict (every key, strict); both models must give
   the same eval loss on the training batch (to bf16 precision) before anything is timed;
3. for each: **training** (paper policy: only Q-Former, queries, projection and vision LayerNorm trained; AdamW; a
   plain loop of forward, backward, optimizer step on one fixed batch) in samples/s over ``--steps`` steps after
   ``--warmup``; **generation** (greedy, exactly ``--new-tokens`` new tokens per sample) in new tokens/s, median of
   ``--gen-repeats`` calls after one warm-up call; **peak memory** (``torch.cuda.max_memory_allocated``, weights
   included, counted from a reset before each measurement, with only that model on the GPU); **FLOPs** of one
   training step (forward + backward) and of one generate call counted by ``torch.utils.flop_counter.FlopCounterMode``
   (what each model executes); **MFU** = achieved FLOP/s over the card's dense bf16 peak (`bf16_peak_flops`: H100
   SXM / H200 989, H100 PCIe 756, H100 / H200 NVL 835, A100 312 TFLOP/s; any other card: "unknown peak").

Prompts: 32 image tokens + 32 text tokens and a 16-token answer for training (causal: one sequence of 80; T5: the
answer is the decoder's), 16 Q-Former instruction tokens, no padding; batch 32 for training, 8 for generation with 32
new tokens. Output: a markdown table (also ratios ours / transformers) printed, and with ``--output`` a JSON file of
every number. ``--tiny`` runs the same code on tiny shapes (CPU in a few seconds; tests/test_bench_gpu.py runs it):
a smoke test of the script, never a measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import transformers

from hf_instructblip import InstructBlipConfig, InstructBlipForConditionalGeneration

# ----- shapes ------------------------------------------------------------------------------------------------------
#: EVA-CLIP ViT-g/14 without its last layer (LAVIS ``eva_vit.py``, ``vit_precision``/``freeze_vit``), in
#: transformers' InstructBlipVisionConfig terms.
VIT_G = {
    "hidden_size": 1408,
    "intermediate_size": 6144,
    "num_hidden_layers": 39,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "layer_norm_eps": 1e-6,
}
#: BERT-base with cross-attention to the image every 2nd layer; vocabulary bert-base-uncased + "[DEC]".
QFORMER_BASE = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "cross_attention_frequency": 2,
    "vocab_size": 30523,
}
VICUNA_7B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32001,  # Vicuna's 32000 + the image token
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
FLANT5_XL = {
    "model_type": "t5",
    "d_model": 2048,
    "d_kv": 64,
    "d_ff": 5120,
    "num_layers": 24,
    "num_decoder_layers": 24,
    "num_heads": 32,
    "feed_forward_proj": "gated-gelu",
    "vocab_size": 32128,
    "tie_word_embeddings": False,
    "decoder_start_token_id": 0,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
#: LLM name -> (text config, image token id: the first id past the tokenizer's own tokens)
PAPER_LLMS = {"vicuna7b": (VICUNA_7B, 32000), "flant5xl": (FLANT5_XL, 32100)}

# Three different widths (vision 48, Q-Former 32, LLM 64), so that a width taken from the wrong part fails.
TINY_VISION = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 30,
    "patch_size": 2,
}
TINY_QFORMER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
TINY_QFORMER |= {"cross_attention_frequency": 2, "vocab_size": 50}
TINY_LLAMA = {**VICUNA_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
TINY_LLAMA |= {"num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 100}
TINY_T5 = {**FLANT5_XL, "d_model": 64, "d_kv": 8, "d_ff": 128, "num_layers": 2, "num_decoder_layers": 2}
TINY_T5 |= {"num_heads": 4, "vocab_size": 100}
TINY_LLMS = {"vicuna7b": (TINY_LLAMA, 99), "flant5xl": (TINY_T5, 99)}


@dataclass(frozen=True)
class Workload:
    """What is fed to the models and how often."""

    num_query_tokens: int = 32
    prompt_tokens: int = 32
    answer_tokens: int = 16
    qformer_tokens: int = 16
    train_batch: int = 32
    gen_batch: int = 8
    new_tokens: int = 32
    warmup: int = 3
    steps: int = 10
    gen_repeats: int = 3


TINY_WORKLOAD = Workload(4, 5, 3, 6, train_batch=2, gen_batch=2, new_tokens=4, warmup=1, steps=2, gen_repeats=1)


def build_configs(llm: str, tiny: bool, num_query_tokens: int) -> tuple[InstructBlipConfig, Any]:
    """Ours and transformers' config of the same model (the same sub-configs)."""
    vision, qformer = (TINY_VISION, TINY_QFORMER) if tiny else (VIT_G, QFORMER_BASE)
    text, image_token = (TINY_LLMS if tiny else PAPER_LLMS)[llm]
    kwargs: dict[str, Any] = {
        "vision_config": dict(vision),
        "qformer_config": dict(qformer),
        "text_config": dict(text),
        "num_query_tokens": num_query_tokens,
        "image_token_index": image_token,
    }
    return InstructBlipConfig(**kwargs), transformers.InstructBlipConfig(**kwargs)


# ----- peak FLOP/s of the card ---------------------------------------------------------------------------------------
#: (substring of ``torch.cuda.get_device_name()``, dense bf16 tensor-core TFLOP/s from NVIDIA's data sheets), first
#: match wins: the data sheets' bf16 figures "with sparsity" halved.
BF16_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("H100", 989.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),  # SXM ("NVIDIA H200"), GH200
    ("A100", 312.0),  # SXM4 and PCIe alike
)


def bf16_peak_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak in FLOP/s, or None for a card not in `BF16_PEAK_TFLOPS`."""
    for key, tflops in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


# ----- the two models ------------------------------------------------------------------------------------------------
def build_ours(config: InstructBlipConfig, device: torch.device) -> InstructBlipForConditionalGeneration:
    """Ours, created directly on ``device`` in bf16 (each tensor allocated once, there), then the fast path."""
    with device:
        model = InstructBlipForConditionalGeneration._from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16
        )
    model.hold_frozen_in(torch.bfloat16)  # the fast path: frozen parts bf16, trained parts fp32
    model.apply_trainable_policy()
    return model


def build_transformers(config: Any, device: torch.device, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """transformers' model in bf16 on ``device``, with ``state_dict``'s weights (strict) and the same trained set."""
    with device:
        model = transformers.InstructBlipForConditionalGeneration._from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16
        )
    model.load_state_dict(state_dict, strict=True)  # copy_ casts ours' fp32 trained parts to bf16
    return model


def freeze_like(model: torch.nn.Module, trainable: set[str]) -> None:
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)


# ----- inputs --------------------------------------------------------------------------------------------------------
def make_inputs(config: Any, work: Workload, batch: int, train: bool, device: torch.device) -> dict[str, torch.Tensor]:
    """Random images and token ids in the processor's layout: image placeholders first, then the prompt."""
    generator = torch.Generator().manual_seed(0)
    image_size = config.vision_config.image_size
    # Ordinary tokens only: below the image token and above the special ids (0-2).
    words = min(config.image_token_index, config.text_config.vocab_size)

    def tokens(length: int, high: int = words) -> torch.Tensor:
        return torch.randint(3, high, (batch, length), generator=generator)

    images = torch.full((batch, work.num_query_tokens), config.image_token_index)
    inputs = {
        "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=generator),
        "qformer_input_ids": tokens(work.qformer_tokens, config.qformer_config.vocab_size),
        "input_ids": torch.cat([images, tokens(work.prompt_tokens)], dim=1),
    }
    if train:
        answer = tokens(work.answer_tokens)
        if config.use_decoder_only_language_model:  # the answer follows the prompt; only it is labelled
            ignored = torch.full_like(inputs["input_ids"], -100)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
            inputs["labels"] = torch.cat([ignored, answer], dim=1)
        else:  # T5: the answer is the decoder's
            inputs["labels"] = answer
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["qformer_attention_mask"] = torch.ones_like(inputs["qformer_input_ids"])
    return {key: value.to(device) for key, value in inputs.items()}


# ----- measurements --------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def count_flops(run: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    model.eval()
    return float(model(**batch).loss)


def measure_training(model: torch.nn.Module, batch: dict[str, torch.Tensor], work: Workload, device: torch.device):
    """samples/s, peak GiB and FLOPs per step of the plain training loop (AdamW over the trained parameters)."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def forward_backward() -> torch.Tensor:
        loss = model(**batch).loss
        loss.backward()
        return loss

    def step() -> torch.Tensor:
        loss = forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    reset_peak(device)
    for _ in range(work.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(work.steps):
        loss = step()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = peak_gib(device)
    flops = count_flops(forward_backward)  # what one step executes (the optimizer's element-wise work is not counted)
    optimizer.zero_grad(set_to_none=True)
    return {
        "train_samples_per_s": work.train_batch * work.steps / seconds,
        "train_step_s": seconds / work.steps,
        "train_peak_gib": peak,
        "train_flops_per_step": flops,
        "train_last_loss": float(loss.detach()),
    }


def measure_generation(model: Any, batch: dict[str, torch.Tensor], work: Workload, device: torch.device):
    """New tokens/s of greedy generation forced to ``work.new_tokens`` tokens per sample, and its peak GiB and FLOPs."""
    model.eval()
    settings = {
        "max_new_tokens": work.new_tokens,
        "min_new_tokens": work.new_tokens,
        "do_sample": False,
        "num_beams": 1,
    }

    def generate() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(**batch, **settings)

    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:  # FlopCounterMode's module tracker trips on parameters requiring grad under no_grad
        parameter.requires_grad_(False)
    reset_peak(device)
    generated = generate()  # warm-up
    times = []
    for _ in range(work.gen_repeats):
        synchronize(device)
        start = time.perf_counter()
        generate()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = peak_gib(device)
    flops = count_flops(generate)
    for parameter in trainable:
        parameter.requires_grad_(True)
    seconds = statistics.median(times)
    causal = model.config.use_decoder_only_language_model
    expected = (batch["input_ids"].shape[1] if causal else 1) + work.new_tokens  # prompt or decoder start + new
    if tuple(generated.shape) != (work.gen_batch, expected):
        raise RuntimeError(f"generate returned {tuple(generated.shape)}, expected {(work.gen_batch, expected)}")
    return {
        "gen_tokens_per_s": work.gen_batch * work.new_tokens / seconds,
        "gen_call_s": seconds,
        "gen_peak_gib": peak,
        "gen_flops_per_call": flops,
        "gen_output_shape": list(generated.shape),
    }


@dataclass
class Row:
    llm: str
    model: str
    eval_loss: float
    metrics: dict[str, Any] = field(default_factory=dict)


def measure(name: str, llm: str, model: torch.nn.Module, work: Workload, config: Any, device: torch.device) -> Row:
    train_batch = make_inputs(config, work, work.train_batch, train=True, device=device)
    row = Row(llm, name, eval_loss(model, train_batch))
    row.metrics |= measure_training(model, train_batch, work, device)
    gen_batch = make_inputs(config, work, work.gen_batch, train=False, device=device)
    row.metrics |= measure_generation(model, gen_batch, work, device)
    print(f"  {llm} / {name}: {json.dumps(row.metrics)}", file=sys.stderr, flush=True)
    return row


def run_llm(llm: str, tiny: bool, work: Workload, device: torch.device) -> list[Row]:
    """Ours, then transformers' on ours' weights (both resident only while the weights are copied)."""
    ours_config, their_config = build_configs(llm, tiny, work.num_query_tokens)
    torch.manual_seed(0)
    ours = build_ours(ours_config, device)
    trainable = {name for name, p in ours.named_parameters() if p.requires_grad}
    rows = [measure("ours", llm, ours, work, ours_config, device)]
    theirs = build_transformers(their_config, device, ours.state_dict())
    freeze_like(theirs, trainable)
    del ours
    reset_peak(device)
    rows.append(measure("transformers", llm, theirs, work, their_config, device))
    del theirs
    reset_peak(device)
    ours_loss, their_loss = rows[0].eval_loss, rows[1].eval_loss
    # The same weights; only the Q-Former's precision differs (and a bf16 LLM loss has ~0.4% resolution).
    if not math.isclose(ours_loss, their_loss, rel_tol=0.03):
        raise RuntimeError(f"{llm}: eval loss {ours_loss} (ours) vs {their_loss} (transformers): not the same model")
    return rows


# ----- report --------------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    peak = bf16_peak_flops(name) if device.type == "cuda" else None
    return {
        "device": name,
        "bf16_peak_tflops": peak / 1e12 if peak else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }


def add_mfu(rows: list[Row], peak_tflops: float | None) -> None:
    for row in rows:
        m = row.metrics
        train_flops_per_s = m["train_flops_per_step"] / m["train_step_s"]
        gen_flops_per_s = m["gen_flops_per_call"] / m["gen_call_s"]
        m["train_tflops_per_s"], m["gen_tflops_per_s"] = train_flops_per_s / 1e12, gen_flops_per_s / 1e12
        m["train_mfu"] = train_flops_per_s / (peak_tflops * 1e12) if peak_tflops else None
        m["gen_mfu"] = gen_flops_per_s / (peak_tflops * 1e12) if peak_tflops else None


def ratios(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Ours over transformers' per LLM: speeds (> 1: ours faster) and peak memory (< 1: ours smaller)."""
    result = {}
    for llm in dict.fromkeys(row.llm for row in rows):
        ours, theirs = (
            next(r.metrics for r in rows if (r.llm, r.model) == (llm, m)) for m in ("ours", "transformers")
        )
        result[llm] = {
            key: ours[key] / theirs[key]
            for key in ("train_samples_per_s", "gen_tokens_per_s", "train_peak_gib", "gen_peak_gib")
            if ours[key] is not None and theirs[key]
        }
    return result


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[Row], env: dict[str, Any], tiny: bool) -> str:
    peak = env["bf16_peak_tflops"]
    versions = f"torch {env['torch']}, transformers {env['transformers']}"
    if tiny:
        title = f"**Smoke test (--tiny shapes) on {env['device']}, {versions}: not a measurement.**"
    else:
        title = f"{env['device']} (dense bf16 peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown peak'}), {versions}."
    lines = [
        title,
        "",
        "| LLM | model | train samples/s | train peak GiB | train TFLOP/step | train MFU | gen tokens/s | "
        "gen peak GiB | gen MFU | eval loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mfu = "unknown peak"
    for row in rows:
        m = row.metrics
        train_mfu = _cell(m["train_mfu"] and 100 * m["train_mfu"], ".1f") + "%" if peak else mfu
        gen_mfu = _cell(m["gen_mfu"] and 100 * m["gen_mfu"], ".2f") + "%" if peak else mfu
        lines.append(
            f"| {row.llm} | {row.model} | {m['train_samples_per_s']:.2f} | {_cell(m['train_peak_gib'], '.1f')} | "
            f"{m['train_flops_per_step'] / 1e12:.3g} | {train_mfu} | {m['gen_tokens_per_s']:.1f} | "
            f"{_cell(m['gen_peak_gib'], '.1f')} | {gen_mfu} | {row.eval_loss:.4f} |"
        )
    lines.append("")
    for llm, values in ratios(rows).items():
        text = ", ".join(f"{key} {value:.2f}x" for key, value in values.items())
        lines.append(f"ours / transformers, {llm}: {text}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a smoke test (CPU: a few seconds)")
    parser.add_argument("--llms", nargs="+", choices=sorted(PAPER_LLMS), default=["vicuna7b", "flant5xl"])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (--tiny only)")
    parser.add_argument("--train-batch", type=int, default=None, help="default: 32 (tiny: 2)")
    parser.add_argument("--gen-batch", type=int, default=None, help="default: 8 (tiny: 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps; default: 10 (tiny: 2)")
    parser.add_argument("--output", default=None, help="write every number to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("Paper scale needs a GPU (two 8B-parameter models in bf16); on CPU use --tiny.")
    work = TINY_WORKLOAD if args.tiny else Workload()
    overrides = {"train_batch": args.train_batch, "gen_batch": args.gen_batch, "steps": args.steps}
    work = Workload(**{**asdict(work), **{key: value for key, value in overrides.items() if value is not None}})
    env = environment(device)
    rows = [row for llm in args.llms for row in run_llm(llm, args.tiny, work, device)]
    add_mfu(rows, env["bf16_peak_tflops"])
    report = table(rows, env, args.tiny)
    print(report)
    result = {
        "smoke_test": args.tiny,
        "environment": env,
        "workload": asdict(work),
        "rows": [asdict(row) for row in rows],
        "ratios": ratios(rows),
        "table": report,
    }
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=2)
    return result


if __name__ == "__main__":
    main()
