"""Generation-eval throughput: our harness (batched) vs a plain loop over transformers' InstructBLIP `generate`.

    .venv/bin/python benchmarks/bench_eval.py                 # the table of benchmarks/README.md
    .venv/bin/python benchmarks/bench_eval.py --samples 16    # quicker

What a user without this package writes: for each sample, transformers' processor-equivalent inputs, then
``transformers.InstructBlipForConditionalGeneration.generate`` at batch 1. Ours: `evaluate_zero_shot` on the same
samples (batched, left padding). Both use the same weights (one ``save_pretrained`` folder), the same inputs
(the same processor output per sample) and the paper's short-answer VQA settings (5 beams, at most 10 new tokens,
length penalty -1); the answers are checked equal before the times are compared. Reported: samples/s, ratio ours /
theirs (> 1: ours faster). Data: the synthetic counting task (generate inference), 224 px.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer

from hf_instructblip import InstructBlipForConditionalGeneration, InstructBlipImageProcessor, InstructBlipProcessor
from hf_instructblip.assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from hf_instructblip.data.synthetic import synthetic_dataset
from hf_instructblip.evaluation.harness import evaluate_zero_shot, generation_settings


def build(folder: Path):
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF_FILE)
    qformer_tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    qformer_tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = InstructBlipProcessor(InstructBlipImageProcessor(), tokenizer, qformer_tokenizer, num_query_tokens=32)
    config = transformers.InstructBlipConfig(
        vision_config={
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 6,
            "num_attention_heads": 6,
            "image_size": 224,
            "patch_size": 14,
        },
        qformer_config={
            "hidden_size": 384,
            "intermediate_size": 1536,
            "num_hidden_layers": 4,
            "num_attention_heads": 6,
            "vocab_size": len(qformer_tokenizer),
        },
        text_config={
            "model_type": "llama",
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 12,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": len(tokenizer),
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True,
        },
        num_query_tokens=32,
        image_token_index=processor.image_token_id,
    )
    torch.manual_seed(0)
    transformers.InstructBlipForConditionalGeneration(config).save_pretrained(folder)
    theirs = transformers.InstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    ours = InstructBlipForConditionalGeneration.from_pretrained(folder).eval()
    return theirs, ours, processor


@torch.no_grad()
def plain_loop(model, processor, dataset, settings) -> list[str]:
    answers = []
    for row in dataset:
        inputs = processor(images=row["images"][0], text=row["instruction"])
        generated = model.generate(**inputs, **settings)
        answers.append(processor.decode_generated(generated, inputs["input_ids"])[0])
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        theirs, ours, processor = build(Path(folder))
        dataset = synthetic_dataset("synthetic_counting", args.samples, seed=1234, image_size=224)
        # Both sides decode the same way: no repetition penalty, which transformers' port applies to the prompt too and
        # the harness (as LAVIS) to generated tokens only.
        same_decoding = {"repetition_penalty": 1.0}
        settings = generation_settings("short_vqa", same_decoding, encoder_decoder=False)
        plain_loop(theirs, processor, dataset.select(range(2)), settings)  # warm-up
        start = time.perf_counter()
        expected = plain_loop(theirs, processor, dataset, settings)
        theirs_time = time.perf_counter() - start
        warm_up = {"synthetic_counting": dataset.select(range(2))}
        evaluate_zero_shot(ours, processor, warm_up, generation=same_decoding, progress=False)
        start = time.perf_counter()
        results = evaluate_zero_shot(
            ours,
            processor,
            {"synthetic_counting": dataset},
            batch_size=args.batch_size,
            generation=same_decoding,
            progress=False,
        )
        ours_time = time.perf_counter() - start
    got = results["synthetic_counting"].predictions
    same = sum(a == b for a, b in zip(got, expected))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.samples} samples, 5 beams, <= 10 new tokens; answers equal for {same}/{args.samples} samples")
    print("| | samples/s |")
    print("|---|---|")
    print(f"| transformers `generate`, plain loop, batch 1 | {args.samples / theirs_time:.2f} |")
    print(f"| `evaluate_zero_shot`, batch {args.batch_size} | {args.samples / ours_time:.2f} |")
    print(f"| ratio | {theirs_time / ours_time:.2f} |")


if __name__ == "__main__":
    main()
