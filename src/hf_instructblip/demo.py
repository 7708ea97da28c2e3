"""`make demo` / `hf-instructblip demo`: instruction-tune an InstructBLIP built from real pretrained parts, on CPU.

1. **Build** (`build_demo_model`) from the real parts that install from PyPI: EfficientNet-Lite0 (ImageNet-1k,
   frozen) as the vision tower, all-MiniLM-L6-v2 as the Q-Former initialiser (BLIP-2 recipe) and SmolLM2-135M-Instruct
   as the frozen LLM; the frozen parts are held in bf16 where the CPU runs it natively.
2. **Evaluate before tuning** (`evaluate_demo`): held-in accuracy per task (greedy exact match on unseen samples of
   the trained task types) beside each task's chance level, and zero-shot on the held-out task types (yes/no,
   spatial true/false, multiple choice, classification: ranked, the harness' table).
3. **Instruction-tune** (`train_demo`) on the synthetic held-in mixture (captioning, VQA, counting, OCR, question
   generation) with the paper's balanced sampling, training the Q-Former, queries, projection and vision LayerNorm.
4. **Evaluate again**, show a few generations, and save the model with its processor, ``results.json`` /
   ``results.md``, ``demo_results.png`` and the model card as ``README.md`` (`save_demo_outputs`); with
   ``push_to_hub`` the folder is pushed (`hub.push_to_hub`).

The building blocks are plain functions over a [`DemoConfig`], so other scripts (ablations, seeds) reuse the same
setup:

```python
>>> from hf_instructblip.demo import DemoConfig, build_demo_model, demo_training_data, train_demo
>>> config = DemoConfig(max_steps=10)
>>> built = build_demo_model(config)  # doctest: +SKIP
>>> trainer = train_demo(built, demo_training_data(config), config, "outputs/run")  # doctest: +SKIP
```

What the numbers mean: the training and evaluation tasks are the package's rendered scenes (coloured shapes on a
3x3 grid, rendered words and numbers); the held-in evaluation uses scenes never trained on, the held-out tasks are
task types never trained on (arXiv 2305.06500 §2.1). OCR questions carry the word in the prompt (``OCR tokens:``, as
the paper's OCR datasets), so copying answers them; the short-VQA tasks (colour, shape, count) need the image.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from .building import BuiltModel, build_model
from .data.collator import InstructBlipDataCollator
from .data.mixture import concatenate_mixture
from .data.synthetic import COLORS, SHAPES, SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, WORDS, synthetic_dataset
from .evaluation.harness import DatasetResult, evaluate_zero_shot, results_table, write_results

__all__ = [
    "EVAL_TASKS",
    "RANDOM_VIT_CONFIG",
    "DemoConfig",
    "DemoEvaluation",
    "blind_baseline",
    "build_demo_model",
    "claims_section",
    "demo_eval_sets",
    "demo_training_data",
    "evaluate_demo",
    "guess_chance",
    "run_demo",
    "sampling_multipliers",
    "save_demo_outputs",
    "show_generations",
    "train_demo",
]

#: The comparison tower: a small random ViT, frozen (what the demo used before a pretrained tower shipped).
RANDOM_VIT_CONFIG: dict[str, Any] = {
    "model_type": "vit",
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "image_size": 224,
    "patch_size": 16,
}
#: Held-in tasks with exact-match answers: the held-in accuracy set (short VQA: vqa and counting; OCR).
EVAL_TASKS = ("synthetic_vqa", "synthetic_counting", "synthetic_ocr")
SHORT_VQA_TASKS = ("synthetic_vqa", "synthetic_counting")
#: Prompts shown before and after tuning: (task, sample index) of the evaluation sets.
SHOWN = (("synthetic_vqa", 0), ("synthetic_counting", 1), ("synthetic_ocr", 0), ("synthetic_yes_no", 0))
#: The README's plain prompt, asked about a rendered scene and a photograph.
PLAIN_PROMPT = "What is in the photo?"
EVAL_SEED = 1234  # training data uses the run's seed: different scenes
# Held-in answers are a word or two: greedy decoding, at most 8 new tokens (the harness' other settings).
HELD_IN_GENERATION = {"num_beams": 1, "max_new_tokens": 8}
#: EfficientNet-Lite0's block whose map the demo reads (112 channels, stride 16); measured against the last map
#: (1280 channels, stride 32) at 128 px, lr 3e-4, 250 steps: held-in VQA 16% vs 9%; block 5 (stride 8, 16 x 16
#: tokens) was no better at 320 steps (README, "The demo").
EFFICIENTNET_FEATURE_BLOCK = 11


@dataclass(frozen=True)
class DemoConfig:
    """Everything that defines a demo run (parts, data, hyperparameters); the defaults are the measured choice.

    Args:
        vision: The vision tower: ``"shipped:efficientnet"`` (pretrained, frozen), a folder, or a config dict
            (random weights, e.g. [`RANDOM_VIT_CONFIG`]).
        qformer: The Q-Former initialiser (a BERT folder or ``"shipped:minilm"``).
        llm: The frozen LLM (a folder or ``"shipped:smollm2"``).
        image_size: Side of the rendered scenes and of the tower's input, in pixels.
        num_query_tokens: Visual tokens the LLM reads per image.
        max_steps: Optimizer steps.
        batch_size: Samples per step.
        learning_rate: Peak learning rate (linear warm-up, cosine decay to 0 as the paper).
        warmup_steps: Linear warm-up steps.
        max_grad_norm: Gradient clipping (0: none, LAVIS' choice).
        eval_samples: Samples per evaluation task.
        seed: Seeds the build's new parts, the training data and the sampler.
        frozen_dtype: Dtype of the frozen tower and LLM (``"auto"``: bf16 where the CPU runs it natively).
        qformer_text_input: False builds the BLIP-2-style Q-Former that never reads the instruction (the paper's
            "w/o instruction-aware visual features", arXiv 2305.06500 Table 2).
        mixture_sampling: ``"balanced"`` (each dataset by the square root of its size, arXiv 2305.06500 §2.4) or
            ``"proportional"`` (by its size: the paper's "w/o data balancing").
        vision_feature_layer: Which of the tower's maps the Q-Former reads. ``None``: for EfficientNet-Lite0 block
            11 (112 channels at stride 16: 8 x 8 tokens at 128 px, where the last map is 4 x 4 ImageNet-class
            features), for any other tower its last layer.
    """

    vision: str | dict[str, Any] = "shipped:efficientnet"
    qformer: str = "shipped:minilm"
    llm: str = "shipped:smollm2"
    image_size: int = 128
    num_query_tokens: int = 16
    max_steps: int = 320
    batch_size: int = 8
    learning_rate: float = 3e-4
    warmup_steps: int = 30
    max_grad_norm: float = 1.0
    eval_samples: int = 64
    seed: int = 0
    frozen_dtype: str = "auto"
    qformer_text_input: bool = True
    mixture_sampling: str = "balanced"
    vision_feature_layer: int | None = None

    def feature_layer(self) -> int:
        """The tower layer the Q-Former reads (`vision_feature_layer` resolved)."""
        if self.vision_feature_layer is not None:
            return self.vision_feature_layer
        return EFFICIENTNET_FEATURE_BLOCK if self.vision == "shipped:efficientnet" else -1

    def describe_vision(self) -> str:
        if self.vision == "shipped:efficientnet":
            return f"EfficientNet-Lite0 (pretrained on ImageNet, frozen; block {self.feature_layer()}'s map)"
        if isinstance(self.vision, dict):
            return f"random {self.vision.get('model_type', '?')} tower (frozen)"
        return f"{self.vision} (frozen)"


# ----- building blocks --------------------------------------------------------------------------------------------
def build_demo_model(config: DemoConfig) -> BuiltModel:
    """The demo's model and processor: `building.build_model` on ``config``'s parts, frozen parts held in
    ``config.frozen_dtype``, images at ``config.image_size``."""
    vision = config.vision
    if isinstance(vision, dict):
        vision = {**vision, "image_size": config.image_size}
    built = build_model(
        vision,
        config.qformer,
        config.llm,
        num_query_tokens=config.num_query_tokens,
        qformer_text_input=config.qformer_text_input,
        vision_feature_layer=config.feature_layer(),
        seed=config.seed,
    )
    # A feature-map tower (EfficientNet) takes any size: the processor resizes to the demo's
    built.processor.image_processor.size = {"height": config.image_size, "width": config.image_size}
    built.model.config.vision_config.image_size = config.image_size
    built.model.hold_frozen_in(config.frozen_dtype)
    return built


def demo_training_data(config: DemoConfig) -> dict[str, datasets.Dataset]:
    """The synthetic held-in mixture, one dataset per task (enough samples for every step to draw new ones)."""
    from .data.synthetic import synthetic_mixture

    per_task = config.max_steps * config.batch_size
    return synthetic_mixture(SYNTHETIC_HELD_IN, per_task, seed=config.seed, image_size=config.image_size)


def demo_eval_sets(config: DemoConfig, tasks: Sequence[str]) -> dict[str, datasets.Dataset]:
    """Fixed evaluation sets (seed `EVAL_SEED`, never trained on) of ``config.eval_samples`` samples per task."""
    return {
        name: synthetic_dataset(name, config.eval_samples, seed=EVAL_SEED, image_size=config.image_size)
        for name in tasks
    }


def train_demo(
    built: BuiltModel, parts: Mapping[str, datasets.Dataset], config: DemoConfig, output_dir: str | Path
) -> Any:
    """Instruction-tune ``built.model`` in place on ``parts``, sampled by ``config.mixture_sampling``; returns the
    trainer.

    The paper's trainable set (Q-Former, queries, projection, vision LayerNorm), the rest frozen; the trainer's
    progress bar shows the steps. Nothing is saved (see `save_demo_outputs`).
    """
    from .training import InstructBlipTrainer, InstructBlipTrainingArguments

    args = InstructBlipTrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        logging_steps=max(1, config.max_steps // 12),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=config.seed,
        frozen_dtype=config.frozen_dtype,
        mixture_multipliers=sampling_multipliers(config.mixture_sampling, {n: len(p) for n, p in parts.items()}),
    )
    trainer = InstructBlipTrainer(
        model=built.model,
        args=args,
        train_dataset=concatenate_mixture(parts),
        # no random crops or flips: a crop can cut a shape out of a synthetic scene, a flip mirrors its text
        data_collator=InstructBlipDataCollator.for_model(built.model, built.processor, augment_images=False),
        mixture_sizes={name: len(part) for name, part in parts.items()},
    )
    trainer.train()
    return trainer


def sampling_multipliers(sampling: str, sizes: Mapping[str, int]) -> dict[str, float] | None:
    """Mixture multipliers (on the sqrt(size) weights of `data.mixture.mixture_weights`) that sample ``sizes`` the
    ``sampling`` way: none for ``"balanced"``; sqrt(size) for ``"proportional"`` (sqrt(S) * sqrt(S) = S)."""
    if sampling == "balanced":
        return None
    if sampling == "proportional":
        return {name: math.sqrt(size) for name, size in sizes.items()}
    raise ValueError(f"DemoConfig.mixture_sampling must be 'balanced' or 'proportional', got {sampling!r}.")


#: Size of each answer kind's vocabulary (`_answer_kind`): the answers a synthetic question allows.
_ANSWER_VOCABULARY = {
    "colour": len(COLORS),
    "shape": len(SHAPES),
    "synthetic_counting": 4,
    "number": 999,
    "word": len(WORDS),
}


def _answer_kind(name: str, target: str) -> str:
    if target in COLORS:
        return "colour"
    if target in SHAPES:
        return "shape"
    if name == "synthetic_ocr":
        return "number" if target.isdigit() else "word"
    return name


def guess_chance(dataset: datasets.Dataset) -> float:
    """Accuracy of guessing uniformly among the answers a synthetic question allows (its answer vocabulary).

    Colour questions: 1/5; shape questions: 1/4; counts (1-4): 1/4; OCR: 1 / (number of words) or 1/999 for
    numbers (copying the prompt's OCR tokens does better: they are the answer).
    """
    chances = []
    for name, target in zip(dataset["dataset"], dataset["target"]):
        kind = _answer_kind(name, target)
        if kind not in _ANSWER_VOCABULARY:
            raise ValueError(f"guess_chance: no answer vocabulary for {name!r} (target {target!r}).")
        chances.append(1 / _ANSWER_VOCABULARY[kind])
    return sum(chances) / len(chances)


def blind_baseline(dataset: datasets.Dataset) -> float:
    """Accuracy of the best answer given without the image: for each kind of answer (colour, shape, count, word,
    number), always that kind's most common answer in ``dataset`` itself.

    Stricter than `guess_chance` where answers are skewed: most synthetic counting questions ("How many red shapes
    are there?") have the answer 1, so always answering "1" scores far above 1/4 without looking.
    """
    by_kind: dict[str, Counter[str]] = {}
    for name, target in zip(dataset["dataset"], dataset["target"]):
        by_kind.setdefault(_answer_kind(name, target), Counter())[target] += 1
    return sum(max(counts.values()) for counts in by_kind.values()) / len(dataset)


@dataclass
class DemoEvaluation:
    """Held-in (generation, exact match, with `guess_chance` and `blind_baseline`) and held-out (zero-shot, ranked)
    results."""

    held_in: dict[str, DatasetResult]
    held_out: dict[str, DatasetResult]
    blind: dict[str, float] = field(default_factory=dict)  # held-in task -> `blind_baseline`

    def _short_vqa_mean(self, value: Callable[[str, DatasetResult], float]) -> float:
        """``value`` of the short-VQA tasks, averaged over their samples (NaN when none was evaluated)."""
        results = {name: self.held_in[name] for name in SHORT_VQA_TASKS if name in self.held_in}
        total = sum(result.num_samples for result in results.values())
        if not total:
            return float("nan")
        return sum(value(name, result) * result.num_samples for name, result in results.items()) / total

    @property
    def short_vqa_blind(self) -> float:
        """`blind_baseline` of the short-VQA tasks together."""
        return self._short_vqa_mean(lambda name, _: self.blind.get(name, float("nan")))

    @property
    def short_vqa(self) -> tuple[float, float]:
        """(accuracy, chance level) of the short-VQA tasks together (colour, shape, count)."""
        score = self._short_vqa_mean(lambda _, result: result.score)
        return score, self._short_vqa_mean(lambda _, result: result.chance or 0.0)

    def all_results(self) -> dict[str, DatasetResult]:
        return {**self.held_out, **self.held_in}


def evaluate_demo(
    model: Any,
    processor: Any,
    held_in: Mapping[str, datasets.Dataset],
    held_out: Mapping[str, datasets.Dataset],
    batch_size: int = 16,
) -> DemoEvaluation:
    """Held-in accuracy (greedy, `HELD_IN_GENERATION`) and zero-shot held-out results with their chance levels."""
    generated = evaluate_zero_shot(
        model, processor, dict(held_in), batch_size=batch_size, generation=HELD_IN_GENERATION, progress=False
    )
    for name, result in generated.items():
        result.chance = guess_chance(held_in[name])
    ranked = evaluate_zero_shot(model, processor, dict(held_out), batch_size=batch_size, progress=False)
    return DemoEvaluation(generated, ranked, {name: blind_baseline(data) for name, data in held_in.items()})


def show_generations(
    model: Any, processor: Any, images: Sequence[Any], prompts: Sequence[str], max_new_tokens: int = 16
) -> list[str]:
    """Answers with the model's own generation settings (the paper's: 5 beams, repetition penalty 1.5), as
    ``hf-instructblip generate`` gives them; the Q-Former reads the prompt, as in training."""
    inputs = processor(images=list(images), text=list(prompts), padding=True, padding_side="left")
    output = model.eval().generate(**inputs, max_new_tokens=max_new_tokens)
    return [text.strip() for text in processor.decode_generated(output, inputs["input_ids"])]


# ----- outputs ----------------------------------------------------------------------------------------------------
def save_demo_outputs(
    built: BuiltModel,
    trainer: Any,
    before: DemoEvaluation,
    after: DemoEvaluation,
    output_dir: str | Path,
    repo_id: str | None = None,
    title: str = "hf_instructblip demo",
) -> dict[str, Path]:
    """Save the tuned model and processor, ``results.json`` / ``results.md`` (after tuning), ``demo_results.png``
    and the model card (``README.md``: parts and their sources, mixture, hyperparameters, results); returns the paths.
    """
    from .demo_plot import plot_demo_results
    from .hub import CardInfo, render_model_card

    path = Path(output_dir)
    built.model.save_pretrained(path)
    built.processor.save_pretrained(path)
    json_path, table_path = write_results(
        after.all_results(), path, model_name=path.name, title="Held-in and zero-shot held-out results"
    )
    vocab_size = built.model.config.text_config.vocab_size
    plot = plot_demo_results(
        before, after, trainer.state.log_history, path / "demo_results.png", vocab_size=vocab_size, title=title
    )
    card = CardInfo(
        mixture_sizes=trainer.mixture_sizes,
        training_args=trainer.args.to_dict(),
        log_history=trainer.state.log_history,
        tags=["hf-instructblip-demo"],
    )
    readme = path / "README.md"
    render_model_card(path, repo_id or path.name, card, after.all_results()).save(readme)
    claims = claims_section()
    if claims:
        with readme.open("a") as file:
            file.write("\n\n" + claims)
    return {"results": json_path, "table": table_path, "plot": plot, "card": readme}


#: The committed results of ``examples/replicate_paper_claims.py`` (present in a clone of the repository).
CLAIMS_RESULTS = Path(__file__).resolve().parents[2] / "examples" / "results" / "paper_claims.md"


def claims_section(results: Path = CLAIMS_RESULTS) -> str | None:
    """The model card's section on the paper's three claims at this scale: the verdicts of the committed
    replication (``examples/results/paper_claims.md``), or None where that file is absent (an installed wheel)."""
    if not results.is_file():
        return None
    text = results.read_text()
    start = text.find("## Verdicts")
    if start < 0:
        return None
    end = text.find("\n## ", start + 1)
    verdicts = text[start + len("## Verdicts") : end if end > 0 else None].strip()
    return (
        "## The paper's three claims at this scale\n\n"
        "The same parts and synthetic tasks, 4 training arms x 3 seeds (`python examples/replicate_paper_claims.py`; "
        "the full tables, with the paper's numbers, in `examples/results/paper_claims.md`):\n\n" + verdicts + "\n"
    )


def _percent(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:4.0f}"


def _print_comparison(before: DemoEvaluation, after: DemoEvaluation) -> None:
    print("\nHeld-in tasks (unseen scenes of the trained task types; greedy, exact match), accuracy %:")
    print("  (chance: a uniform guess among the allowed answers; blind: each kind's most common answer, no image)")
    print(f"  {'task':<28} {'before':>6} {'after':>6} {'chance':>6} {'blind':>6}")
    for name, result in after.held_in.items():
        print(
            f"  {name:<28} {_percent(before.held_in[name].score):>6} {_percent(result.score):>6} "
            f"{_percent(result.chance):>6} {_percent(after.blind.get(name)):>6}"
        )
    (old, _), (new, chance) = before.short_vqa, after.short_vqa
    print(
        f"  {'short VQA (vqa + counting)':<28} {_percent(old):>6} {_percent(new):>6} {_percent(chance):>6} "
        f"{_percent(after.short_vqa_blind):>6}"
    )
    print("\nHeld-out task types (zero-shot: never trained on; candidates ranked), score %:")
    print(f"  {'task':<28} {'before':>6} {'after':>6} {'chance':>6}  metric")
    for name, result in after.held_out.items():
        print(
            f"  {name:<28} {_percent(before.held_out[name].score):>6} {_percent(result.score):>6} "
            f"{_percent(result.chance):>6}  {result.metric}"
        )


def _examples(config: DemoConfig) -> tuple[list[Any], list[str], list[str]]:
    """Images, prompts and expected answers shown before and after tuning: held-in and held-out samples, then the
    README's plain prompt on a rendered scene and on a photograph (scikit-image's cat, where installed)."""
    samples = [
        synthetic_dataset(task, index + 1, seed=EVAL_SEED, image_size=config.image_size)[index]
        for task, index in (*SHOWN, ("synthetic_captioning", 2))
    ]
    images = [sample["images"][0] for sample in samples]
    prompts = [sample["instruction"] for sample in samples[:-1]] + [PLAIN_PROMPT]
    expected = [sample["target"] for sample in samples]
    try:
        from PIL import Image
        from skimage import data as skimage_data

        images.append(Image.fromarray(skimage_data.chelsea()))
        prompts.append(PLAIN_PROMPT)
        expected.append("(a photo of a cat; the demo never trains on photos)")
    except ImportError:
        print("(scikit-image is not installed: the photo example is skipped; `pip install scikit-image` adds it)")
    return images, prompts, expected


@dataclass
class DemoRun:
    """What `run_demo` measured and wrote."""

    config: DemoConfig
    before: DemoEvaluation
    after: DemoEvaluation
    paths: dict[str, Path]
    seconds: float


def run_demo(
    output_dir: str | Path = "outputs/demo-model",
    config: DemoConfig | None = None,
    push_to_hub: str | None = None,
) -> DemoRun:
    """Build, evaluate, tune, evaluate, save (and push): the whole demo, printed as it goes.

    Args:
        output_dir: Where the tuned model, its processor, results, plot and card go.
        config: Parts and hyperparameters (default: [`DemoConfig`]'s measured choice).
        push_to_hub: A Hub repo id (``"me/instructblip-demo"``): push the saved folder there (`hub.push_to_hub`;
            token from ``HF_TOKEN`` or ``hf auth login``).
    """
    config = config or DemoConfig()
    start = time.perf_counter()
    print(
        f"Building InstructBLIP from pretrained parts: vision tower {config.describe_vision()}, Q-Former from "
        f"{config.qformer}, LLM {config.llm} (frozen)..."
    )
    built = build_demo_model(config)
    sources = getattr(built.model.config, "part_sources", {})
    for part in ("vision", "qformer", "llm", "new"):
        print(f"  {part:>7}: {sources.get(part, 'not recorded')}")
    held = str(built.model.language_model.dtype).removeprefix("torch.")
    print(f"Built in {time.perf_counter() - start:.0f} s; vision tower and LLM held in {held}.")

    held_in, held_out = demo_eval_sets(config, EVAL_TASKS), demo_eval_sets(config, SYNTHETIC_HELD_OUT)
    images, prompts, expected = _examples(config)
    print(f"\nEvaluating before tuning ({config.eval_samples} samples per task)...")
    before = evaluate_demo(built.model, built.processor, held_in, held_out)
    before_text = show_generations(built.model, built.processor, images, prompts)

    parts = demo_training_data(config)
    print(
        f"\nInstruction tuning on {len(parts)} synthetic held-in tasks ({', '.join(parts)}), balanced sampling: "
        f"{config.max_steps} steps x {config.batch_size}, learning rate {config.learning_rate:g}"
    )
    tune_start = time.perf_counter()
    trainer = train_demo(built, parts, config, output_dir)
    tune_seconds = time.perf_counter() - tune_start

    print("Evaluating after tuning...")
    after = evaluate_demo(built.model, built.processor, held_in, held_out)
    after_text = show_generations(built.model, built.processor, images, prompts)
    title = (
        f"{config.describe_vision()} + Q-Former from {config.qformer} + {config.llm}: "
        f"{config.max_steps} steps x {config.batch_size}, learning rate {config.learning_rate:g}"
    )
    paths = save_demo_outputs(built, trainer, before, after, output_dir, repo_id=push_to_hub, title=title)

    print(f"\nTuned in {tune_seconds:.0f} s.")
    _print_comparison(before, after)
    print("\nGenerations (the model's settings: 5 beams, repetition penalty 1.5), before -> after tuning:")
    for prompt, want, old, new in zip(prompts, expected, before_text, after_text):
        print(f"  {prompt}\n      expected {want!r}; before {old!r} -> after {new!r}")
    print(f"\nZero-shot table (results.md):\n{results_table(after.all_results())}")
    folder = Path(output_dir).resolve()
    print(f"\nSaved to {folder}: model + processor, results.json/.md, {paths['plot'].name}, README.md (model card).")
    if push_to_hub:
        from .hub import push_to_hub as push

        commit = push(folder, push_to_hub)
        print(f"Pushed to {commit.commit_url}")
    seconds = time.perf_counter() - start
    print(
        f"Done in {seconds:.0f} s. Try: hf-instructblip generate {output_dir} --image photo.jpg --prompt "
        f"'{PLAIN_PROMPT}'"
    )
    return DemoRun(config, before, after, paths, seconds)
