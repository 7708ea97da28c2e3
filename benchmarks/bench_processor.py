"""Processor throughput: ours vs transformers' `InstructBlipProcessor`, side by side in one process.

    .venv/bin/python benchmarks/bench_processor.py                # the table of benchmarks/README.md
    .venv/bin/python benchmarks/bench_processor.py --repeats 3    # quicker, noisier

Both processors get the same tokenizers (SmolLM2's, from its GGUF file, and MiniLM's with ``[DEC]``), the same
image settings (224 px, bicubic, CLIP mean/std: transformers' BLIP image processor for theirs, ours for ours), 32
query tokens, and the same batches of real photographs (scikit-image samples) with prompts of different lengths,
``padding=True``. Runs alternate between the two (A B A B ...) and the median is reported; the ratio is
ours / theirs in images per second (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers
from PIL import Image
from skimage import data
from transformers import AutoTokenizer, BlipImageProcessorPil

from hf_instructblip import InstructBlipImageProcessor, InstructBlipProcessor
from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field")
PROMPTS = ("What is in the photo?", "Describe the image in detail.", "Is there a cat? Answer yes or no.", "Caption:")


def make_processors(num_query_tokens: int = 32):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE)
    qformer_tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    ours = InstructBlipProcessor(
        InstructBlipImageProcessor(), tokenizer, qformer_tokenizer, num_query_tokens=num_query_tokens
    )
    theirs = transformers.InstructBlipProcessor(
        BlipImageProcessorPil(size={"height": 224, "width": 224}),
        ours.tokenizer,
        qformer_tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return ours, theirs


def photos(batch_size: int, side: int) -> list[Image.Image]:
    """Real photographs (RGB), resized to side x side."""
    images = []
    for name in PHOTOS:
        array = getattr(data, name)()
        image = Image.fromarray(array).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        images.append(image)
    return [images[i % len(images)] for i in range(batch_size)]


def time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(ours, theirs, images, texts, repeats: int) -> tuple[float, float]:
    """Images/s of each, alternating runs, after one warm-up each."""
    run_ours = lambda: ours(images=images, text=texts, padding=True, return_tensors="pt")  # noqa: E731
    run_theirs = lambda: theirs(images=images, text=texts, padding=True, return_tensors="pt")  # noqa: E731
    run_ours(), run_theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(time_call(run_ours))
        t_theirs.append(time_call(run_theirs))
    n = len(images)
    return n / statistics.median(t_ours), n / statistics.median(t_theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 512])
    args = parser.parse_args()

    ours, theirs = make_processors()
    texts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch_size)]
    check = photos(2, 224)
    a = ours(images=check, text=texts[:2], padding=True)["pixel_values"]
    b = theirs(images=check, text=texts[:2], padding=True, return_tensors="pt")["pixel_values"]
    assert torch.allclose(a, b, atol=1e-5), "the two processors disagree on pixel values"

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print("| input photos | batch | transformers (img/s) | ours (img/s) | ratio |")
    print("|---|---|---|---|---|")
    for side in args.sides:
        ours_speed, theirs_speed = compare(ours, theirs, photos(args.batch_size, side), texts, args.repeats)
        print(
            f"| {side} x {side} RGB | {args.batch_size} | {theirs_speed:.0f} | {ours_speed:.0f} | "
            f"{ours_speed / theirs_speed:.2f} |"
        )


if __name__ == "__main__":
    main()
