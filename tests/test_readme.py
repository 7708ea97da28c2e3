"""README.md's Python blocks run as written, and its first block's batch answers exactly as each sample alone.

The blocks are read from README.md at test time and executed in order in one namespace (as a reader pastes them
into one session), in a folder where "my-instructblip" is a tiny saved model (causal or seq2seq LLM, with the
generation settings this package writes) and "my_data/train.jsonl" a small JSONL of image paths; ``photo1`` and
``photo2`` are real photographs (scikit-image's samples). Only blocks with placeholder paths of the reader's own
checkpoints ("path/to/...") are not run.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as photos

from conftest import make_processor, model_for
from hf_instructblip.generation_instructblip import PAPER_GENERATION_SETTINGS

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = "path/to/"


def python_blocks() -> list[str]:
    """Every ```python block, those indented in a list item included (dedented)."""
    found = re.findall(r"^( *)```python\n(.*?)^\1```", README.read_text(), flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(block) for _, block in found]


@pytest.fixture
def reader_folder(tmp_path, tokenizer_dirs, llm, monkeypatch):
    """The reader's working folder: the saved model, their JSONL with images; the current directory."""
    processor = make_processor(tokenizer_dirs, image_size=30)
    model = model_for(processor, llm)
    model.generation_config.update(**PAPER_GENERATION_SETTINGS)  # what build_model writes
    model.save_pretrained(tmp_path / "my-instructblip")
    processor.save_pretrained(tmp_path / "my-instructblip")
    (tmp_path / "my_data" / "img").mkdir(parents=True)
    rows = []
    for i, (question, answer) in enumerate([("What colour is it?", "red"), ("What is it?", "a cup")] * 4):
        Image.new("RGB", (20, 20), (30 * i, 100, 200)).save(tmp_path / "my_data" / "img" / f"{i}.png")
        rows.append({"image_path": f"img/{i}.png", "q": question, "a": answer})
    (tmp_path / "my_data" / "train.jsonl").write_text("\n".join(map(json.dumps, rows)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_readme_blocks_run_and_batched_answers_equal_single_ones(reader_folder):
    blocks = python_blocks()
    runnable = [block for block in blocks if PLACEHOLDER not in block]
    assert len(runnable) >= 2 and "padding=True" in runnable[0]  # the batched generation block comes first
    namespace = {"photo1": Image.fromarray(photos.astronaut()), "photo2": Image.fromarray(photos.chelsea())}
    for block in runnable:
        exec(compile(block, str(README), "exec"), namespace)  # the README's own code

    model, processor, inputs = namespace["model"], namespace["processor"], namespace["inputs"]
    assert int(inputs["attention_mask"].sum()) < inputs["attention_mask"].numel()  # the prompts were padded
    assert processor.tokenizer.padding_side == "right"  # ... on the right, the tokenizer's default
    texts = ["What is in the photo?", "Describe it."]  # the block's prompts, in order
    alone = []
    for photo, text in zip((namespace["photo1"], namespace["photo2"]), texts):
        single = processor(images=photo, text=text)
        alone.append(processor.decode_generated(model.generate(**single, max_new_tokens=30), single["input_ids"])[0])
    assert namespace["answers"] == alone
    assert all(alone)  # the tiny random model says something: the comparison is not between empty strings

    # the data block: the reader's JSONL became samples, the mixture a batch with labels, the model a loss
    assert len(namespace["mine"]) == 8 and namespace["mine"][0]["dataset"] == "my_vqa"
    assert math.isfinite(namespace["loss"].item())


def test_the_blocks_not_run_hold_only_the_readers_placeholders():
    skipped = [block for block in python_blocks() if PLACEHOLDER in block]
    assert len(skipped) == 1 and "build_model(" in skipped[0]  # the build-from-parts example: the reader's paths
