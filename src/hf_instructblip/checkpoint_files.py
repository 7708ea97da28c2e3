"""A saved model folder's files: its ``model_type``, which safetensors file holds which tensor, reading a few of them.

Building reads parts of checkpoints without instantiating them (a Q-Former out of a 7B BLIP-2 or InstructBLIP folder)
and records which file every tensor came from (`provenance`). Safetensors only: pickled weights are never read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

__all__ = ["CheckpointFiles", "saved_model_type"]

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


def saved_model_type(folder: Path, argument: str) -> str | None:
    """``model_type`` of the saved model in ``folder``; ``argument`` names the caller's argument in the error."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{argument}: {config_file} does not exist; expected a saved model folder.")
    return json.loads(config_file.read_text()).get("model_type")


class CheckpointFiles:
    """The safetensors weights of ``folder`` (one ``model.safetensors`` or shards listed in its index).

    Args:
        folder: A saved model folder.
        argument: Names the caller's argument in errors (e.g. ``"build_model(qformer=...)"``).
    """

    def __init__(self, folder: str | Path, argument: str = "checkpoint"):
        self.folder = Path(folder)
        self.argument = argument
        self._files: dict[str, str] = self._key_files()

    def _key_files(self) -> dict[str, str]:
        """Tensor name -> file name (relative to the folder)."""
        index = self.folder / _INDEX
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            missing = sorted({name for name in weight_map.values() if not (self.folder / name).is_file()})
            if missing:
                raise FileNotFoundError(f"{self.argument}: {self.folder} lacks the shards {missing} its index names.")
            return weight_map
        if not (self.folder / _SINGLE).is_file():
            raise FileNotFoundError(
                f"{self.argument}: {self.folder} holds neither {_SINGLE} nor {_INDEX} (safetensors weights only)."
            )
        with safe_open(str(self.folder / _SINGLE), framework="pt") as weights:
            return dict.fromkeys(weights.keys(), _SINGLE)

    def __iter__(self) -> Iterator[str]:
        """Every tensor name in the checkpoint."""
        return iter(self._files)

    def __contains__(self, key: object) -> bool:
        return key in self._files

    def path_of(self, key: str) -> str:
        """The file that holds ``key`` (a path a user can open)."""
        return str(self.folder / self._files[key])

    def read(self, keys: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors named ``keys``, each file opened once; a name not in the checkpoint is an error."""
        keys = list(keys)
        absent = [key for key in keys if key not in self._files]
        if absent:
            raise KeyError(f"{self.argument}: {self.folder} has no tensors {absent[:5]}.")
        by_file: dict[str, list[str]] = {}
        for key in keys:
            by_file.setdefault(self._files[key], []).append(key)
        tensors: dict[str, torch.Tensor] = {}
        for name, names in by_file.items():
            with safe_open(str(self.folder / name), framework="pt") as weights:
                tensors.update((key, weights.get_tensor(key)) for key in names)
        return tensors

    def read_where(self, wanted: Callable[[str], bool]) -> dict[str, torch.Tensor]:
        """Every tensor whose name satisfies ``wanted``."""
        return self.read(key for key in self._files if wanted(key))
