"""Training throughput: ``hf_instructblip`` vs what a user writes without it, on the same weights and data.

    .venv/bin/python benchmarks/bench_train.py                 # full config: ~10 min on 2 idle cores
    .venv/bin/python benchmarks/bench_train.py --quick         # tiny config: a smoke test
    .venv/bin/python benchmarks/bench_train.py --repeats 3 --steps 8 --output /tmp/train.md

The three variants, each a real ``Trainer.train()`` run in its own process (so peak memory is its own):

* ``stock``: transformers' ``InstructBlipForConditionalGeneration`` + transformers' ``InstructBlipProcessor`` + a
  plain ``transformers.Trainer`` + a hand-written collator (labels = input ids with the image, prompt and padding
  positions set to -100; the Q-Former reads the instruction), vision tower and LLM frozen by hand;
* ``ours``: our model, processor and ``InstructBlipDataCollator`` under ``InstructBlipTrainer`` (paper policy);
  in training mode a plain-head causal LLM applies its output head at the target positions only;
* ``ours+cache``: the same, reading the frozen vision tower's outputs from a ``VisionFeatureCache`` built once
  beforehand (its build time is reported separately: it is paid once, then every epoch reads it).

Same config (ViT 12x384 @ 224 px, Q-Former 6x384, a SmolLM2-135M-shaped LLM with SmolLM2's real tokenizer, 32
query tokens), fp32, batch 8, the same synthetic held-in samples (instruction + short answer, 224 px images) in the
same order, AdamW, ``dataloader_num_workers=0``. Throughput is samples/s over the timed steps after the warm-up
steps, collation included (wall time between step ends). Peak memory is the resident set size sampled every 5 ms
during ``train()`` minus the size right before it (model and data already loaded). FLOPs per step are counted once
with ``torch.utils.flop_counter.FlopCounterMode`` on one forward+backward of a training batch (what the variant
executes: ours skips the prompt positions' vocabulary projection); MFU is achieved FLOP/s over the fp32 matmul peak
of this machine measured in the same run (best of several 2048x2048 ``torch.mm``). Variants run in turn, ``--repeats``
rounds, medians reported; rounds interleave the variants so machine load hits all alike.
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
from pathlib import Path
from typing import Any

import torch
import transformers

HERE = Path(__file__).resolve().parent
VARIANTS = ("stock", "ours", "ours+cache")
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


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of a square ``torch.mm`` on this machine (the MFU denominator)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
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


def load_variant(variant: str, folder: Path) -> tuple[Any, Any, type[transformers.Trainer], type[Any]]:
    """(model, collator, trainer class, training-arguments class) of one variant."""
    if variant == "stock":
        model = transformers.InstructBlipForConditionalGeneration.from_pretrained(folder / "model")
        for name, param in model.named_parameters():  # the paper's policy, by hand
            param.requires_grad_(not name.startswith(("vision_model.", "language_model.")))
        processor = transformers.InstructBlipProcessor.from_pretrained(folder / "stock_processor")
        return model, StockCollator(processor), transformers.Trainer, transformers.TrainingArguments

    from hf_instructblip import HfInstructBlipProcessor, InstructBlipForConditionalGeneration
    from hf_instructblip.data.collator import InstructBlipDataCollator
    from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

    model = InstructBlipForConditionalGeneration.from_pretrained(folder / "model")
    processor = HfInstructBlipProcessor.from_pretrained(folder / "ours_processor")
    cache = None
    if variant == "ours+cache":
        from hf_instructblip.data.feature_cache import VisionFeatureCache

        cache = VisionFeatureCache.load(folder / "cache", model=model, processor=processor)
    collator = InstructBlipDataCollator.for_model(model, processor, feature_cache=cache)
    return model, collator, InstructBlipTrainer, InstructBlipTrainingArguments


def count_flops(model: Any, batch: dict[str, torch.Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def run_variant(variant: str, folder: Path, warmup: int, steps: int) -> dict[str, float]:
    import datasets

    torch.manual_seed(0)
    model, collator, trainer_class, arguments_class = load_variant(variant, folder)
    data = datasets.load_from_disk(str(folder / "data"))
    clock = StepClock()
    args = arguments_class(  # the same fields for all: no warm-up, AdamW, the paper's lr and weight decay
        output_dir=str(folder / f"run-{variant}"),
        per_device_train_batch_size=BATCH,
        max_steps=warmup + steps,
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
    )
    trainer = trainer_class(model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[clock])
    flops = count_flops(model, collator([data[i] for i in range(BATCH)]))  # after the trainer froze what it freezes
    before = PeakRss.now()
    with PeakRss() as rss:
        trainer.train()
    timed = clock.ends[warmup - 1 :]  # the warm-up steps' ends bracket the first timed step
    seconds_per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    return {
        "samples_per_s": BATCH / seconds_per_step,
        "peak_mib": (rss.peak - before) / 2**20,
        "flops_per_step": flops,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def build_cache(folder: Path) -> float:
    import datasets

    from hf_instructblip import HfInstructBlipProcessor, InstructBlipForConditionalGeneration
    from hf_instructblip.data.feature_cache import VisionFeatureCache

    model = InstructBlipForConditionalGeneration.from_pretrained(folder / "model").eval()
    processor = HfInstructBlipProcessor.from_pretrained(folder / "ours_processor")
    start = time.perf_counter()
    VisionFeatureCache.build(model, processor, datasets.load_from_disk(str(folder / "data")), folder / "cache")
    return time.perf_counter() - start


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


def report(results: dict[str, list[dict[str, float]]], cache_s: float, peak: float, args: argparse.Namespace) -> str:
    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    stock = median("stock", "samples_per_s")
    lines = [
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}, transformers {transformers.__version__}; batch {BATCH}, fp32, {args.warmup} warm-up + "
        f"{args.steps} timed steps, {args.repeats} round(s); fp32 matmul peak {peak / 1e9:.1f} GFLOP/s.",
        "",
        "| variant | samples/s | vs stock | peak memory during train | GFLOP/step | achieved GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        speed = median(variant, "samples_per_s")
        flops = median(variant, "flops_per_step")
        achieved = flops * speed / BATCH
        lines.append(
            f"| {variant} | {speed:.2f} | {speed / stock:.2f}x | {median(variant, 'peak_mib'):.0f} MiB | "
            f"{flops / 1e9:.1f} | {achieved / 1e9:.1f} | {achieved / peak:.1%} |"
        )
    rounds = ", ".join(
        f"{variant}: " + "/".join(f"{r['samples_per_s']:.2f}" for r in results[variant]) for variant in VARIANTS
    )
    lines += [
        "",
        f"Per-round samples/s: {rounds}.",
        f"Feature cache build (once, {args.samples} samples): {cache_s:.1f} s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config: a smoke test")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output", type=Path, help="also write the report here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        if args.child[0] == "cache":
            print(json.dumps({"seconds": build_cache(args.folder)}))
        else:
            variant, warmup, steps = args.child[0], int(args.child[1]), int(args.child[2])
            print(json.dumps(run_variant(variant, args.folder, warmup, steps)))
        return
    args.samples = BATCH * (args.warmup + args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        args.folder = Path(tmp)
        prepare(args.folder, args.quick, args.samples)
        cache_s = child(args, "cache")["seconds"]
        results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for round_ in range(args.repeats):
            order = VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS))
            for variant in order:
                results[variant].append(child(args, variant, str(args.warmup), str(args.steps)))
        text = report(results, cache_s, matmul_peak_flops(), args)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
