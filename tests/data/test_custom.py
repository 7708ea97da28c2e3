"""Users' own data: one call from a `datasets.Dataset` or a JSONL/CSV file with image paths to the unified schema."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from PIL import Image

from hf_instructblip.data import BadSampleError, BadSampleReport
from hf_instructblip.data.custom import to_instruction_dataset
from hf_instructblip.data.schema import INSTRUCTION_FEATURES
from hf_instructblip.data.templates import TEMPLATES


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, (8, 8, 3), dtype=np.uint8))


@pytest.fixture
def jsonl(tmp_path):
    (tmp_path / "img").mkdir()
    rows = []
    for i, (q, a) in enumerate([("What colour is it?", "red"), ("How many?", "3"), ("Where?", "left")]):
        _image(i).save(tmp_path / "img" / f"{i}.png")
        rows.append({"path": f"img/{i}.png", "q": q, "a": a})
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path, rows


def test_jsonl_with_image_paths(jsonl):
    path, rows = jsonl
    ds = to_instruction_dataset(
        path, task_family="short_vqa", columns={"image": "path", "question": "q", "answer": "a"}, name="my_vqa", seed=1
    )
    assert ds.features == INSTRUCTION_FEATURES and len(ds) == 3
    for row, sample in zip(rows, ds):
        assert sample["target"] == row["a"] and sample["answers"] == [row["a"]]
        assert row["q"] in sample["instruction"]  # a paper template around the question
        assert sample["dataset"] == "my_vqa" and sample["task_family"] == "short_vqa" and not sample["held_out"]
        assert np.asarray(sample["images"][0]).shape == (8, 8, 3)
    again = to_instruction_dataset(
        path, task_family="short_vqa", columns={"image": "path", "question": "q", "answer": "a"}, name="my_vqa", seed=1
    )
    assert again["instruction"] == ds["instruction"]  # seeded


def test_csv_file(tmp_path):
    _image(0).save(tmp_path / "a.png")
    (tmp_path / "data.csv").write_text("file,caption\na.png,a small red square\n")
    ds = to_instruction_dataset(
        tmp_path / "data.csv", task_family="captioning", columns={"image": "file", "captions": "caption"}
    )
    assert ds[0]["target"] == "a small red square"
    assert ds[0]["instruction"] in TEMPLATES["captioning"]


def test_in_memory_dataset_classification_with_names_and_indices():
    source = datasets.Dataset.from_dict(
        {"img": [_image(0), _image(1)], "label": [1, 0]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")}),
    )
    ds = to_instruction_dataset(
        source,
        task_family="classification",
        columns={"image": "img", "label": "label"},
        candidates=["dog", "cat"],
        held_out=True,
        zero_shot_prompt="Is it a {options}?",
    )
    assert ds["target"] == ["cat", "dog"]
    assert ds[0]["candidates"] == ["dog", "cat"] and ds[0]["held_out"]
    assert ds[0]["instruction"] == "Is it a (a) dog (b) cat?"
    named = datasets.Dataset.from_dict({"img": [_image(0)], "claim": ["The square is red."], "label": ["yes"]})
    binary = to_instruction_dataset(
        named, task_family="binary", columns={"image": "img", "question": "claim", "label": "label"}
    )
    assert binary[0]["target"] == "yes" and binary[0]["candidates"] == ["no", "yes"]  # label given by name
    assert "The square is red." in binary[0]["instruction"]


def test_bad_rows_raise_or_are_counted(jsonl, tmp_path):
    _, rows = jsonl
    rows = [*rows, {"path": "img/missing.png", "q": "Why?", "a": ""}, {"path": "img/0.png", "q": 5, "a": "x"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({**r, "q": str(r["q"]) if i != 4 else r["q"]}) for i, r in enumerate(rows)))
    columns = {"image": "path", "question": "q", "answer": "a"}
    with pytest.raises(BadSampleError, match=r"dataset 'mine', row 3"):
        to_instruction_dataset(bad, task_family="short_vqa", columns=columns, name="mine")
    report = BadSampleReport()
    ds = to_instruction_dataset(
        bad, task_family="short_vqa", columns=columns, name="mine", on_bad_sample="skip", report=report
    )
    assert len(ds) == 3 and report.total == 2
    assert "mine" in report.summary()


def test_argument_errors(jsonl):
    path, _ = jsonl
    with pytest.raises(ValueError, match="unknown task_family 'vqa'"):
        to_instruction_dataset(path, task_family="vqa", columns={})
    with pytest.raises(ValueError, match="needs `candidates`"):
        to_instruction_dataset(path, task_family="classification", columns={"image": "path", "label": "a"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_instruction_dataset(path.parent / "nope.jsonl", task_family="short_vqa", columns={})
