"""The registry of the paper's 26 datasets (arXiv 2305.06500 §2.1, Figure 2), and one loader that turns any of them
into the unified schema.

`REGISTRY` maps each name to its [`DatasetSpec`] (`spec.py`): task family (template set), the paper's category and
metric, held-in or held-out, a public Hub copy (or ``None``, with the reason in ``notes``), the Hub splits, how its
columns map onto the roles a converter reads, the inference method and the zero-shot prompt. The 26 entries, with a
table of them, are in `paper_datasets.py`; the row converters they name are in `converters.py`. This module assembles
`REGISTRY`, `HELD_IN` and `HELD_OUT`, looks specs up (`get_spec`) and converts or loads a dataset
(`convert_rows`, `convert_dataset`, `load_instruction_dataset`).

Example:

>>> from hf_instructblip.data.registry import load_instruction_dataset
>>> textvqa = load_instruction_dataset("textvqa", "eval")  # doctest: +SKIP
>>> msvd = load_instruction_dataset("msvd_qa", "eval", data_files="msvd_test_frames.jsonl")  # doctest: +SKIP

The first reads the Hub copy (zero-shot prompts, since TextVQA is held out); the second reads local files in the
published format with an added ``frames`` column (datasets without a Hub copy: see `paper_datasets.py`).
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import datasets

# The converters, `Converter` and `resolve_visdial` lived here before the 26 entries moved out; they stay importable
# from this module for user code written against it.
from .converters import convert_captioning as convert_captioning
from .converters import convert_classification as convert_classification
from .converters import convert_conversation as convert_conversation
from .converters import convert_multiple_choice as convert_multiple_choice
from .converters import convert_question_generation as convert_question_generation
from .converters import convert_visual_dialog as convert_visual_dialog
from .converters import convert_vqa as convert_vqa
from .converters import convert_vqa_per_question as convert_vqa_per_question
from .converters import resolve_visdial
from .paper_datasets import HELD_IN_SPECS, HELD_OUT_SPECS
from .schema import INSTRUCTION_FEATURES, BadSampleError, BadSampleReport, OnBadSample
from .spec import METRICS, ConvertOptions, DatasetSpec
from .spec import Converter as Converter

__all__ = [
    "HELD_IN",
    "HELD_OUT",
    "METRICS",
    "REGISTRY",
    "ConvertOptions",
    "DatasetSpec",
    "convert_dataset",
    "convert_rows",
    "get_spec",
    "load_instruction_dataset",
    "resolve_visdial",
]

logger = logging.getLogger(__name__)


def _by_name(specs: Iterable[DatasetSpec]) -> dict[str, DatasetSpec]:
    """Name -> spec, refusing a name given twice (a later entry would silently replace the earlier one)."""
    registry: dict[str, DatasetSpec] = {}
    for spec in specs:
        if spec.name in registry:
            raise ValueError(f"dataset {spec.name!r} is specified twice in paper_datasets.py")
        registry[spec.name] = spec
    return registry


#: Registry name -> spec; held-in first, then held-out in the paper's results order (arXiv 2305.06500 Table 1).
REGISTRY: Mapping[str, DatasetSpec] = _by_name((*HELD_IN_SPECS, *HELD_OUT_SPECS))
HELD_IN: tuple[str, ...] = tuple(spec.name for spec in HELD_IN_SPECS)
HELD_OUT: tuple[str, ...] = tuple(spec.name for spec in HELD_OUT_SPECS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset.

    Raises:
        ValueError: Unknown name; the message lists the registered ones and the closest match.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}.{hint} Registered: {', '.join(REGISTRY)}.") from None


# ---------------------------------------------------------------------------------------------------------------------
# Converting rows and loading
# ---------------------------------------------------------------------------------------------------------------------


def _keep(row: Mapping[str, Any], spec: DatasetSpec) -> bool:
    """Whether the row is part of the benchmark (``spec.row_filter``); a row lacking a filter column is bad."""
    for column, allowed in spec.row_filter.items():
        if column not in row:
            raise ValueError(f"missing field `{column}` (only rows whose `{column}` is one of {allowed} are kept)")
        if row[column] not in allowed:
            return False
    return True


def _convert_row(
    row: Mapping[str, Any],
    index: int,
    spec: DatasetSpec,
    options: ConvertOptions,
    on_bad_sample: OnBadSample,
    report: BadSampleReport | None,
) -> list[dict[str, Any]]:
    try:
        if not _keep(row, spec):
            return []
        return spec.convert(row, index, spec, options)
    except ValueError as error:  # BadSampleError is a ValueError; helpers raise plain ValueErrors
        bad = error if isinstance(error, BadSampleError) else BadSampleError(spec.name, index, str(error))
    if on_bad_sample == "raise":
        raise bad
    if report is not None:
        report.add(bad)
    else:
        logger.warning("skipped %s", bad)
    return []


def convert_rows(
    rows: Iterable[Mapping[str, Any]],
    spec: DatasetSpec,
    *,
    seed: int = 0,
    zero_shot: bool = False,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
    extra_templates: bool = False,
) -> Iterator[dict[str, Any]]:
    """Convert source rows of ``spec``'s dataset into unified samples (several per row where a row holds several).

    Args:
        rows: Rows in the dataset's published schema (dicts, or a ``datasets.Dataset`` / ``IterableDataset``).
        spec: The dataset's spec (`get_spec`).
        seed: Template-sampling seed (training instructions).
        zero_shot: Use the spec's zero-shot prompt instead of a sampled template.
        on_bad_sample: ``"raise"``: the first bad row raises `BadSampleError` naming dataset and row;
            ``"skip"``: bad rows are dropped and counted in ``report`` (logged when ``report`` is None).
        report: Collects skipped rows.
        image_root, image_lookup, answer_candidates, extra_templates: See [`ConvertOptions`].

    Yields:
        Validated samples with the keys of `schema.INSTRUCTION_FEATURES`.
    """
    options = ConvertOptions(
        seed=seed,
        zero_shot=zero_shot,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=tuple(answer_candidates) if answer_candidates is not None else None,
        extra_templates=extra_templates,
    )
    for index, row in enumerate(rows):
        yield from _convert_row(row, index, spec, options, on_bad_sample, report)


def _batch_rows(batch: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    columns = list(batch)
    size = len(batch[columns[0]]) if columns else 0
    return [{column: batch[column][i] for column in columns} for i in range(size)]


def _batch_converter(spec: DatasetSpec, options: ConvertOptions, on_bad_sample: OnBadSample, report):
    def convert_batch(batch: Mapping[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {key: [] for key in INSTRUCTION_FEATURES}
        for row, index in zip(_batch_rows(batch), indices):
            for sample in _convert_row(row, index, spec, options, on_bad_sample, report):
                for key in out:
                    out[key].append(sample[key])
        return out

    return convert_batch


def _generate_samples(source, spec: DatasetSpec, options: ConvertOptions, on_bad_sample: OnBadSample, report):
    for index, row in enumerate(source):
        yield from _convert_row(row, index, spec, options, on_bad_sample, report)


def _undecoded(source):
    """Source with top-level Image columns left undecoded ({"bytes", "path"}): no PIL round trip per row."""
    features = getattr(source, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            source = source.cast_column(name, datasets.Image(decode=False))
    return source


def convert_dataset(
    source: datasets.Dataset | datasets.IterableDataset,
    spec: DatasetSpec | str,
    *,
    seed: int = 0,
    zero_shot: bool | None = None,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
    extra_templates: bool = False,
) -> datasets.Dataset | datasets.IterableDataset:
    """Convert a ``datasets.Dataset`` (or ``IterableDataset``) in a registered dataset's schema.

    Use it for data you loaded or filtered yourself (e.g. Flickr30K's Karpathy 1K test subset). Arguments as in
    [`load_instruction_dataset`]. Map-style results are cached by ``datasets`` unless a ``report`` is given (a cached
    result would not count skipped rows again).
    """
    spec = get_spec(spec) if isinstance(spec, str) else spec
    options = ConvertOptions(
        seed=seed,
        zero_shot=spec.held_out if zero_shot is None else zero_shot,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=tuple(answer_candidates) if answer_candidates is not None else None,
        extra_templates=extra_templates,
    )
    source = _undecoded(source)
    if isinstance(source, datasets.IterableDataset):
        return datasets.IterableDataset.from_generator(
            _generate_samples,
            features=INSTRUCTION_FEATURES,
            gen_kwargs={
                "source": source,
                "spec": spec,
                "options": options,
                "on_bad_sample": on_bad_sample,
                "report": report,
            },
        )
    return source.map(
        _batch_converter(spec, options, on_bad_sample, report),
        batched=True,
        with_indices=True,
        remove_columns=source.column_names,
        features=INSTRUCTION_FEATURES,
        load_from_cache_file=False if report is not None else None,
        desc=f"Converting {spec.name}",
    )


_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _builder_for(data_files: Any) -> str:
    first = data_files
    while not isinstance(first, (str, os.PathLike)):
        if isinstance(first, Mapping):
            first = next(iter(first.values()))
        elif isinstance(first, Sequence) and first:
            first = first[0]
        else:
            raise ValueError(f"cannot read data_files={data_files!r}; pass path=<builder> (json, csv, parquet, ...)")
    suffix = os.path.splitext(os.fspath(first))[1].lower()
    if suffix not in _BUILDERS:
        raise ValueError(f"no builder known for {suffix!r} files; pass path=<builder> (json, csv, parquet, ...)")
    return _BUILDERS[suffix]


def _load_local(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]):
    data_files = load_kwargs.get("data_files")
    builder = load_kwargs.pop("path", None) or _builder_for(data_files)
    local_split = "train"
    if isinstance(data_files, Mapping):
        if split not in data_files:
            raise ValueError(f"data_files has splits {list(data_files)}, not {split!r}")
        local_split = split
    return datasets.load_dataset(builder, split=local_split, streaming=streaming, **load_kwargs)


def _load_hub(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]):
    if spec.hub_id is None:
        raise ValueError(
            f"{spec.name} has no public Hub copy ({spec.notes}) Pass data_files=<your local files> "
            "(json/jsonl/csv/parquet in the published format) or convert your own dataset with convert_dataset."
        )
    if split not in spec.splits:
        raise ValueError(f"{spec.name} has splits {list(spec.splits)} (ours), not {split!r}")
    hub_split = spec.splits[split]
    if hub_split in spec.hub_data_files:
        load_kwargs.setdefault("data_files", {hub_split: spec.hub_data_files[hub_split]})
    return datasets.load_dataset(spec.hub_id, spec.hub_config, split=hub_split, streaming=streaming, **load_kwargs)


def _hub_image_lookup(spec: DatasetSpec, split: str, streaming: bool, load_kwargs: dict[str, Any]) -> dict:
    config, id_column, image_column = spec.image_table  # type: ignore[misc]
    table = datasets.load_dataset(spec.hub_id, config, split=spec.splits[split], streaming=streaming, **load_kwargs)
    return {row[id_column]: row[image_column] for row in _undecoded(table)}


def load_instruction_dataset(
    name: str,
    split: str = "train",
    *,
    streaming: bool = False,
    seed: int = 0,
    zero_shot: bool | None = None,
    on_bad_sample: OnBadSample = "raise",
    report: BadSampleReport | None = None,
    image_root: str | os.PathLike | None = None,
    image_lookup: Mapping[Any, Any] | Callable[[Any], Any] | None = None,
    answer_candidates: Sequence[str] | None = None,
    extra_templates: bool = False,
    **load_kwargs: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load a registered dataset through ``datasets.load_dataset`` and convert it to the unified schema.

    Args:
        name: Registry name (`HELD_IN`, `HELD_OUT`).
        split: ``"train"`` or ``"eval"`` (mapped to the Hub split by the spec).
        streaming: Return an ``IterableDataset`` (nothing is downloaded up front).
        seed: Template-sampling seed.
        zero_shot: Instruction = the zero-shot prompt; default True for held-out datasets, False for held-in ones.
        on_bad_sample: ``"raise"`` or ``"skip"`` (see [`convert_rows`]).
        report: Collects skipped rows (``on_bad_sample="skip"``).
        image_root: Prefix for relative image paths (overrides the spec's, e.g. a local COCO directory).
        image_lookup: Image id -> image, for datasets that reference images by id (GQA).
        answer_candidates: Candidates stored in every sample (answer vocabulary for ranking video QA).
        extra_templates: Sample training instructions from our extra templates too (`templates.EXTRA_TEMPLATES`);
            by default only the family's default ones (the paper's, where it publishes them).
        **load_kwargs: Passed to ``datasets.load_dataset``. With ``data_files`` (or ``path=<builder>``) the local
            files are read with the ``json`` / ``csv`` / ``parquet`` builder (or the one given) instead of the Hub
            id; a dict ``data_files`` must contain ``split``.

    Returns:
        ``datasets.Dataset`` (or ``IterableDataset``) with features `schema.INSTRUCTION_FEATURES`.

    Raises:
        ValueError: Unknown dataset or split; no Hub copy and no ``data_files``; GQA-style id images without a lookup.
        BadSampleError: A bad row, when ``on_bad_sample="raise"``.
    """
    spec = get_spec(name)
    local = "data_files" in load_kwargs or "path" in load_kwargs
    if spec.image_table is not None and image_lookup is None:
        if local:
            raise ValueError(
                f"{spec.name} rows reference images by id (`{spec.columns['image']}`); pass image_lookup="
                "<mapping or callable id -> image> when loading local files"
            )
        image_lookup = _hub_image_lookup(spec, split, streaming, dict(load_kwargs))
    source = (_load_local if local else _load_hub)(spec, split, streaming, dict(load_kwargs))
    return convert_dataset(
        source,
        spec,
        seed=seed,
        zero_shot=zero_shot,
        on_bad_sample=on_bad_sample,
        report=report,
        image_root=image_root,
        image_lookup=image_lookup,
        answer_candidates=answer_candidates,
        extra_templates=extra_templates,
    )
