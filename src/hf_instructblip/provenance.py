"""Where every tensor of a built model came from: copied from which file (and name there), derived, or new.

`building.build_model` returns this as ``BuiltModel.provenance`` (model state-dict name -> [`TensorSource`]) and logs
[`format_provenance`]'s summary; the ``build`` command prints it. A model card can state the initialisation from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from torch import nn

from .checkpoint_files import CheckpointFiles

__all__ = ["Provenance", "TensorSource", "format_provenance", "loaded_part_sources", "new_sources"]

SourceKind = Literal["copied", "derived", "loaded", "new"]


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor of a built model came from.

    Args:
        kind: ``"copied"``: equals ``file[key]`` exactly. ``"derived"``: computed from ``file[key]`` (``note`` says
            how, e.g. rows appended for added tokens). ``"loaded"``: read from ``file`` by transformers'
            ``from_pretrained`` under a name or format we do not map (a GGUF file, a renamed key). ``"new"``:
            initialised here (seeded; ``note`` says why it is new).
        file: The file it was read from; None for a new tensor.
        key: Its name in ``file``, where known.
        note: How it was derived, what it is tied to, or why it is new.
    """

    kind: SourceKind
    file: str | None = None
    key: str | None = None
    note: str = ""

    def describe(self) -> str:
        """One line: ``copied from <file> [<key>]``, ``new (<note>)``, ..."""
        if self.kind == "new":
            return f"new ({self.note})" if self.note else "new"
        where = f"{self.file} [{self.key}]" if self.key else str(self.file)
        return f"{self.kind} from {where}" + (f"; {self.note}" if self.note else "")


#: Model state-dict name -> where that tensor came from.
Provenance = dict[str, TensorSource]


def new_sources(names: list[str], note: str) -> Provenance:
    """The same "new" source for each of ``names``."""
    return {name: TensorSource("new", note=note) for name in names}


def loaded_part_sources(
    part: nn.Module,
    prefix: str,
    files: CheckpointFiles | None,
    file_prefix: str,
    loaded_from: str,
    note: str = "read by transformers' from_pretrained",
) -> Provenance:
    """Sources of a part loaded by ``from_pretrained`` (a vision tower, an LLM), found by name in its files.

    Args:
        part: The loaded module.
        prefix: Its name in the built model (``"language_model."``).
        files: The safetensors files it was loaded from; None for a non-safetensors source (a GGUF file).
        file_prefix: Its tensors' prefix in those files (``"language_model."`` inside a BLIP-2 checkpoint).
        loaded_from: What to name where no file holds the tensor under its name (the folder, the GGUF file).
        note: What to say about those.
    """
    state = part.state_dict()
    sources: Provenance = {}
    found_at: dict[int, str] = {}  # data pointer -> name of a tensor found in the files (for tied weights)
    for name, tensor in state.items():
        key = file_prefix + name
        if files is not None and key in files:
            sources[prefix + name] = TensorSource("copied", files.path_of(key), key)
            found_at.setdefault(tensor.data_ptr(), name)
    for name, tensor in state.items():
        if prefix + name in sources:
            continue
        tied = found_at.get(tensor.data_ptr())
        if tied is not None:  # a tied output head or embedding: saved once, under the other name
            source = sources[prefix + tied]
            sources[prefix + name] = TensorSource("copied", source.file, source.key, f"tied to {prefix + tied}")
        else:
            sources[prefix + name] = TensorSource("loaded", loaded_from, note=note)
    return sources


def _block(name: str) -> str:
    """A tensor's block, layer indices starred: ``qformer.encoder.layer.*.intermediate``, ``embeddings.layernorm``."""
    starred = re.sub(r"\.\d+\.", ".*.", name)
    match = re.match(r"(.*\.\*\.[^.]+)\.", starred)
    return match.group(1) if match else starred.rsplit(".", 1)[0]


def _group(name: str) -> str:
    """Summary group of a tensor name: the top-level part; in the Q-Former, where sources mix, the block."""
    return _block(name) if name.startswith("qformer.") else name.split(".")[0]


def format_provenance(provenance: Mapping[str, TensorSource]) -> list[str]:
    """A readable summary: one line per (part or Q-Former block, source), in model order, with tensor counts."""
    counts: dict[tuple[str, str], int] = {}
    for name, source in provenance.items():
        group = _group(name)
        if source.key is not None:  # name the source's block (Q-Former) or top-level prefix, not one tensor
            key = _block(source.key) if group.startswith("qformer") else source.key.split(".")[0]
            source = TensorSource(source.kind, source.file, key, source.note)
        counts[(group, source.describe())] = counts.get((group, source.describe()), 0) + 1
    return [f"{group} ({n} tensor{'s' if n > 1 else ''}): {line}" for (group, line), n in counts.items()]
