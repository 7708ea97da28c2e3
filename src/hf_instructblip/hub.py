"""Pushing to the Hugging Face Hub: a full model, a LoRA adapter or evaluation results, with a model card.

```python
>>> from hf_instructblip.hub import push_to_hub
>>> push_to_hub("outputs/my-model", "me/my-instructblip", results="outputs/eval")  # doctest: +SKIP
```

or ``hf-instructblip push outputs/my-model me/my-instructblip --results outputs/eval``. What the folder holds
decides what is pushed ([`folder_kind`]):

* **model**: ``config.json`` of an hf_instructblip model, safetensors weights and the processor files. Pushed with
  the remote-code files (`REMOTE_CODE_FILES`; taken from this package when the folder lacks them), so
  ``trust_remote_code=True`` loads it where hf_instructblip is not installed.
* **adapter**: ``adapter_config.json`` + ``adapter_model.safetensors`` (`training.lora.InstructBlipPeftModel`
  saves the query tokens in it). ``CardInfo.base_model`` also becomes ``base_model_name_or_path`` in the pushed
  config.
* **results**: ``results.json`` (+ ``results.md``) from `evaluation.write_results`. The repo's card gets the
  numbers (``model-index``) and the results table.

A push is ONE commit (`HfApi.create_commit`): every file lands or none does. The model card (the package's
``model_card.md`` rendered with `ModelCard.from_template`) goes into that commit as README.md; the local folder is
never written to. A README.md in the folder is kept only if it is one of ours (tagged ``hf_instructblip``, e.g. the
one `InstructBlipTrainer` writes); other cards (PEFT's placeholder) are replaced. Pickled files (``*.bin``, ``*.pt``,
...), hidden files and ``checkpoint-*`` folders are never pushed. Errors are `PushToHubError`s whose message never
contains the token.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

from huggingface_hub import CommitInfo, CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError
from huggingface_hub.utils import httpx

from .configuration_instructblip import InstructBlipConfig
from .data.mixture import mixture_weights
from .data.registry import REGISTRY
from .evaluation.harness import PAPER_TABLE1_ORDER, DatasetResult, results_table

__all__ = [
    "CARD_TAG",
    "REMOTE_CODE_FILES",
    "CardInfo",
    "PushToHubError",
    "folder_kind",
    "load_results",
    "push_to_hub",
    "render_model_card",
]

logger = logging.getLogger(__name__)

#: The files `trust_remote_code=True` imports (the classes in ``auto_map`` and their relative imports).
REMOTE_CODE_FILES = (
    "configuration_instructblip.py",
    "modeling_instructblip.py",
    "generation_instructblip.py",
    "modeling_qformer.py",
    "modeling_vision.py",
    "modeling_precision.py",
    "processing_instructblip.py",
    "image_processing_instructblip.py",
)
#: Tag of the cards this module renders.
CARD_TAG = "hf_instructblip"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_RESULTS_FILES = ("results.json", "results.md")
_RESULTS_SECTION = re.compile(r"<!-- hf_instructblip:results -->.*?<!-- /hf_instructblip:results -->", re.DOTALL)
_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_steps",
    "num_train_epochs",
    "seed",
    "bf16",
    "fp16",
    "frozen_dtype",
    "apply_trainable_policy",
    "same_dataset_per_batch",
    "mixture_multipliers",
)


class PushToHubError(OSError):
    """A push failed (network, authentication, the Hub). The message never contains the token."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


@dataclass
class CardInfo:
    """What the model card says beyond what the pushed folder holds.

    Args:
        base_model: Hub id(s) of the model this one was fine-tuned from (card metadata; for an adapter also the
            base in the usage snippet and ``base_model_name_or_path`` of the pushed ``adapter_config.json``).
        license: License identifier for the card metadata (e.g. ``"apache-2.0"``).
        datasets: Hub dataset ids trained on (default: the Hub copies of the mixture's registry datasets).
        tags: Extra tags.
        vision_source: Where the vision tower's weights came from (default: ``vision_config._name_or_path`` when it
            is a Hub id, else "not recorded").
        qformer_source: Where the Q-Former was initialised from (e.g. a BERT checkpoint).
        llm_source: Where the LLM came from (default: ``text_config._name_or_path`` when it is a Hub id).
        mixture_sizes: Training datasets and their sizes (the card shows the balanced sampling weights).
        mixture_multipliers: Manual factors on top of the sqrt(size) weights.
        training_args: ``TrainingArguments.to_dict()`` (hyperparameters); by default ``trainer_state.json`` in the
            folder gives steps, batch size and the last loss.
        log_history: ``Trainer.state.log_history`` (the last logged training loss).
    """

    base_model: str | list[str] | None = None
    license: str | None = None
    datasets: list[str] | None = None
    tags: list[str] = field(default_factory=list)
    vision_source: str | None = None
    qformer_source: str | None = None
    llm_source: str | None = None
    mixture_sizes: Mapping[str, int] | None = None
    mixture_multipliers: Mapping[str, float] | None = None
    training_args: Mapping[str, Any] | None = None
    log_history: Sequence[Mapping[str, Any]] | None = None


# ----- what is pushed --------------------------------------------------------------------------------------------
def folder_kind(folder: str | Path) -> str:
    """``"adapter"``, ``"model"`` or ``"results"``: what a folder holds (see the module docstring).

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
        ValueError: It holds none of the three (weights must be safetensors).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push: {folder} is not a directory.")
    if (folder / "adapter_config.json").is_file():
        if not (folder / "adapter_model.safetensors").is_file():
            raise ValueError(f"push: adapter folder {folder} has no adapter_model.safetensors (safetensors only).")
        return "adapter"
    if (folder / "config.json").is_file():
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        if model_type != "hf_instructblip":
            raise ValueError(
                f"push: {folder / 'config.json'} has model_type {model_type!r}, not 'hf_instructblip'; convert it "
                "first (hf-instructblip convert)."
            )
        if not any(folder.glob("*.safetensors")):
            raise ValueError(f"push: {folder} has no *.safetensors weights (save_pretrained writes them; no pickles).")
        return "model"
    if (folder / "results.json").is_file():
        return "results"
    raise ValueError(
        f"push: {folder} holds neither a model (config.json + *.safetensors), an adapter (adapter_config.json) "
        "nor evaluation results (results.json)."
    )


def _check_loadable(folder: Path) -> None:
    """A pushed model must load with ``trust_remote_code=True`` and come with its processor."""
    if "auto_map" not in json.loads((folder / "config.json").read_text()):
        raise ValueError(
            f"push: {folder / 'config.json'} has no auto_map, so trust_remote_code=True could not load it; save the "
            "model again with hf_instructblip imported."
        )
    if not any((folder / name).is_file() for name in _PROCESSOR_FILES):
        raise ValueError(
            f"push: {folder} has no processor ({' or '.join(_PROCESSOR_FILES)}); save it next to the model with "
            "processor.save_pretrained(folder)."
        )


def _is_pushed(relative: Path) -> bool:
    hidden = any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
    checkpoint = relative.parts[0].startswith("checkpoint-") or relative.parts[0] == "runs"
    readme = relative.as_posix() == "README.md"  # the card is rendered into the commit instead
    return not hidden and not checkpoint and not readme and relative.suffix not in _PICKLE_SUFFIXES


def _folder_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and _is_pushed(relative):
            files[relative.as_posix()] = path
    return files


# ----- results -----------------------------------------------------------------------------------------------------
def load_results(path: str | Path) -> dict[str, DatasetResult]:
    """Read ``results.json`` (or the folder holding it) as written by `evaluation.write_results`.

    Returns:
        Dataset name -> its `evaluation.harness.DatasetResult`.
    """
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"push: results file {path} does not exist (evaluation.write_results writes it).")
    try:
        entries = json.loads(path.read_text())["results"]
        return {name: DatasetResult(**entry) for name, entry in entries.items()}
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"push: {path} is not a results.json written by evaluation.write_results ({error})."
        ) from None


def _eval_results(results: Mapping[str, DatasetResult]) -> list[EvalResult]:
    """``model-index`` entries: one per dataset, the score x100 as in the paper's tables."""
    titles = dict(PAPER_TABLE1_ORDER)
    entries = []
    for name, result in results.items():
        if result.score != result.score:  # NaN: no number to report
            continue
        spec = REGISTRY.get(name)
        entries.append(
            EvalResult(
                task_type="image-text-to-text",
                task_name="Zero-shot image-text-to-text" if result.held_out else "Held-in image-text-to-text",
                dataset_type=(spec.hub_id if spec and spec.hub_id else name),
                dataset_name=titles.get(name, name),
                dataset_config=spec.hub_config if spec else None,
                dataset_split=spec.splits.get("eval") if spec else None,
                metric_type=result.metric,
                metric_name=f"{result.metric} (x100)",
                metric_value=round(100 * result.score, 2),
            )
        )
    return entries


def _results_section(results: Mapping[str, DatasetResult] | None) -> str:
    if not results:
        return "No evaluation results were pushed with this model."
    present = []
    if any(r.held_out for r in results.values()):
        present.append("held-out datasets: zero-shot, task types never trained on")
    if not all(r.held_out for r in results.values()):
        present.append("held-in datasets: unseen samples of trained tasks")
    table = results_table(results)
    return f"Results ({'; '.join(present)}; scores x100, the paper's Table 1 layout):\n\n{table}"


def _with_results(card: ModelCard, results: Mapping[str, DatasetResult], model_name: str) -> ModelCard:
    """``card`` (modified) with its ``model-index`` and our results section (added if missing) set to ``results``."""
    data = cast(ModelCardData, card.data)
    data.eval_results = _eval_results(results) or None
    if data.eval_results:
        data.model_name = model_name
    section = f"<!-- hf_instructblip:results -->\n{_results_section(results)}\n<!-- /hf_instructblip:results -->"
    if _RESULTS_SECTION.search(card.text):
        card.text = _RESULTS_SECTION.sub(lambda _: section, card.text)
    else:
        card.text = card.text.rstrip("\n") + "\n\n## Evaluation\n\n" + section + "\n"
    return card


# ----- the card ----------------------------------------------------------------------------------------------------
def _hub_id(name: Any) -> str | None:
    """``name`` if it looks like a Hub repo id (not a local path), else None."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) or name.startswith("."):
        return None
    return None if Path(name).exists() else name


def _components(config: Any, card: CardInfo) -> list[dict[str, str]]:
    vision, qformer, text = config.vision_config, config.qformer_config, config.text_config
    not_recorded = "not recorded"
    recorded = getattr(config, "part_sources", None) or {}  # written by building.build_model
    image_size = getattr(vision, "image_size", "?")
    text_width = getattr(text, "hidden_size", None) or getattr(text, "d_model", "?")
    text_layers = getattr(text, "num_hidden_layers", None) or getattr(text, "num_layers", "?")
    qformer_input = "instruction + queries" if config.qformer_text_input else "queries only (BLIP-2 ablation)"
    return [
        {
            "part": "vision tower",
            "architecture": f"{vision.model_type}, width {qformer.encoder_hidden_size}, "  # a CNN's: its channels
            + (f"{vision.num_hidden_layers} layers, " if hasattr(vision, "num_attention_heads") else "")  # not a CNN's
            + f"{image_size} px, feature layer {config.vision_feature_layer}",
            "source": card.vision_source
            or recorded.get("vision")
            or _hub_id(getattr(vision, "_name_or_path", None))
            or not_recorded,
            "trained": "no (frozen)",
        },
        {
            "part": "Q-Former",
            "architecture": f"width {qformer.hidden_size}, {qformer.num_hidden_layers} layers, cross-attention every "
            f"{qformer.cross_attention_frequency}, {config.num_query_tokens} queries, {qformer_input}",
            "source": card.qformer_source or recorded.get("qformer") or not_recorded,
            "trained": "yes (with query tokens, projection, vision LayerNorm)",
        },
        {
            "part": "language model",
            "architecture": f"{text.model_type}, width {text_width}, {text_layers} layers, vocabulary "
            f"{text.vocab_size}",
            "source": card.llm_source
            or recorded.get("llm")
            or _hub_id(getattr(text, "_name_or_path", None))
            or not_recorded,
            "trained": "no (frozen)",
        },
        {
            "part": "query tokens, projection",
            "architecture": f"{config.num_query_tokens} x {qformer.hidden_size} queries; linear {qformer.hidden_size} "
            f"-> {text_width}",
            "source": recorded.get("new", not_recorded),
            "trained": "yes",
        },
    ]


def _mixture_rows(card: CardInfo) -> list[dict[str, Any]]:
    if not card.mixture_sizes:
        return []
    weights = mixture_weights(card.mixture_sizes, card.mixture_multipliers)
    multipliers = dict(card.mixture_multipliers or {})
    return [
        {"name": name, "size": size, "multiplier": multipliers.get(name, 1.0), "weight": f"{weights[name]:.3f}"}
        for name, size in card.mixture_sizes.items()
    ]


def _hyperparameters(folder: Path | None, card: CardInfo) -> list[tuple[str, Any]]:
    """Hyperparameters from ``card.training_args``, else ``trainer_state.json``; plus steps and the last loss."""
    state_file = folder / "trainer_state.json" if folder is not None else None
    state = json.loads(state_file.read_text()) if state_file is not None and state_file.is_file() else {}
    rows: list[tuple[str, Any]] = []
    if card.training_args:
        values = {key: card.training_args.get(key) for key in _HYPERPARAMETERS}
        rows = [(key, value) for key, value in values.items() if value is not None and value != -1]  # -1: unset
    elif state:
        rows = [(key, state[key]) for key in ("train_batch_size", "max_steps", "num_train_epochs") if key in state]
    history = card.log_history if card.log_history is not None else state.get("log_history", [])
    losses = [entry["loss"] for entry in history if "loss" in entry]
    steps = [entry["step"] for entry in history if "step" in entry]
    if steps:
        rows.append(("optimizer steps done", max(steps)))
    if losses:
        rows.append(("last logged training loss", round(float(losses[-1]), 4)))
    return rows


def _adapter_info(folder: Path, card: CardInfo) -> tuple[dict[str, Any], str]:
    adapter = json.loads((folder / "adapter_config.json").read_text())
    base = card.base_model if isinstance(card.base_model, str) else None
    base = base or _hub_id(adapter.get("base_model_name_or_path")) or "<the base model's repo id>"
    modules = adapter.get("modules_to_save") or []
    lora = {
        "r": adapter.get("r"),
        "lora_alpha": adapter.get("lora_alpha"),
        "lora_dropout": adapter.get("lora_dropout"),
        "target_modules": adapter.get("target_modules"),
        "modules_to_save": ", ".join(f"`{m}`" for m in modules) + (", " if modules else "") + "`query_tokens`",
    }
    return lora, base


def _card_data(
    kind: str,
    card: CardInfo,
    base_model: str | None,
    mixture: list[dict[str, Any]],
    eval_results: list[EvalResult],
    model_name: str,
) -> ModelCardData:
    datasets = card.datasets
    if datasets is None and mixture:
        hub_ids = [REGISTRY[row["name"]].hub_id for row in mixture if row["name"] in REGISTRY]
        datasets = sorted({hub_id for hub_id in hub_ids if hub_id}) or None
    tags = list(dict.fromkeys([CARD_TAG, "instructblip", "vision-language", "custom_code", *card.tags]))
    return ModelCardData(
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag="image-text-to-text",
        base_model=card.base_model or (base_model if kind == "adapter" and _hub_id(base_model) else None),
        license=card.license,
        datasets=datasets,
        tags=tags,
        eval_results=eval_results or None,
        model_name=model_name if eval_results else None,
    )


def _template() -> str:
    return resources.files("hf_instructblip").joinpath("model_card.md").read_text(encoding="utf-8")


def render_model_card(
    folder: str | Path | None,
    repo_id: str,
    card: CardInfo | None = None,
    results: Mapping[str, DatasetResult] | None = None,
) -> ModelCard:
    """Render the package's model card template for a model or adapter folder.

    Args:
        folder: A model or adapter folder (its config gives the components), or None (results only).
        repo_id: The repo the card is for (usage snippet, ``model-index`` name).
        card: What the folder does not say (sources, mixture, hyperparameters, license, ...).
        results: Dataset name -> `DatasetResult` ([`load_results`]); they go into ``model-index`` and the table.

    Returns:
        A `huggingface_hub.ModelCard`; ``str(card)`` is the README.md text, deterministic for the same inputs.
    """
    card = card or CardInfo()
    folder = Path(folder) if folder is not None else None
    kind = folder_kind(folder) if folder is not None else "results"
    components: list[dict[str, str]] = []
    lora, base_model = None, None
    if folder is not None and kind == "model":
        components = _components(InstructBlipConfig.from_pretrained(folder), card)
    elif folder is not None and kind == "adapter":
        lora, base_model = _adapter_info(folder, card)
    mixture = _mixture_rows(card)
    model_name = repo_id.split("/")[-1]
    rendered = ModelCard.from_template(
        _card_data(kind, card, base_model, mixture, _eval_results(results or {}), model_name),
        template_str=_template(),
        model_name=model_name,
        repo_id=repo_id,
        kind=kind,
        base_model_id=base_model,
        components=components,
        lora=lora,
        mixture=mixture,
        hyperparameters=_hyperparameters(folder, card),
        results_section=_results_section(results),
    )
    rendered.text = re.sub(r"\n{3,}", "\n\n", rendered.text)  # the template's optional blocks leave blank runs
    return rendered


def _is_ours(card_text: str) -> bool:
    try:
        tags = cast(ModelCardData, ModelCard(card_text, ignore_metadata_errors=True).data).tags or []
    except ValueError:
        return False
    return CARD_TAG in tags


# ----- the push ----------------------------------------------------------------------------------------------------
def _operations(
    folder: Path,
    kind: str,
    repo_id: str,
    card: CardInfo,
    results: Mapping[str, DatasetResult] | None,
    results_path: Path | None,
) -> list[CommitOperationAdd]:
    files = _folder_files(folder)
    contents: dict[str, bytes | Path] = dict(files)
    if kind == "model":
        package = Path(__file__).parent
        for name in REMOTE_CODE_FILES:
            contents.setdefault(name, package / name)
    if kind == "adapter" and isinstance(card.base_model, str):
        adapter = json.loads((folder / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = card.base_model
        contents["adapter_config.json"] = (json.dumps(adapter, indent=2, sort_keys=True) + "\n").encode()
    if results_path is not None:
        results_folder = results_path if results_path.is_dir() else results_path.parent
        for name in _RESULTS_FILES:
            if (results_folder / name).is_file():
                contents[name] = results_folder / name
    if kind != "results":
        readme = folder / "README.md"
        existing = readme.read_text(encoding="utf-8") if readme.is_file() else None
        if existing is not None and _is_ours(existing):
            text = str(_with_results(ModelCard(existing), results, repo_id.split("/")[-1])) if results else existing
        else:
            text = str(render_model_card(folder, repo_id, card, results))
        contents["README.md"] = text.encode("utf-8")
    return [CommitOperationAdd(path_in_repo=path, path_or_fileobj=source) for path, source in contents.items()]


def _results_card(api: HfApi, repo_id: str, revision: str | None, results: Mapping[str, DatasetResult]) -> bytes:
    """The repo's README with new results (ours or not: only ``model-index`` and our results section change)."""
    try:
        path = api.hf_hub_download(repo_id, "README.md", revision=revision)
    except RemoteEntryNotFoundError:
        return str(render_model_card(None, repo_id, results=results)).encode("utf-8")
    return str(_with_results(ModelCard.load(path), results, repo_id.split("/")[-1])).encode("utf-8")


def _redact(text: str, secrets: Sequence[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _hub_error(error: BaseException | None) -> BaseException | None:
    """The network / HTTP error behind ``error`` (huggingface_hub wraps failed LFS uploads in RuntimeError)."""
    while error is not None:
        if isinstance(error, (HfHubHTTPError, httpx.HTTPError, ConnectionError)):
            return error
        error = error.__cause__
    return None


def _failure(error: BaseException, repo_id: str, endpoint: str, secrets: Sequence[str | None]) -> PushToHubError:
    """A clear error for a failed push, built from redacted text (and not chained, so no token can leak)."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if status == 401:
        reason = (
            "the Hub refused the token (HTTP 401). Pass a valid write token (token=..., HF_TOKEN, `hf auth login`)"
        )
    elif status == 403:
        reason = f"the token may not write to {repo_id} (HTTP 403)"
    elif status is not None:
        reason = f"the Hub answered HTTP {status} ({getattr(error, 'server_message', None) or detail})"
    else:
        reason = f"could not reach the Hub at {endpoint} ({type(error).__name__}: {detail})"
    message = (
        f"push to {repo_id} failed: {reason}. A push is one commit, so the repo was left as it was; "
        "run the push again once the cause is fixed."
    )
    return PushToHubError(_redact(message, secrets), status_code=status)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    results: str | Path | None = None,
    card: CardInfo | None = None,
    endpoint: str | None = None,
) -> CommitInfo:
    """Push a model, adapter or results folder to ``repo_id`` in one commit, with its model card.

    Args:
        folder: What to push (see [`folder_kind`]); never modified.
        repo_id: ``"namespace/name"``; created if missing (``private`` applies then).
        token: A write token; default: ``HF_TOKEN`` or the one saved by ``hf auth login``.
        private: Create the repo private (an existing repo keeps its visibility).
        revision: Branch to commit to; created from ``main`` if it does not exist.
        commit_message: Default: "Upload <kind> with hf_instructblip".
        create_pr: Open a pull request with the commit instead of committing to the branch.
        results: ``results.json`` (or its folder) to put on the card and push along; a ``results.json`` inside a
            model/adapter folder is used by default.
        card: What the card says beyond the folder ([`CardInfo`]).
        endpoint: The Hub URL (default: ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        The `huggingface_hub.CommitInfo` (``.commit_url``, ``.oid``, ``.pr_url``); if nothing changed, the head commit.

    Raises:
        FileNotFoundError, ValueError: The folder is not pushable (before anything is sent).
        PushToHubError: The Hub could not be reached or refused the push.
    """
    folder, card = Path(folder), card or CardInfo()
    kind = folder_kind(folder)
    if kind == "model":
        _check_loadable(folder)
    results_path = Path(results) if results is not None else None
    if results_path is None and (folder / "results.json").is_file():
        results_path = folder
    loaded = load_results(results_path) if results_path is not None else None
    operations = _operations(folder, kind, repo_id, card, loaded, results_path)
    api = HfApi(endpoint=endpoint, token=token)
    secrets = [token, get_token()]
    logger.info("Pushing %s %s (%d files) to %s", kind, folder, len(operations), repo_id)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None and not api.revision_exists(repo_id, revision):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        if kind == "results":
            readme = _results_card(api, repo_id, revision, loaded or {})
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=readme))
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {kind} with hf_instructblip",
            revision=revision,
            create_pr=create_pr,
        )
    except Exception as error:
        cause = _hub_error(error)
        if cause is None:
            raise
        raise _failure(cause, repo_id, api.endpoint, secrets) from None
