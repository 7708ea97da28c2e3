"""Official checkpoints <-> ours.

Loading transformers' / Salesforce's InstructBLIP needs no conversion: ``from_pretrained`` reads that layout directly
(same tensor names). [`export_to_transformers`] writes ours back in a form stock transformers loads, and
[`convert_checkpoint`] converts a saved folder either way. Building a new model from parts is `building.build_model`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import transformers

from .building import saved_model_type
from .configuration_instructblip import TRANSFORMERS_MODEL_TYPE, InstructBlipConfig
from .modeling_instructblip import _VISION_MODEL_CLASSES, InstructBlipForConditionalGeneration

__all__ = ["convert_checkpoint", "export_to_transformers"]

_WEIGHT_AND_CONFIG_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


# ----- export to transformers' own InstructBLIP --------------------------------------------------------------------
def export_to_transformers(model: InstructBlipForConditionalGeneration, save_directory: str | os.PathLike) -> None:
    """Save ``model`` as a folder that stock ``transformers.InstructBlipForConditionalGeneration`` loads.

    Possible when the model has the architecture transformers' port implements: the InstructBLIP/BLIP-2 ViT,
    its last hidden state feeding the Q-Former, and the instruction fed to the Q-Former.
    """
    config = model.config
    problems = []
    if config.vision_config.model_type not in _VISION_MODEL_CLASSES:
        problems.append(
            f"vision tower {config.vision_config.model_type!r} (transformers' port only has the InstructBLIP ViT)"
        )
    if config.vision_feature_layer != -1:
        problems.append(f"vision_feature_layer={config.vision_feature_layer} (transformers' port uses -1)")
    if not config.qformer_text_input:
        problems.append("qformer_text_input=False (transformers' port always feeds the instruction)")
    if config.image_token_index is None:
        problems.append("no image_token_index")
    if problems:
        raise ValueError("Cannot export to transformers' InstructBLIP: " + "; ".join(problems) + ".")

    vision = {**config.vision_config.to_dict(), "model_type": "instructblip_vision_model"}
    qformer = {**config.qformer_config.to_dict(), "model_type": "instructblip_qformer"}
    hf_config = transformers.InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=config.text_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_token_index=config.image_token_index,
    )
    with torch.device("meta"):  # no second copy of the weights: they are assigned from `model` below
        hf_model = transformers.InstructBlipForConditionalGeneration(hf_config)
    hf_model.load_state_dict(model.state_dict(), strict=True, assign=True)
    ours = dict(model.named_buffers())
    for name, buffer in list(
        hf_model.named_buffers()
    ):  # non-persistent buffers (position ids) are not in a state dict
        if buffer.is_meta:
            module_name, _, buffer_name = name.rpartition(".")
            hf_model.get_submodule(module_name)._buffers[buffer_name] = ours[name].clone()
    hf_model.generation_config = model.generation_config
    hf_model.save_pretrained(save_directory)


def _copy_side_files(source: Path, destination: Path) -> None:
    """Copy tokenizer/processor files (anything that is not weights or model config) next to converted weights."""
    for item in source.iterdir():
        if item.name in _WEIGHT_AND_CONFIG_FILES or item.suffix in (".safetensors", ".bin", ".pt", ".pth"):
            continue
        target = destination / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def convert_checkpoint(source: str | os.PathLike, destination: str | os.PathLike, to: str | None = None) -> str:
    """Convert a saved folder between transformers' InstructBLIP layout and ours.

    Args:
        source: A folder with ``config.json`` + safetensors weights.
        destination: Output folder (created). Tokenizer and processor files are copied along.
        to: ``"hf_instructblip"`` or ``"transformers"``; by default the other format than ``source``'s.

    Returns:
        The format written.
    """
    source, destination = Path(source), Path(destination)
    model_type = saved_model_type(source, "convert")
    known = {TRANSFORMERS_MODEL_TYPE: "transformers", InstructBlipConfig.model_type: "hf_instructblip"}
    if model_type not in known:
        raise ValueError(
            f"convert: {source / 'config.json'} has model_type {model_type!r}; expected one of {sorted(known)} "
            "(transformers' InstructBLIP or hf_instructblip)."
        )
    target = to or ("hf_instructblip" if known[model_type] == "transformers" else "transformers")
    if target not in ("hf_instructblip", "transformers"):
        raise ValueError(f"convert: `to` must be 'hf_instructblip' or 'transformers', got {target!r}.")
    if source.resolve() == destination.resolve():
        raise ValueError("convert: destination must differ from source (nothing the user saved is overwritten).")
    model = InstructBlipForConditionalGeneration.from_pretrained(source)
    destination.mkdir(parents=True, exist_ok=True)
    _copy_side_files(source, destination)
    if target == "transformers":
        export_to_transformers(model, destination)
    else:
        model.save_pretrained(destination)
    return target
