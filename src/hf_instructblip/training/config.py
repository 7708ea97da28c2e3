"""The `train` command's config file: one YAML or JSON file, three sections, each parsed by `HfArgumentParser`.

```yaml
model:      # ModelArguments: a saved model, or the parts to build one from; optional LoRA
  model_name_or_path: outputs/demo-model
data:       # DataArguments: which datasets, how many samples, sequence lengths
  datasets: [synthetic_held_in]
  samples_per_dataset: 200
training:   # InstructBlipTrainingArguments: transformers' TrainingArguments with the paper's recipe as defaults
  output_dir: outputs/my-run
  max_steps: 100
```

The argument classes are in `training.arguments`. ``--section.key value`` overrides on the command line
(`apply_overrides`) are applied before parsing; an unknown section or key is named with the closest known one.
Your data files in the file (``data.custom_datasets``' ``source`` and ``image_root``) are relative to the config
file's folder, so a config and its data move together; paths given as overrides, ``output_dir`` and model folders are
relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .arguments import DataArguments, InstructBlipTrainingArguments, ModelArguments

__all__ = ["SECTIONS", "apply_overrides", "load_config", "parse_config", "resolve_data_paths"]

SECTIONS: dict[str, Any] = {
    "model": ModelArguments,
    "data": DataArguments,
    "training": InstructBlipTrainingArguments,
}


# ----- config files -----------------------------------------------------------------------------------------------
class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.2 scalars: only true/false are booleans (``save_strategy: no`` stays "no"), ``1e-3`` is a float."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: no arbitrary objects


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (``.yaml`` / ``.yml``) or JSON file into a dict of sections."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            config = _yaml(text)
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: not valid YAML: {error}") from error
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); YAML files need a .yaml suffix.") from error
    config = config if config is not None else {}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping with sections {list(SECTIONS)}, got {type(config).__name__}.")
    return config


#: Keys of a ``data.custom_datasets`` entry that are paths, resolved against the config file's folder.
_DATA_PATH_KEYS = ("source", "image_root")


def resolve_data_paths(config: dict[str, Any], folder: str | os.PathLike) -> dict[str, Any]:
    """Make the relative ``source`` / ``image_root`` of every ``data.custom_datasets`` entry relative to ``folder``."""
    data = config.get("data")
    entries = data.get("custom_datasets") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return config
    for entry in entries:
        for key in _DATA_PATH_KEYS:
            value = entry.get(key) if isinstance(entry, dict) else None
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                entry[key] = str(Path(folder) / value)
    return config


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``--section.key value`` / ``--section.key=value`` (values read as YAML: ``10``, ``true``, ``[a, b]``).

    Dotted keys go deeper (``--model.vision.hidden_size 64``). Returns a new dict; ``config`` is unchanged.
    """
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    tokens = list(overrides)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            raise ValueError(f"override {token!r}: expected --section.key value (e.g. --training.max_steps 10).")
        key, has_value, value = token[2:].partition("=")
        if not has_value:
            if not tokens:
                raise ValueError(f"override --{key} has no value.")
            value = tokens.pop(0)
        path = key.split(".")
        if len(path) < 2 or not all(path):
            raise ValueError(f"override --{key}: name a section and a key, e.g. --training.max_steps 10.")
        node = config
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override --{key}: `{part}` is not a mapping in the config.")
            node = child
        node[path[-1]] = _yaml(value)
    return config


def _scalar_type(annotation: Any) -> type | None:
    """int / float / bool when the field's type is one of them (optionally with None), else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if len(args) == 1 and args[0] in (int, float, bool) else None


def _coerce(section: str, cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Convert strings to the field's int / float / bool (YAML reads ``1e-3`` as a string); name the key on error."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        target = _scalar_type(hints.get(key))
        if target is None or not isinstance(value, str):
            continue
        try:
            out[key] = string_to_bool(value) if target is bool else target(value)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{section}.{key}: expected {target.__name__}, got {value!r}.") from error
    return out


def _check_keys(section: str, values: Any) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"section `{section}` must be a mapping, got {type(values).__name__}.")
    known = {f.name for f in dataclasses.fields(SECTIONS[section]) if f.init}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise ValueError(f"section `{section}`: unknown key `{key}`{hint}.")


def _parse_section(section: str, values: dict[str, Any]) -> Any:
    cls = SECTIONS[section]
    try:
        (parsed,) = HfArgumentParser(cls).parse_dict(_coerce(section, cls, values))
    except (TypeError, ValueError) as error:
        message = str(error)
        raise ValueError(message if message.startswith(f"{section}") else f"{section}: {message}") from error
    return parsed


def parse_config(
    path: str | os.PathLike, overrides: Sequence[str] = ()
) -> tuple[ModelArguments, DataArguments, InstructBlipTrainingArguments]:
    """Parse a config file (+ ``--section.key value`` overrides) into the three argument dataclasses.

    Raises:
        ValueError: An unknown section or key (named, with the closest known key), a value of the wrong type, or an
            argument class's own validation error (prefixed with the section).
        FileNotFoundError: No such config file.
    """
    config = apply_overrides(resolve_data_paths(load_config(path), Path(path).parent), overrides)
    unknown = sorted(set(config) - set(SECTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; expected {list(SECTIONS)}.")
    sections = {name: config.get(name) or {} for name in SECTIONS}
    for name, values in sections.items():  # every key is checked before any section's own validation runs
        _check_keys(name, values)
    model_args = _parse_section("model", sections["model"])
    data_args = _parse_section("data", sections["data"])
    training_args = _parse_section("training", sections["training"])
    return model_args, data_args, training_args
