"""Training throughput: ``hf_instructblip`` vs what a user writes without it, on the same weights and data.

    make bench                                                  # this benchmark (and bench_model.py)
    .venv/bin/python benchmarks/bench_train.py                  # full config: ~15 min on 2 idle cores
    .venv/bin/python benchmarks/bench_train.py --quick          # tiny config: a smoke test
    .venv/bin/python benchmarks/bench_train.py --repeats 3 --steps 8 --output /tmp/train.md
    .venv/bin/python benchmarks/bench_train.py --variants stock-fp32 ours-fast --repeats 8   # two variants, more rounds

The variants, each a real ``Trainer.train()`` run in its own process (so peak memory is its own):

* ``stock-fp32``: transformers' ``InstructBlipForConditionalGeneration`` + transformers' ``InstructBlipProcessor`` +
  a plain ``transformers.Trainer`` + a hand-written collator (labels = input ids with the image, prompt and padding
  positions set to -100; the Q-Former reads the instruction), vision tower and LLM frozen by hand, fp32;
* ``stock-bf16``: the same with ``bf16=True`` (autocast: every op of the model, frozen parts included, cast to bf16
  at every step; fp32 weights);
* ``ours-fp32``: our model, processor and ``InstructBlipDataCollator`` under ``InstructBlipTrainer`` (paper policy),
  fp32, random batches (``frozen_dtype: float32``, ``train_sampling_strategy: random``); in training mode a
  plain-head causal LLM applies its output head at the target positions only;
* ``ours-fast``: the same with the fast path, our defaults for the train command: the frozen vision tower and LLM
  held in bf16 where the CPU runs it natively (``frozen_dtype: auto``; the report says what it resolved to), trained
  parts in fp32, batches grouped by length (``train_sampling_strategy: group_by_length``);
* ``+cache``: ours reading the frozen vision tower's outputs from a ``VisionFeatureCache`` built once beforehand (in
  the tower's dtype: fp32, or bf16 for the fast path; build times reported separately);
* ``ours-fast+checkpointing``: the fast path with ``gradient_checkpointing=True`` (non-reentrant): memory traded for
  speed, the LLM's activations recomputed in the backward instead of kept.

Same config (ViT 12x384 @ 224 px, Q-Former 6x384, a SmolLM2-135M-shaped LLM with SmolLM2's real tokenizer, 32
query tokens), batch 8, the same synthetic held-in samples (instruction + short answer, 224 px images), AdamW,
``dataloader_num_workers=0``. Throughput is samples/s over the timed steps after the warm-up steps, collation
included (wall time between step ends). Peak memory, four ways: the peak tensor memory of one more step after the
timed ones (`TensorPeak`: what a GPU reports as ``max_memory_allocated``); the process's resident set size sampled
every 5 ms during ``train()`` (weights included: ours-fast holds its frozen weights in half the bytes); the same above
the runtime's own (the size once Python, torch, transformers, datasets and hf_instructblip are imported, before the
model is loaded: the same libraries in every variant), which is what the model and its training hold, plus the free
memory glibc keeps; and its increase over the size right before ``train()``. FLOPs per step are counted once with
``torch.utils.flop_counter.FlopCounterMode`` on one forward + backward of a training batch (what the variant
executes, split by the dtype each matmul runs in); MFU is the time the step would take at the matmul peak of each
dtype (best of several 2048 x 2048 ``torch.mm`` in fp32 and in bf16, measured in the same run) over the time it
takes. Variants run in turn, ``--repeats`` rounds, medians reported; rounds interleave the variants so machine load
hits all alike. The share of the LLM's computed positions
that are padding is reported for random batches and for length-grouped ones, on this data and on a larger draw.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import transformers

HERE = Path(__file__).resolve().parent
#: name -> (ours?, fast path?, feature cache?); stock-bf16 is stock with bf16=True.
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "stock-fp32": (False, False, False),
    "stock-bf16": (False, False, False),
    "ours-fp32": (True, False, False),
    "ours-fp32+cache": (True, False, True),
    "ours-fast": (True, True, False),
    "ours-fast+cache": (True, True, True),
    "ours-fast+checkpointing": (True, True, False),
}
#: Training arguments a variant adds to its fast path: the frozen LLM's activations recomputed in the backward.
CHECKPOINTING = {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}
BATCH = 8


# ----- set-up (parent process) -----------------------------------------------------------------------------------
def build_config(quick: bool) -> transformers.InstructBlipConfig:
    """transformers' config of the benchmark model; the LLM vocabulary is SmolLM2's tokenizer + the image token."""
    sys.path.insert(0, str(HERE))
    from bench_model import build_config as model_config

    config = model_config(quick)
    config.text_config.vocab_size = 49153  # SmolLM2's 49152 tokens + "<image>"
    config.image_token_index = 49152
    config.qformer_config.vocab_size = 30523  # bert-base-uncased + "[DEC]"
    return config


def prepare(folder: Path, quick: bool, num_samples: int) -> None:
    """Random weights, the two processors (real tokenizers) and the training samples, written to ``folder``."""
    from hf_instructblip import HfInstructBlipProcessor, InstructBlipImageProcessor
    from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
    from hf_instructblip.data.mixture import concatenate_mixture
    from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture

    config = build_config(quick)
    torch.manual_seed(0)
    transformers.InstructBlipForConditionalGeneration(config).save_pretrained(folder / "model")

    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    qformer_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path(), truncation_side="left")
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    size = config.vision_config.image_size
    ours = HfInstructBlipProcessor(
        InstructBlipImageProcessor(size={"height": size, "width": size}),
        tokenizer,
        qformer_tokenizer,
        num_query_tokens=config.num_query_tokens,
        image_token="<image>",
    )
    ours.save_pretrained(folder / "ours_processor")
    stock = transformers.InstructBlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": size, "width": size}),
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=config.num_query_tokens,
    )
    stock.save_pretrained(folder / "stock_processor")

    per_task = -(-num_samples // len(SYNTHETIC_HELD_IN))
    parts = synthetic_mixture(SYNTHETIC_HELD_IN, per_task, seed=0, image_size=max(size, 32))
    data = concatenate_mixture(parts).shuffle(seed=0).select(range(num_samples))
    data.save_to_disk(str(folder / "data"))


def matmul_peak_flops(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a square ``torch.mm`` in ``dtype`` on this machine (an MFU denominator)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


# ----- one variant (child process) --------------------------------------------------------------------------------
class StockCollator:
    """What a user writes for transformers' InstructBLIP: processor on prompt + answer, prompt positions masked."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.eos = processor.tokenizer.eos_token

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [s["instruction"] for s in samples]
        texts = [f"{p} {s['target']}{self.eos}" for p, s in zip(prompts, samples)]
        images = [s["images"][0].convert("RGB") for s in samples]
        batch = self.processor(images=images, text=texts, padding=True, return_tensors="pt")
        qformer = self.processor.qformer_tokenizer(prompts, padding=True, return_tensors="pt")
        batch["qformer_input_ids"], batch["qformer_attention_mask"] = qformer.input_ids, qformer.attention_mask
        labels = batch["input_ids"].clone()
        num_image = self.processor.num_query_tokens
        for row, prompt in enumerate(prompts):
            prompt_length = len(self.processor.tokenizer(prompt).input_ids)
            labels[row, : num_image + prompt_length] = -100
        labels[batch["attention_mask"] == 0] = -100
        batch["labels"] = labels
        return dict(batch)


class StepClock(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


class TensorPeak(transformers.TrainerCallback):
    """Peak bytes of live tensors over one training step (forward, backward, clipping, optimizer step): the tensors
    held when it starts (parameters, buffers, optimizer state) plus the largest rise of the bytes torch's allocator
    hands out during it (the profiler's memory events): what a GPU reports as ``max_memory_allocated``, here on a CPU,
    without the runtime and the allocator's retained free memory that RSS also counts. The batch is not counted."""

    def __init__(self, step: int) -> None:
        self.step, self.held, self.rise = step, 0, 0
        self._profile: Any = None

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if state.global_step + 1 != self.step:
            return
        storages = {}  # storage address -> bytes (views share one)
        tensors = [*model.parameters(), *model.buffers()]
        tensors += [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        for tensor in tensors:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        self.held = sum(storages.values())
        self._profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True)
        self._profile.start()

    def on_step_end(self, args, state, control, **kwargs):
        if self._profile is None:
            return
        self._profile.stop()
        events = self._profile.profiler.kineto_results.events()
        memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        live = 0
        for _, change in memory:
            live += change
            self.rise = max(self.rise, live)
        self._profile = None

    @property
    def peak(self) -> int:
        return self.held + self.rise


class PeakRss:
    """Resident set size sampled every 5 ms in a thread; ``peak`` in bytes."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def load_variant(variant: str, folder: Path) -> tuple[Any, Any, type[transformers.Trainer], type[Any], dict]:
    """(model, collator, trainer class, training-arguments class, extra arguments) of one variant."""
    ours, fast, cached = VARIANTS[variant]
    if not ours:
        model = transformers.InstructBlipForConditionalGeneration.from_pretrained(folder / "model")
        for name, param in model.named_parameters():  # the paper's policy, by hand
            param.requires_grad_(not name.startswith(("vision_model.", "language_model.")))
        stock_processor = transformers.InstructBlipProcessor.from_pretrained(folder / "stock_processor")
        stock_extra: dict[str, Any] = {"bf16": variant == "stock-bf16"}
        return model, StockCollator(stock_processor), transformers.Trainer, transformers.TrainingArguments, stock_extra

    from hf_instructblip import HfInstructBlipProcessor, InstructBlipForConditionalGeneration
    from hf_instructblip.data.collator import InstructBlipDataCollator
    from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

    model = InstructBlipForConditionalGeneration.from_pretrained(folder / "model")
    frozen_dtype = str(model.hold_frozen_in("auto" if fast else "float32")).removeprefix("torch.")
    processor = HfInstructBlipProcessor.from_pretrained(folder / "ours_processor")
    cache = None
    if cached:
        from hf_instructblip.data.feature_cache import VisionFeatureCache

        cache = VisionFeatureCache.load(folder / f"cache-{frozen_dtype}", model=model, processor=processor)
    collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache, augment_images=False)
    extra: dict[str, Any] = {
        "frozen_dtype": frozen_dtype,
        "train_sampling_strategy": "group_by_length" if fast else "random",
    }
    if variant.endswith("+checkpointing"):
        extra.update(CHECKPOINTING)
    return model, collator, InstructBlipTrainer, InstructBlipTrainingArguments, extra


class DtypeFlopCounter:
    """FLOPs of what runs inside it, split by the dtype of each op's first floating input (bf16 matmuls apart)."""

    def __init__(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        by_dtype: Counter[str] = Counter()

        class Counting(FlopCounterMode):
            def _count_flops(self, func_packet, out, args, kwargs):  # type: ignore[no-untyped-def]
                if func_packet in self.flop_registry:
                    flops = self.flop_registry[func_packet](*args, **kwargs, out_val=out)
                    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
                    by_dtype[str(dtype).removeprefix("torch.")] += int(flops)
                return super()._count_flops(func_packet, out, args, kwargs)

        self.by_dtype = by_dtype
        self.mode = Counting(display=False)

    def __enter__(self) -> DtypeFlopCounter:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def count_flops(model: Any, batch: dict[str, torch.Tensor], autocast: bool) -> dict[str, int]:
    model.train()
    with DtypeFlopCounter() as counter, torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return dict(counter.by_dtype)


def run_variant(variant: str, folder: Path, warmup: int, steps: int) -> dict[str, Any]:
    import datasets

    import hf_instructblip.training  # noqa: F401  # every variant's runtime baseline holds the same libraries

    runtime = PeakRss.now()
    torch.manual_seed(0)
    model, collator, trainer_class, arguments_class, extra = load_variant(variant, folder)
    data = datasets.load_from_disk(str(folder / "data"))
    clock = StepClock()
    args = arguments_class(  # the same fields for all: no warm-up, AdamW, the paper's lr and weight decay
        output_dir=str(folder / f"run-{variant}"),
        per_device_train_batch_size=BATCH,
        max_steps=warmup + steps + 1,  # the last step is profiled for its tensor memory, not timed
        learning_rate=1e-5,
        weight_decay=0.05,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        warmup_steps=0,
        seed=0,
        **extra,
    )
    tensors = TensorPeak(step=warmup + steps + 1)
    trainer = trainer_class(
        model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[clock, tensors]
    )
    # after the trainer froze what it freezes (and held what it holds)
    flops = count_flops(model, collator([data[i] for i in range(BATCH)]), autocast=bool(extra.get("bf16")))
    before = PeakRss.now()
    with PeakRss() as rss:
        trainer.train()
    timed = clock.ends[warmup - 1 : warmup + steps]  # the warm-up steps' ends bracket the first timed step
    seconds_per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    return {
        "samples_per_s": BATCH / seconds_per_step,
        "peak_mib": rss.peak / 2**20,
        "increase_mib": (rss.peak - before) / 2**20,
        "above_runtime_mib": (rss.peak - runtime) / 2**20,
        "tensor_peak_mib": tensors.peak / 2**20,
        "flops": flops,
        "frozen_dtype": extra.get("frozen_dtype", "bfloat16 (autocast)" if extra.get("bf16") else "float32"),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def build_cache(folder: Path, frozen_dtype: str) -> dict[str, Any]:
    import datasets

    from hf_instructblip import HfInstructBlipProcessor, InstructBlipForConditionalGeneration
    from hf_instructblip.data.feature_cache import VisionFeatureCache

    model = InstructBlipForConditionalGeneration.from_pretrained(folder / "model").eval()
    dtype = str(model.hold_frozen_in(frozen_dtype)).removeprefix("torch.")
    processor = HfInstructBlipProcessor.from_pretrained(folder / "ours_processor")
    start = time.perf_counter()
    VisionFeatureCache.build(
        model, processor, datasets.load_from_disk(str(folder / "data")), folder / f"cache-{dtype}"
    )
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in (folder / f"cache-{dtype}").glob("shard-*"))
    return {"dtype": dtype, "seconds": seconds, "mib": size / 2**20}


def padding_shares(folder: Path, extra_samples: int) -> dict[str, dict[str, float]]:
    """Share of the LLM's computed positions that are padding, random vs length-grouped batches of 8: on the
    benchmark's samples and on a larger draw of the same synthetic tasks."""
    import datasets

    from hf_instructblip import HfInstructBlipProcessor
    from hf_instructblip.data.collator import InstructBlipDataCollator
    from hf_instructblip.data.length_grouping import LengthGroupedSampler, padding_share
    from hf_instructblip.data.mixture import concatenate_mixture
    from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture

    processor = HfInstructBlipProcessor.from_pretrained(folder / "ours_processor")
    collator = InstructBlipDataCollator(processor, decoder_only=True, augment_images=False)
    per_task = -(-extra_samples // len(SYNTHETIC_HELD_IN))
    larger = concatenate_mixture(synthetic_mixture(SYNTHETIC_HELD_IN, per_task, seed=1, image_size=32))
    shares = {}
    for name, data in (("benchmark", datasets.load_from_disk(str(folder / "data"))), ("larger", larger)):
        lengths = collator.sample_lengths(data)
        image = processor.num_query_tokens
        random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
        grouped = list(LengthGroupedSampler(lengths, BATCH, seed=0))
        shares[name] = {
            "samples": len(lengths),
            "random": padding_share(lengths, random_order, BATCH, fixed=image),
            "grouped": padding_share(lengths, grouped, BATCH, fixed=image),
        }
    return shares


# ----- driver --------------------------------------------------------------------------------------------------
def child(args: argparse.Namespace, *command: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", *command, "--folder", str(args.folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        sys.exit(f"variant {command} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(
    results: dict[str, list[dict[str, Any]]],
    caches: list[dict[str, Any]],
    peaks: dict[str, float],
    shares: dict[str, dict[str, float]],
    load: tuple[float, float],
    args: argparse.Namespace,
) -> str:
    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    def flops(variant: str) -> dict[str, float]:
        names = {d for r in results[variant] for d in r["flops"]}
        return {d: statistics.median(r["flops"].get(d, 0) for r in results[variant]) for d in names}

    variants = list(results)  # stock-fp32 first: every ratio is to it (and to stock-bf16, where it ran)
    fast_dtype = next((r[0]["frozen_dtype"] for v, r in results.items() if v.startswith("ours-fast")), "-")
    base = {v: median(v, "samples_per_s") for v in ("stock-fp32", "stock-bf16") if v in results}

    def versus_bf16(speed: float) -> str:
        return f"{speed / base['stock-bf16']:.2f}x" if "stock-bf16" in base else "-"

    keys = ("tensor_peak_mib", "peak_mib", "above_runtime_mib", "increase_mib")
    memory = {key: median("stock-fp32", key) for key in keys}
    lines = [
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, transformers {transformers.__version__}; batch {BATCH}, {args.warmup} warm-up + "
        f"{args.steps} timed steps, {args.repeats} round(s); matmul peak fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s; ours-fast held the frozen parts in {fast_dtype}; load average "
        f"{load[0]:.2f} before, {load[1]:.2f} after.",
        "",
        "| variant | samples/s | vs stock fp32 | vs stock bf16 | peak tensor memory (vs stock fp32) | peak RSS | "
        "above the runtime | increase in train | GFLOP/step (bf16 share) | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        speed = median(variant, "samples_per_s")
        counted = flops(variant)
        total = sum(counted.values())
        at_peak = sum(f / peaks.get(d, peaks["float32"]) for d, f in counted.items())  # seconds at the peaks
        mib = " | ".join(
            f"{median(variant, key):.0f} MiB ({median(variant, key) / memory[key]:.2f}x)" for key in memory
        )
        lines.append(
            f"| {variant} | {speed:.2f} | {speed / base['stock-fp32']:.2f}x | {versus_bf16(speed)} | "
            f"{mib} | "
            f"{total / 1e9:.1f} ({counted.get('bfloat16', 0) / total:.0%}) | {at_peak * speed / BATCH:.1%} |"
        )
    rounds = "; ".join(f"{v}: " + "/".join(f"{r['samples_per_s']:.2f}" for r in results[v]) for v in variants)
    builds = ", ".join(f"{c['dtype']} {c['seconds']:.1f} s, {c['mib']:.0f} MiB" for c in caches)
    lines += ["", f"Per-round samples/s: {rounds}.", f"Feature cache build (once, {args.samples} samples): {builds}."]
    lines += ["", "Padding share of the LLM's computed positions (image tokens included), batches of 8:"]
    for name, share in shares.items():
        lines.append(
            f"- {name} data ({share['samples']} samples): random batches {share['random']:.1%}, length-grouped "
            f"{share['grouped']:.1%}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config: a smoke test")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="default: all; stock-fp32 always"
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--padding-samples", type=int, default=1000, help="the larger draw for the padding share")
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.variants = {"stock-fp32", *args.variants}  # the reference of every ratio
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        if args.child[0] == "cache":
            print(json.dumps(build_cache(args.folder, args.child[1])))
        else:
            variant, warmup, steps = args.child[0], int(args.child[1]), int(args.child[2])
            print(json.dumps(run_variant(variant, args.folder, warmup, steps)))
        return
    args.samples = BATCH * (args.warmup + args.steps)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        args.folder = Path(tmp)
        prepare(args.folder, args.quick, args.samples)
        caches = [child(args, "cache", dtype) for dtype in ("float32", "auto")]
        shares = padding_shares(args.folder, args.padding_samples)
        results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS if v in args.variants}
        for round_ in range(args.repeats):
            order = list(results) if round_ % 2 == 0 else list(reversed(results))
            for variant in order:
                results[variant].append(child(args, variant, str(args.warmup), str(args.steps)))
        peaks = {"float32": matmul_peak_flops(torch.float32), "bfloat16": matmul_peak_flops(torch.bfloat16)}
        text = report(results, caches, peaks, shares, (load_before, os.getloadavg()[0]), args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
