"""Data-pipeline throughput: unified samples -> collated batches (images decoded, resized, normalised; text tokenised).

    .venv/bin/python benchmarks/bench_data.py                 # the table of benchmarks/README.md
    .venv/bin/python benchmarks/bench_data.py --samples 512   # quicker

A balanced mixture of the built-in synthetic held-in tasks (images stored PNG-encoded, as in a real dataset) goes
through a `torch.utils.data.DataLoader` with `InstructBlipDataCollator` and the real tokenizers (SmolLM2's, from its
GGUF file, and MiniLM's), 224 px images, 32 query tokens, batch 8, with `num_workers` 0 and 2. Reported: samples/s
after one warm-up epoch-slice; the best of a few runs.
"""

from __future__ import annotations

import argparse
import time

import torch
import transformers
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from hf_instructblip import InstructBlipImageProcessor, InstructBlipProcessor
from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from hf_instructblip.data.collator import InstructBlipDataCollator
from hf_instructblip.data.mixture import BalancedMixtureSampler, concatenate_mixture
from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture


def make_processor() -> InstructBlipProcessor:
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE)
    qformer_tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return InstructBlipProcessor(InstructBlipImageProcessor(), tokenizer, qformer_tokenizer, num_query_tokens=32)


def throughput(loader: DataLoader, repeats: int) -> float:
    """Samples/s over full passes of ``loader`` (best of ``repeats``; workers are started outside the timing)."""
    best = 0.0
    for _ in range(repeats):
        iterator = iter(loader)
        first = next(iterator)  # worker start-up and the first batch are not throughput
        count, start = 0, time.perf_counter()
        for batch in iterator:
            count += batch["input_ids"].shape[0]
        elapsed = time.perf_counter() - start
        del first
        best = max(best, count / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1024, help="samples per pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=96, help="size of the stored synthetic images")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    parts = synthetic_mixture(
        SYNTHETIC_HELD_IN, args.samples // len(SYNTHETIC_HELD_IN) + 1, image_size=args.image_size
    )
    dataset = concatenate_mixture(parts)
    sizes = {name: len(part) for name, part in parts.items()}
    collator = InstructBlipDataCollator(make_processor(), decoder_only=True)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"{len(dataset)} synthetic samples ({args.image_size} px PNG) -> 224 px, batch {args.batch_size}")
    print("| num_workers | samples/s |")
    print("|---|---|")
    for workers in (0, 2):
        sampler = BalancedMixtureSampler(sizes, args.batch_size, num_samples=args.samples, seed=0)
        loader = DataLoader(
            dataset, batch_size=args.batch_size, sampler=sampler, collate_fn=collator, num_workers=workers
        )
        print(f"| {workers} | {throughput(loader, args.repeats):.0f} |")


if __name__ == "__main__":
    main()
