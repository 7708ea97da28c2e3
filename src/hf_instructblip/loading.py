"""Load what a user points the `generate` and `evaluate` commands at, or say in one line why it cannot be loaded.

`load_for_inference` takes a saved model folder (ours, or transformers' InstructBLIP layout), a LoRA adapter folder
written by ``hf-instructblip train`` (its base model is loaded and the adapter merged), or a Hub id; a missing folder,
a folder without a model, an adapter whose base is unknown, or a truncated/corrupt ``*.safetensors`` file is a
`ModelLoadError` that names the folder or file (instead of a Hub-connection error or a safetensors traceback).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_BASE_FOLDER", "ModelLoadError", "check_model_folder", "load_for_inference", "resolve_adapter_base"]

#: Where `train` saves a freshly built base model next to a LoRA adapter (the adapter config names it relatively).
ADAPTER_BASE_FOLDER = "base_model"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelLoadError(ValueError):
    """A model folder that cannot be loaded; the message names the folder or file and what to do."""


def _check_weights(folder: Path) -> None:
    """Open every safetensors file's header, so a truncated or corrupt one is named (safetensors does not)."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            raise ModelLoadError(
                f"cannot read {file}: {error} (the file is truncated or corrupt; save or download it again)."
            ) from error


def resolve_adapter_base(adapter_folder: str | os.PathLike) -> str:
    """The base model of a LoRA adapter folder: its ``base_model_name_or_path``, a relative one resolved against the
    adapter folder (then its parent, for ``checkpoint-*`` folders), else as written (an absolute path or Hub id).

    Raises:
        ModelLoadError: The adapter does not name its base model.
    """
    folder = Path(adapter_folder)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"{folder} is a LoRA adapter that does not name its base model (base_model_name_or_path is empty): load "
            "it with PeftModel.from_pretrained(<the base model>, adapter_folder), or set the key in "
            f"{folder / 'adapter_config.json'}."
        )
    for candidate in (folder / base, folder.parent / base):
        if not Path(base).is_absolute() and candidate.is_dir():
            return str(candidate)
    return str(base)


def _load_folder(path: str) -> tuple[Any, Any]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def _load_adapter(folder: Path) -> tuple[Any, Any]:
    from peft import PeftModel

    base_path = resolve_adapter_base(folder)
    base, processor = load_for_inference(base_path)
    model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload().eval()
    if (folder / "processor_config.json").is_file():
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(str(folder))
    return model, processor


def check_model_folder(path: str | os.PathLike) -> None:
    """Raise `ModelLoadError` if ``path`` is no loadable model folder: missing (and no Hub id), a file, no
    ``config.json``, or a truncated/corrupt ``*.safetensors`` file. A Hub id that is not a local folder passes."""
    folder = Path(path)
    if not folder.exists():
        if _HUB_ID.match(str(path)):
            return
        raise ModelLoadError(f"model folder {str(path)!r} does not exist.")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is a file; give the model folder (with config.json and the weights).")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} holds no config.json: not a saved model folder (save_pretrained writes one).")
    _check_weights(folder)


def load_for_inference(path: str | os.PathLike) -> tuple[Any, Any]:
    """The model (in eval mode) and processor saved in ``path``: a model folder, a LoRA adapter folder, or a Hub id.

    Raises:
        ModelLoadError: ``path`` is not a folder (nor a reachable Hub id), holds no model, or one of its weight files
            is truncated or corrupt; the message names it.
    """
    folder = Path(path)
    if not folder.exists():
        if not _HUB_ID.match(str(path)):
            raise ModelLoadError(f"model folder {str(path)!r} does not exist.")
        try:
            return _load_folder(str(path))
        except (OSError, ValueError) as error:  # offline, not found, gated: transformers says which, first line
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(
                f"model folder {str(path)!r} does not exist, and loading it as a Hub repo failed: {reason}"
            ) from error
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        return _load_adapter(folder)
    check_model_folder(folder)
    return _load_folder(str(folder))
