"""The zero-shot evaluation protocol (arXiv 2305.06500 §2.2, §2.5): per dataset its prompt, inference and metric.

For every requested dataset (a name from the 26-dataset registry, a built-in synthetic task, or your own
`datasets.Dataset` in the unified schema):

* **generate** (captioning, open-ended VQA): batched beam search with the paper's settings (LAVIS defaults:
  5 beams; captioning max 80 / min 10 new tokens; short-answer VQA max 10 with length penalty -1 for T5 and 0 for
  causal LLMs, as ``blip2_t5_instruct.py`` / ``blip2_vicuna_instruct.py``; otherwise max 256, min 1, repetition
  penalty 1.5), all overridable; answers are stripped (the metrics normalise them). As in LAVIS, the LLM gets the
  prompt as embeddings only (``model.generate(..., penalize_prompt=False)``), so the repetition penalty counts
  generated tokens only, never the question's words or OCR tokens;
* **rank** (multiple choice, classification, binary, dialog, video QA): every candidate scored by its summed
  log-likelihood (`ranking.rank_candidates`; T5 candidates end with ``</s>``, causal ones do not, as in LAVIS), the
  best one is the prediction. Binary tasks (every sample's candidates are a yes/no or true/false pair, e.g. VSR and
  HatefulMemes) rank the paper's verbaliser sets instead (`ranking.score_verbalisers`: positive yes/true against
  negative no/false); the class of the best-ranked word wins (``reduce="max"``: vocabulary ranking over the four
  words; the paper does not say how a class's words combine), and the class scores are the candidates' scores
  (ROC-AUC uses them);

then its metric (VQA accuracy, CIDEr, accuracy, ROC-AUC, MRR). `write_results` stores ``results.json`` and a
markdown table in the layout of the paper's Table 1 (held-out datasets in the paper's order, then the rest).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from tqdm.auto import tqdm

from ..data.registry import REGISTRY, load_instruction_dataset
from ..data.schema import BadSampleError
from ..data.synthetic import SYNTHETIC_HELD_IN, SYNTHETIC_HELD_OUT, synthetic_dataset
from ..generation_instructblip import PAPER_GENERATION_SETTINGS
from .ranking import VERBALISERS, rank_candidates, score_verbalisers
from .scoring import score_predictions

__all__ = [
    "PAPER_TABLE1_ORDER",
    "DatasetResult",
    "EvalTask",
    "chance_level",
    "evaluate_zero_shot",
    "generation_settings",
    "results_table",
    "write_results",
]

#: The held-out columns of the paper's Table 1, in its order, with the paper's column titles.
PAPER_TABLE1_ORDER: tuple[tuple[str, str], ...] = (
    ("nocaps", "NoCaps"),
    ("flickr30k", "Flickr30K"),
    ("gqa", "GQA"),
    ("vsr", "VSR"),
    ("iconqa", "IconQA"),
    ("textvqa", "TextVQA"),
    ("visdial", "Visdial"),
    ("hateful_memes", "HM"),
    ("vizwiz", "VizWiz"),
    ("scienceqa", "SciQA img"),
    ("msvd_qa", "MSVD QA"),
    ("msrvtt_qa", "MSRVTT QA"),
    ("ivqa", "iVQA"),
)

# LAVIS defaults (`blip2_t5_instruct.py` / `blip2_vicuna_instruct.py` `generate`, the task configs).
_GENERATE_DEFAULT: dict[str, Any] = {k: v for k, v in PAPER_GENERATION_SETTINGS.items() if k != "do_sample"}
_GENERATE_CAPTIONING: dict[str, Any] = {"num_beams": 5, "max_new_tokens": 80, "min_new_tokens": 10}
_GENERATE_SHORT_ANSWER: dict[str, Any] = {"num_beams": 5, "max_new_tokens": 10, "min_new_tokens": 1}
_SHORT_ANSWER_FAMILIES = frozenset({"short_vqa", "knowledge_vqa", "ocr_vqa", "video_qa"})
# Short-answer VQA's length penalty differs by LLM in LAVIS: -1 in `blip2_t5_instruct.py`'s `predict_answers`
# (favours short beams), 0 in `blip2_vicuna_instruct.py`'s (summed log-probabilities, no length normalisation).
_SHORT_ANSWER_LENGTH_PENALTY = {True: -1.0, False: 0.0}  # encoder_decoder -> length_penalty
# Binary tasks: the verbaliser words' log-likelihoods combine by max, i.e. the best-ranked word's class wins.
_VERBALISER_REDUCE: Literal["logsumexp", "max"] = "max"
# Synthetic tasks: short answers, exact-match accuracy; held-out ones are ranked over their candidates.
_SYNTHETIC_METRIC = {"synthetic_captioning": "cider"}


@dataclass(frozen=True)
class EvalTask:
    """How one dataset is evaluated."""

    name: str
    task_family: str
    metric: str
    inference: str  # "generate" | "rank"
    held_out: bool


def _task_for(name: str, sample: Mapping[str, Any]) -> EvalTask:
    if name in REGISTRY:
        spec = REGISTRY[name]
        if spec.metric is None:
            raise ValueError(f"dataset {name!r} has no metric in the paper; it is for training only.")
        return EvalTask(name, spec.task_family, spec.metric, spec.inference, spec.held_out)
    family = sample["task_family"]
    ranked = bool(sample["candidates"])
    metric = _SYNTHETIC_METRIC.get(name, "accuracy")
    return EvalTask(name, family, metric, "rank" if ranked else "generate", bool(sample["held_out"]))


def generation_settings(
    task_family: str, overrides: Mapping[str, Any] | None = None, *, encoder_decoder: bool
) -> dict[str, Any]:
    """The paper's (LAVIS') generation settings for a task family and LLM type, with ``overrides`` applied.

    Args:
        task_family: The dataset's task family (`schema.TASK_FAMILIES`).
        overrides: Settings that replace the paper's (any keyword of `generate`).
        encoder_decoder: True for encoder-decoder LLMs (FlanT5), False for causal ones (Vicuna, ...): short-answer
            VQA uses length penalty -1 for the former and 0 for the latter, as LAVIS does.
    """
    settings = dict(_GENERATE_DEFAULT)
    if task_family == "captioning":
        settings.update(_GENERATE_CAPTIONING)
    elif task_family in _SHORT_ANSWER_FAMILIES:
        settings.update(_GENERATE_SHORT_ANSWER, length_penalty=_SHORT_ANSWER_LENGTH_PENALTY[encoder_decoder])
    settings.update(overrides or {})
    settings.setdefault("do_sample", False)
    if settings.get("num_beams") == 1 and "length_penalty" not in (overrides or {}):
        settings.pop("length_penalty", None)  # a beam-search option: greedy decoding would warn that it ignores it
    return settings


def _batches(dataset: datasets.Dataset, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield start, dataset[start : start + batch_size]


@torch.no_grad()
def _generate(
    model, processor, dataset: datasets.Dataset, task: EvalTask, batch_size: int, overrides, bar
) -> list[str]:
    encoder_decoder = not model.config.use_decoder_only_language_model
    settings = generation_settings(task.task_family, overrides, encoder_decoder=encoder_decoder)
    predictions: list[str] = []
    for _, batch in _batches(dataset, batch_size):
        inputs = processor(
            images=[list(images) for images in batch["images"]],
            text=list(batch["instruction"]),
            padding=True,
            padding_side="left",
        )
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = _qformer(processor, batch)
        # LAVIS: the LLM gets the prompt as embeddings only, so the repetition penalty spares the prompt's tokens
        generated = model.generate(**inputs, **settings, penalize_prompt=False)
        predictions.extend(processor.decode_generated(generated, inputs["input_ids"]))
        bar.update(len(batch["instruction"]))
    return predictions


def _qformer(processor, batch: Mapping[str, list]) -> tuple[torch.Tensor, torch.Tensor]:
    """The Q-Former reads ``qformer_text``, as in training (the converters make it the instruction, as LAVIS)."""
    encoded = processor.qformer_inputs(list(batch["qformer_text"]))
    return torch.tensor(encoded["qformer_input_ids"]), torch.tensor(encoded["qformer_attention_mask"])


def _verbaliser_sides(candidates: Sequence[Sequence[str]]) -> list[list[bool]] | None:
    """Per sample, per candidate: whether it is the positive class, if every sample's candidates are one positive
    and one negative verbaliser word (yes/no, true/false, in any order and case); else ``None`` (not binary)."""
    positive, negative = ({word.lower() for word in side} for side in VERBALISERS["binary"])
    sides = []
    for sample in candidates:
        words = [candidate.strip().lower() for candidate in sample]
        if len(words) != 2 or not all(word in positive | negative for word in words):
            return None
        is_positive = [word in positive for word in words]
        if is_positive[0] == is_positive[1]:
            return None
        sides.append(is_positive)
    return sides


def _check_candidates(task: EvalTask, start: int, batch: Mapping[str, list]) -> None:
    for offset, candidates in enumerate(batch["candidates"]):  # checked here so errors give dataset indices
        if not candidates:
            raise ValueError(f"dataset {task.name!r}, sample {start + offset}: the candidate list is empty.")
        if not all(candidate.strip() for candidate in candidates):
            raise ValueError(f"dataset {task.name!r}, sample {start + offset}: a candidate is empty.")


@torch.no_grad()
def _rank(model, processor, dataset: datasets.Dataset, task: EvalTask, batch_size: int, bar) -> tuple[list, list]:
    """Per sample: (the candidates' scores, the index of the prediction)."""
    sides = _verbaliser_sides(dataset["candidates"])
    scores: list[list[float]] = []
    predictions: list[int] = []
    for start, batch in _batches(dataset, batch_size):
        _check_candidates(task, start, batch)
        common: dict[str, Any] = {
            "qformer_prompts": list(batch["qformer_text"]),
            "batch_size": batch_size,
            "dataset": task.name,
        }
        images = [list(images) for images in batch["images"]]
        if sides is None:
            result = rank_candidates(
                model, processor, images, list(batch["instruction"]), batch["candidates"], **common
            )
            scores.extend(result.scores)
            predictions.extend(result.predictions)
        else:
            binary = score_verbalisers(
                model, processor, images, list(batch["instruction"]), "binary", reduce=_VERBALISER_REDUCE, **common
            )
            for i, label in enumerate(binary.labels):
                side = sides[start + i]  # a candidate's score is its class's score
                scores.append([binary.positive_scores[i] if p else binary.negative_scores[i] for p in side])
                predictions.append(side.index(bool(label)))
        bar.update(len(batch["instruction"]))
    return scores, predictions


def _score(
    task: EvalTask, dataset: datasets.Dataset, predictions: list[str], scores: list[list[float]] | None
) -> float:
    references = [list(answers) or [target] for answers, target in zip(dataset["answers"], dataset["target"])]
    return score_predictions(
        task.metric,
        task.name,
        predictions,
        references,
        candidates=list(dataset["candidates"]),
        candidate_scores=scores,
    )


@dataclass
class DatasetResult:
    """One dataset's result (``score`` on the metric's natural scale; the table shows x100 like the paper).

    ``chance`` is what guessing scores on the same scale (`chance_level`), or None where it is not defined.
    """

    dataset: str
    metric: str
    inference: str
    held_out: bool
    num_samples: int
    score: float
    predictions: list[str] = field(default_factory=list)
    chance: float | None = None


def chance_level(metric: str, inference: str, candidates: Sequence[Sequence[str]]) -> float | None:
    """The expected score of guessing, on the metric's scale, so a reader can tell a result from chance.

    Ranking: a uniformly random candidate is right with probability 1/n (accuracy, averaged over the samples), and
    its expected reciprocal rank is H_n / n (MRR); ROC-AUC of random scores is 0.5. Open generation (VQA accuracy,
    CIDEr, ...) has no finite set to guess from: None (shown as "-").
    """
    if metric == "roc_auc":
        return 0.5
    sizes = [len(c) for c in candidates]
    if inference != "rank" or not sizes or min(sizes) < 1:
        return None
    if metric == "accuracy":
        return sum(1 / n for n in sizes) / len(sizes)
    if metric == "mrr":
        return sum(sum(1 / k for k in range(1, n + 1)) / n for n in sizes) / len(sizes)
    return None


def _load(name: str, num_samples: int | None, seed: int) -> datasets.Dataset:
    if name in SYNTHETIC_HELD_IN or name in SYNTHETIC_HELD_OUT:
        return synthetic_dataset(name, num_samples or 200, seed=seed)
    if name in REGISTRY:
        dataset = load_instruction_dataset(name, "eval", zero_shot=True)
        return dataset.select(range(min(num_samples, len(dataset)))) if num_samples else dataset
    known = sorted(REGISTRY) + list(SYNTHETIC_HELD_IN + SYNTHETIC_HELD_OUT)
    raise ValueError(f"unknown evaluation dataset {name!r}; known: {', '.join(known)}.")


def evaluate_zero_shot(
    model: Any,
    processor: Any,
    datasets_to_run: Sequence[str] | Mapping[str, datasets.Dataset],
    *,
    batch_size: int = 8,
    num_samples: int | None = None,
    generation: Mapping[str, Any] | None = None,
    seed: int = 1234,
    progress: bool = True,
) -> dict[str, DatasetResult]:
    """Evaluate ``model`` zero-shot on each dataset; returns dataset name -> result.

    Args:
        model: An `InstructBlipForConditionalGeneration` (put in eval mode here).
        processor: Its processor.
        datasets_to_run: Names (registry datasets load their eval split from the Hub or your cache; synthetic tasks
            are generated) or ``{name: dataset}`` in the unified schema.
        batch_size: Samples per generate / ranking call.
        num_samples: Evaluate only the first ``num_samples`` of each dataset (synthetic: how many to generate).
        generation: Overrides of the paper's generation settings (e.g. ``{"num_beams": 1}``).
        seed: Seed of the synthetic evaluation sets (different from training seeds by default).
        progress: Show a progress bar per dataset.
    """
    model.eval()
    named = (
        dict(datasets_to_run)
        if isinstance(datasets_to_run, Mapping)
        else {name: _load(name, num_samples, seed) for name in datasets_to_run}
    )
    results = {}
    for name, dataset in named.items():
        if len(dataset) == 0:
            raise ValueError(f"dataset {name!r} has no samples to evaluate.")
        task = _task_for(name, dataset[0])
        with tqdm(total=len(dataset), desc=f"{name} ({task.inference})", disable=not progress) as bar:
            if task.inference == "rank":
                scores, ranked = _rank(model, processor, dataset, task, batch_size, bar)
                predictions = [candidates[i] for candidates, i in zip(dataset["candidates"], ranked)]
            else:
                scores, predictions = None, _generate(model, processor, dataset, task, batch_size, generation, bar)
        for i, prediction in enumerate(predictions):
            if not isinstance(prediction, str):
                raise BadSampleError(name, i, f"prediction is {type(prediction).__name__}, not text")
        value = _score(task, dataset, predictions, scores)
        chance = chance_level(task.metric, task.inference, dataset["candidates"])
        results[name] = DatasetResult(
            name, task.metric, task.inference, task.held_out, len(dataset), value, predictions, chance
        )
    return results


def _cell(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def results_table(results: Mapping[str, DatasetResult]) -> str:
    """Markdown table in the layout of the paper's Table 1 (scores x100; held-out datasets first, paper order).

    Under the model's row: the chance level of each task (`chance_level`; "-" for open generation) and the metric.
    """
    paper = [(name, title) for name, title in PAPER_TABLE1_ORDER if name in results]
    others = [(name, name) for name in results if name not in dict(PAPER_TABLE1_ORDER)]
    columns = paper + others
    header = "| model | " + " | ".join(title for _, title in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    cells = [_cell(results[name].score) for name, _ in columns]
    chance = "| chance level | " + " | ".join(_cell(results[name].chance) for name, _ in columns) + " |"
    metrics = "| metric | " + " | ".join(results[name].metric for name, _ in columns) + " |"
    # A score on another split than the paper's (VizWiz val) says so under the table (`DatasetSpec.results_caveat`).
    caveats = [
        f"* {title}: {REGISTRY[name].results_caveat}."
        for name, title in columns
        if name in REGISTRY and REGISTRY[name].results_caveat
    ]
    notes = ["", *caveats] if caveats else []
    return "\n".join([header, rule, "| this model | " + " | ".join(cells) + " |", chance, metrics, *notes])


def write_results(
    results: Mapping[str, DatasetResult],
    output_dir: str | Path,
    model_name: str = "",
    title: str = "Zero-shot results",
) -> tuple[Path, Path]:
    """Write ``results.json`` (scores and predictions) and ``results.md`` (the table under ``title``); return both
    paths."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    payload = {"model": model_name, "results": {name: asdict(result) for name, result in results.items()}}
    json_path = output / "results.json"
    json_path.write_text(json.dumps(payload, indent=2))
    table_path = output / "results.md"
    heading = f"# {title}{f' of {model_name}' if model_name else ''}\n\n"
    table_path.write_text(heading + results_table(results).replace("this model", model_name or "this model") + "\n")
    return json_path, table_path
