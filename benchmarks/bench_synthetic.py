"""Synthetic-task generation speed: seconds to build a 10,000-row map-style dataset, per task and for a mixture.

    .venv/bin/python benchmarks/bench_synthetic.py                          # the table of benchmarks/README.md
    .venv/bin/python benchmarks/bench_synthetic.py --num-samples 2000 --image-size 96

Each row times ``synthetic_dataset(task, num_samples)`` end to end (scene sampling, PIL rendering, PNG encoding,
schema validation, Arrow conversion) in this one process; the mixture row builds all tasks with
``synthetic_mixture`` and the same total number of samples. The target is 10,000 samples in under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import datasets
import PIL

from hf_instructblip.data.synthetic import (
    SYNTHETIC_HELD_IN,
    SYNTHETIC_HELD_OUT,
    synthetic_dataset,
    synthetic_mixture,
    synthetic_sample,
)


def time_task(task: str, num_samples: int, image_size: int) -> float:
    """Seconds to build ``num_samples`` rows of ``task``."""
    start = time.perf_counter()
    dataset = synthetic_dataset(task, num_samples, seed=0, image_size=image_size)
    elapsed = time.perf_counter() - start
    assert len(dataset) == num_samples
    return elapsed


def time_mixture(tasks: tuple[str, ...], num_samples: int, image_size: int) -> float:
    """Seconds to build a mixture of ``tasks`` holding ``num_samples`` rows in all."""
    per_task = num_samples // len(tasks)
    start = time.perf_counter()
    mixture = synthetic_mixture(tasks, per_task, seed=0, image_size=image_size)
    elapsed = time.perf_counter() - start
    assert sum(len(dataset) for dataset in mixture.values()) == per_task * len(tasks)
    return elapsed * num_samples / (per_task * len(tasks))  # scaled to exactly num_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()

    tasks = SYNTHETIC_HELD_IN + SYNTHETIC_HELD_OUT
    synthetic_sample(tasks[0], 0, 0, args.image_size)  # warm-up: font loading, first PNG encoder call
    print(
        f"Python {platform.python_version()}, Pillow {PIL.__version__}, datasets {datasets.__version__}, "
        f"{os.cpu_count()} CPUs, one process, {args.image_size} x {args.image_size} px"
    )
    print(f"| task | family | held out | time for {args.num_samples:,} (s) | samples/s |")
    print("|---|---|---|---|---|")
    for task in tasks:
        sample = synthetic_sample(task, 0, 0, args.image_size)
        seconds = time_task(task, args.num_samples, args.image_size)
        held_out = "yes" if sample["held_out"] else "no"
        print(f"| {task} | {sample['task_family']} | {held_out} | {seconds:.1f} | {args.num_samples / seconds:,.0f} |")
    seconds = time_mixture(tasks, args.num_samples, args.image_size)
    print(f"| mixture of all {len(tasks)} | - | - | {seconds:.1f} | {args.num_samples / seconds:,.0f} |")


if __name__ == "__main__":
    main()
