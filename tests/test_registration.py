"""Auto classes, pipeline and `trust_remote_code` loading without the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    pipeline,
)

from conftest import HIDE_PACKAGE, make_processor, model_for, tiny_config
from hf_instructblip import (
    HfInstructBlipProcessor,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipImageProcessor,
)

GENERATE = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False}


@pytest.fixture
def saved(tokenizer_dirs, tmp_path):
    """A saved tiny model + processor, the layout `build_model(...).save_pretrained` writes."""
    processor = make_processor(tokenizer_dirs)
    model = model_for(processor)
    path = tmp_path / "tiny-instructblip"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    return path, model, processor


def test_auto_classes_resolve_to_ours(saved):
    path, _, _ = saved
    config = AutoConfig.from_pretrained(path)
    assert isinstance(config, InstructBlipConfig)
    assert isinstance(AutoConfig.for_model("hf_instructblip", num_query_tokens=8), InstructBlipConfig)
    for auto in (AutoModel, AutoModelForImageTextToText):
        loaded = auto.from_pretrained(path)
        assert type(loaded) is InstructBlipForConditionalGeneration
        assert type(auto.from_config(tiny_config())) is InstructBlipForConditionalGeneration
    assert type(AutoProcessor.from_pretrained(path)) is HfInstructBlipProcessor
    assert type(AutoImageProcessor.from_pretrained(path)) is InstructBlipImageProcessor
    # every backend maps to ours, not to the name-matched transformers entry (BLIP's image processors)
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    assert set(IMAGE_PROCESSOR_MAPPING[InstructBlipConfig].values()) == {InstructBlipImageProcessor}


def test_saved_folder_carries_its_code(saved):
    path, _, _ = saved
    auto_map = json.loads((path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_instructblip.InstructBlipConfig",
        "AutoModel": "modeling_instructblip.InstructBlipForConditionalGeneration",
        "AutoModelForImageTextToText": "modeling_instructblip.InstructBlipForConditionalGeneration",
    }
    processor_map = json.loads((path / "processor_config.json").read_text())["auto_map"]
    assert processor_map["AutoProcessor"] == "processing_instructblip.HfInstructBlipProcessor"
    for name in (
        "configuration_instructblip.py",
        "modeling_instructblip.py",
        "generation_instructblip.py",
        "modeling_qformer.py",
        "processing_instructblip.py",
        "image_processing_instructblip.py",
    ):
        assert (path / name).is_file(), name


def test_pipeline_image_text_to_text(saved, tmp_path):
    path, model, processor = saved
    pipe = pipeline("image-text-to-text", model=str(path))
    assert isinstance(pipe.model, InstructBlipForConditionalGeneration)
    assert isinstance(pipe.processor, HfInstructBlipProcessor)
    photo = Image.open(tmp_path / "photo.png")
    result = pipe(images=photo, text="What is this?", return_full_text=False, generate_kwargs=GENERATE)
    inputs = processor(images=photo, text="What is this?")
    expected = processor.decode_generated(model.generate(**inputs, **GENERATE), inputs["input_ids"])[0]
    assert result[0]["generated_text"].strip() == expected
    chat = [
        {"role": "user", "content": [{"type": "image", "image": photo}, {"type": "text", "text": "What is this?"}]}
    ]
    result = pipe(text=chat, return_full_text=False, generate_kwargs=GENERATE)
    assert result[0]["generated_text"].strip() == expected


_HIDDEN_PACKAGE_SCRIPT = (
    HIDE_PACKAGE
    + """
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

model = AutoModelForImageTextToText.from_pretrained(PATH, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(PATH, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
inputs = processor(images=Image.open(PHOTO), text="What is this?")
with torch.no_grad():
    logits = model(**inputs).logits
save_file({"logits": logits.contiguous(), "ids": model.generate(**inputs, **GENERATE)}, OUT)
"""
)


def test_trust_remote_code_without_the_package(saved, tmp_path):
    path, model, processor = saved
    out = tmp_path / "remote.safetensors"
    header = (
        f"PATH = {str(path)!r}\nPHOTO = {str(tmp_path / 'photo.png')!r}\nOUT = {str(out)!r}\nGENERATE = {GENERATE!r}\n"
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", header + textwrap.dedent(_HIDDEN_PACKAGE_SCRIPT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = load_file(out)
    inputs = processor(images=Image.open(tmp_path / "photo.png"), text="What is this?")
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(**inputs).logits)
    assert torch.equal(remote["ids"], model.generate(**inputs, **GENERATE))


def test_cli_generate(saved, tmp_path, capsys):
    from hf_instructblip.cli import main

    path, model, processor = saved
    photo = tmp_path / "photo.png"
    assert (
        main(["generate", str(path), "--image", str(photo), "--prompt", "What is this?", "--max-new-tokens", "4"]) == 0
    )
    inputs = processor(images=Image.open(photo), text="What is this?")
    expected = processor.decode_generated(
        model.generate(**inputs, max_new_tokens=4, do_sample=False), inputs["input_ids"]
    )
    assert capsys.readouterr().out.strip() == expected[0]
    assert main(["generate", str(path), "--image", str(tmp_path / "missing.png")]) == 2
    assert "--image " + str(tmp_path / "missing.png") + ": no such file" in capsys.readouterr().err
