"""`make demo` / `hf-instructblip demo`: build a mini InstructBLIP from real parts and instruction-tune it on CPU.

1. Build from the real shipped parts (DESIGN.md): a small random ViT (no pretrained vision tower installs from PyPI),
   all-MiniLM-L6-v2 as the Q-Former initialiser and SmolLM2-135M-Instruct as the frozen LLM.
2. Measure held-in accuracy (exact match, greedy) on a fixed synthetic evaluation set and show a few generations for
   held-in and held-out prompts.
3. Instruction-tune with `InstructBlipTrainer` on the built-in synthetic held-in tasks (the paper's trainable set:
   Q-Former, queries, projection, vision LayerNorm; vision tower and LLM frozen) for about two minutes on 2 cores.
4. Measure and show the same again, and save the tuned model + processor.

What the numbers mean: the vision tower is random and stays frozen, so what two minutes of tuning can teach is
mostly the tasks' answer format and what the instruction itself gives away (OCR tokens are in the prompt; counts and
shapes have few values), plus whatever colour/shape signal random features carry. It is the whole training path
running on real weights, offline, in minutes, not a capable model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import datasets
import torch

from .assets import SMOLLM2_GGUF_FILE, minilm_path, smollm2_dir
from .building import build_model
from .data.collator import InstructBlipDataCollator
from .data.mixture import concatenate_mixture
from .data.synthetic import SYNTHETIC_HELD_IN, synthetic_dataset, synthetic_mixture

__all__ = ["DEMO_VISION_CONFIG", "EVAL_TASKS", "run_demo"]

#: A small random ViT (no pretrained ViT/CLIP/SigLIP installs from PyPI; DESIGN.md).
DEMO_VISION_CONFIG = {
    "model_type": "vit",
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "image_size": 224,
    "patch_size": 16,
}
#: Held-in tasks with exact-match answers: the fixed accuracy set.
EVAL_TASKS = ("synthetic_vqa", "synthetic_counting", "synthetic_ocr")
#: Prompts shown before and after tuning: (task, sample index) of the evaluation sets.
SHOWN = (("synthetic_ocr", 0), ("synthetic_counting", 1), ("synthetic_yes_no", 0), ("synthetic_classification", 2))
EVAL_SEED = 1234  # the training data uses seed 0: different scenes


def _accuracy(model: Any, processor: Any, eval_sets: dict[str, datasets.Dataset]) -> dict[str, float]:
    from .evaluation.harness import evaluate_zero_shot

    results = evaluate_zero_shot(
        model, processor, eval_sets, batch_size=16, generation={"num_beams": 1, "max_new_tokens": 8}, progress=False
    )
    return {name: result.score for name, result in results.items()}


def _show(model: Any, processor: Any, shown: list[dict[str, Any]]) -> list[str]:
    inputs = processor(
        images=[s["images"][0] for s in shown],
        text=[s["instruction"] for s in shown],
        padding=True,
        padding_side="left",
    )
    qformer = processor.qformer_inputs([s["qformer_text"] for s in shown])  # the instruction, as LAVIS
    inputs.update({key: torch.tensor(value) for key, value in qformer.items()})
    # min_new_tokens=1 as in the paper's evaluation settings (the harness uses them too): no empty answers
    output = model.eval().generate(**inputs, max_new_tokens=8, min_new_tokens=1, do_sample=False)
    return processor.decode_generated(output, inputs["input_ids"])


def _print_accuracy(title: str, scores: dict[str, float]) -> float:
    mean = sum(scores.values()) / len(scores)
    per_task = ", ".join(f"{name.removeprefix('synthetic_')} {100 * value:.0f}%" for name, value in scores.items())
    print(f"{title}: held-in accuracy {100 * mean:.1f}% ({per_task})")
    return mean


def run_demo(
    output_dir: str | Path = "outputs/demo-model",
    max_steps: int = 60,
    batch_size: int = 8,
    learning_rate: float = 2e-4,
    eval_samples: int = 32,
    num_query_tokens: int = 16,
    seed: int = 0,
    frozen_dtype: str = "auto",
) -> dict[str, float]:
    """Build, evaluate, tune, evaluate, save; returns held-in accuracy ``{"before": ..., "after": ...}``.

    ``frozen_dtype``: the frozen vision tower and LLM are held in it from the start (evaluation included), the
    trained parts in fp32 (`InstructBlipTrainingArguments.frozen_dtype`; ``auto``: bf16 where the CPU has it).
    """
    from .training import InstructBlipTrainer, InstructBlipTrainingArguments

    start = time.perf_counter()
    print("Building InstructBLIP from parts: random ViT-4x192 + all-MiniLM-L6-v2 (Q-Former) + SmolLM2-135M (LLM)...")
    built = build_model(
        DEMO_VISION_CONFIG,
        minilm_path(),
        smollm2_dir(),
        llm_gguf_file=SMOLLM2_GGUF_FILE,
        num_query_tokens=num_query_tokens,
        seed=seed,
    )
    model, processor = built.model, built.processor
    held = str(model.hold_frozen_in(frozen_dtype)).removeprefix("torch.")
    print(f"Built in {time.perf_counter() - start:.0f} s. Vision tower and LLM held in {held}.")

    eval_sets = {name: synthetic_dataset(name, eval_samples, seed=EVAL_SEED, image_size=224) for name in EVAL_TASKS}
    shown = [synthetic_dataset(task, index + 1, seed=EVAL_SEED, image_size=224)[index] for task, index in SHOWN]
    before = _accuracy(model, processor, eval_sets)
    before_text = _show(model, processor, shown)

    parts = synthetic_mixture(SYNTHETIC_HELD_IN, max_steps * batch_size, seed=seed, image_size=224)
    args = InstructBlipTrainingArguments(
        output_dir=str(Path(output_dir) / "checkpoints"),
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=max(1, max_steps // 10),
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=seed,
        frozen_dtype=held,
    )
    trainer = InstructBlipTrainer(
        model=model,
        args=args,
        train_dataset=concatenate_mixture(parts),
        # no random crops or flips: a crop can cut a shape out of a synthetic scene, a flip mirrors its text
        data_collator=InstructBlipDataCollator.for_model(model, processor, max_length=96, augment_images=False),
        mixture_sizes={name: len(part) for name, part in parts.items()},
    )
    print(
        f"\nInstruction tuning on {len(SYNTHETIC_HELD_IN)} synthetic held-in tasks: {max_steps} steps x {batch_size}"
    )
    tune_start = time.perf_counter()
    trainer.train()
    tune_seconds = time.perf_counter() - tune_start

    after = _accuracy(model, processor, eval_sets)
    after_text = _show(model, processor, shown)
    path = Path(output_dir)
    model.save_pretrained(path)
    processor.save_pretrained(path)

    print(f"\nTuned in {tune_seconds:.0f} s. Fixed evaluation set: {eval_samples} samples per task, seed {EVAL_SEED}.")
    scores = {"before": _print_accuracy("Before tuning", before), "after": _print_accuracy("After tuning ", after)}
    print("\nGenerations (greedy, 8 new tokens) before -> after tuning:")
    for sample, old, new in zip(shown, before_text, after_text):
        kind = "held-out" if sample["held_out"] else "held-in"
        print(f"  [{kind}: {sample['dataset']}] {sample['instruction']}")
        print(f"      expected {sample['target']!r}; before {old.strip()!r} -> after {new.strip()!r}")
    print(f"\nSaved the tuned model and processor to {path.resolve()} ({time.perf_counter() - start:.0f} s in all).")
    # the saved generation_config.json holds the paper's settings (5 beams, ...): `generate` uses them by default
    print(f"Try: hf-instructblip generate {path} --image photo.jpg --prompt 'What is in the photo?'")
    return scores
