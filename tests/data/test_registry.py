"""The 26-dataset registry: paper facts, every converter on its fixture, loading through `datasets`, bad rows.

Fixtures (tests/fixtures/datasets/<name>.jsonl or .json) are 2-3 rows in each dataset's published column schema,
with 8x8 PNGs in images/ referenced by relative path (resolved with ``image_root``); see the README there.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from hf_instructblip.data import paper_datasets
from hf_instructblip.data.registry import (
    HELD_IN,
    HELD_OUT,
    METRICS,
    REGISTRY,
    DatasetSpec,
    convert_rows,
    convert_vqa,
    get_spec,
    load_instruction_dataset,
    resolve_visdial,
)
from hf_instructblip.data.schema import INSTRUCTION_FEATURES, TASK_FAMILIES, BadSampleError, BadSampleReport
from hf_instructblip.data.templates import render_instruction

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "datasets"
GQA_IMAGES = {"n288870": "images/img_00.png", "n161313": "images/img_01.png"}
VISDIAL_IMAGES = "images/visdial_{image_id}.png"

# name -> (task family, paper category (arXiv 2305.06500 Figure 2), metric, inference); held-in first, held-out in
# Table 1 order.
PAPER_TABLE = {
    "coco_caption": ("captioning", "image captioning", "cider", "generate"),
    "web_capfilt": ("captioning", "image captioning", None, "generate"),
    "textcaps": ("captioning", "captioning + reading", "cider", "generate"),
    "vqav2": ("short_vqa", "image QA", "vqa_accuracy", "generate"),
    "okvqa": ("knowledge_vqa", "knowledge-grounded QA", "vqa_accuracy", "generate"),
    "a_okvqa": ("multiple_choice", "knowledge-grounded QA", "accuracy", "rank"),
    "ocr_vqa": ("ocr_vqa", "QA + reading (OCR)", "accuracy", "generate"),
    "vqav2_qg": ("question_generation", "question generation", None, "generate"),
    "okvqa_qg": ("question_generation", "question generation", None, "generate"),
    "a_okvqa_qg": ("question_generation", "question generation", None, "generate"),
    "llava_detail": ("free_form", "LLaVA-Instruct-150K", None, "generate"),
    "llava_reasoning": ("free_form", "LLaVA-Instruct-150K", None, "generate"),
    "llava_conversation": ("free_form", "LLaVA-Instruct-150K", None, "generate"),
    "nocaps": ("captioning", "image captioning", "cider", "generate"),
    "flickr30k": ("captioning", "image captioning", "cider", "generate"),
    "gqa": ("short_vqa", "visual reasoning", "accuracy", "generate"),
    "vsr": ("binary", "visual reasoning", "accuracy", "rank"),
    "iconqa": ("multiple_choice", "visual reasoning", "accuracy", "rank"),
    "textvqa": ("ocr_vqa", "QA + reading (OCR)", "vqa_accuracy", "generate"),
    "visdial": ("visual_dialog", "visual conversation", "mrr", "rank"),
    "hateful_memes": ("classification", "image classification", "auc", "rank"),
    "vizwiz": ("short_vqa", "image QA", "vqa_accuracy", "generate"),
    "scienceqa": ("multiple_choice", "knowledge-grounded QA", "accuracy", "rank"),
    "msvd_qa": ("video_qa", "video QA", "accuracy", "rank"),
    "msrvtt_qa": ("video_qa", "video QA", "accuracy", "rank"),
    "ivqa": ("video_qa", "video QA", "ivqa_accuracy", "generate"),
}
NO_HUB_COPY = {"web_capfilt", "visdial", "msvd_qa", "msrvtt_qa", "ivqa"}

# name -> (split, number of samples from the fixture, first target, first answers, first candidates)
FIXTURE_CASES = {
    "coco_caption": (
        "train",
        2,
        "A red square on a white table.",
        ["A red square on a white table.", "A small red block."],
        [],
    ),
    "web_capfilt": ("train", 2, "a blue square on a dark background", ["a blue square on a dark background"], []),
    "textcaps": (
        "train",
        2,
        "A sign that says open 24 hours.",
        ["A sign that says open 24 hours.", "An open sign."],
        [],
    ),
    "vqav2": ("train", 2, "red", ["red", "red", "orange", "red", "red", "orange", "red", "red", "orange", "red"], []),
    "okvqa": ("train", 2, "tennis", ["tennis", "tennis", "badminton"] * 3 + ["tennis"], []),
    "a_okvqa": ("train", 2, "cab", ["cab", "cab", "taxi"] * 3 + ["cab"], ["skateboarder", "train", "delivery", "cab"]),
    "ocr_vqa": ("train", 4, "Jane Austen", ["Jane Austen"], []),
    "vqav2_qg": ("train", 2, "How many cats are there?", ["How many cats are there?"], []),
    "okvqa_qg": ("train", 2, "What is the name of this famous tower?", ["What is the name of this famous tower?"], []),
    "a_okvqa_qg": ("train", 2, "Why is the street wet?", ["Why is the street wet?"], []),
    "llava_detail": (
        "train",
        2,
        "The image shows a magenta square with one pixel of another colour.",
        ["The image shows a magenta square with one pixel of another colour."],
        [],
    ),
    "llava_reasoning": (
        "train",
        2,
        "It looks like a colour swatch, perhaps to test a camera.",
        ["It looks like a colour swatch, perhaps to test a camera."],
        [],
    ),
    "llava_conversation": ("train", 3, "It is olive green.", ["It is olive green."], []),
    "nocaps": (
        "eval",
        2,
        "A teal square.",
        ["A teal square.", "A square coloured teal.", "A small teal picture."],
        [],
    ),
    "flickr30k": ("eval", 2, "An orange square.", ["An orange square.", "A small orange tile."], []),
    "gqa": ("eval", 2, "yes", ["yes"], []),
    "vsr": ("eval", 2, "true", ["true"], ["false", "true"]),
    "iconqa": ("eval", 2, "5", ["5"], ["3", "5", "7"]),
    "textvqa": ("eval", 2, "dakota", ["dakota", "dakota digital", "dakota"] * 3 + ["dakota"], []),
    "visdial": ("eval", 3, "yes", ["yes"], ["yes", "no", "maybe", "red"]),
    "hateful_memes": ("eval", 2, "yes", ["yes"], ["no", "yes"]),
    "vizwiz": ("eval", 2, "basil leaves", ["basil leaves", "basil", "basil leaves"] * 3 + ["basil leaves"], []),
    "scienceqa": (
        "eval",
        2,
        "West Virginia",
        ["West Virginia"],
        ["West Virginia", "Louisiana", "Arizona", "Oklahoma"],
    ),
    "msvd_qa": ("eval", 2, "man", ["man"], []),
    "msrvtt_qa": ("eval", 2, "car", ["car"], []),
    "ivqa": ("eval", 2, "onion", ["onion", "onion", "shallot", "onion", "red onion"], []),
}


def fixture_rows(name: str) -> list[dict]:
    """The fixture rows in the dataset's source format (VisDial: resolved from the official json)."""
    jsonl = FIXTURES / f"{name}.jsonl"
    if jsonl.exists():
        return [json.loads(line) for line in jsonl.read_text().splitlines()]
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return resolve_visdial(data, image_name=VISDIAL_IMAGES) if name == "visdial" else data


def fixture_file(name: str, tmp_path: Path) -> Path:
    """A row-per-example file the json builder can read (VisDial's official json is resolved first)."""
    if name != "visdial":
        jsonl = FIXTURES / f"{name}.jsonl"
        return jsonl if jsonl.exists() else FIXTURES / f"{name}.json"
    path = tmp_path / "visdial_resolved.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in fixture_rows(name)))
    return path


def convert_kwargs(name: str) -> dict:
    # LLaVA rows hold bare COCO file names (resolved against the spec's COCO root unless image_root is given).
    root = FIXTURES / "images" if name.startswith("llava") else FIXTURES
    return {"image_root": root, "image_lookup": GQA_IMAGES if name == "gqa" else None}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("hf_datasets_cache"))


# ---------------------------------------------------------------------------------------------------------------------
# The registry is the paper's table
# ---------------------------------------------------------------------------------------------------------------------


def test_registry_lists_exactly_the_papers_13_held_in_and_13_held_out_datasets():
    assert len(HELD_IN) == 13 and len(HELD_OUT) == 13
    assert list(REGISTRY) == [*HELD_IN, *HELD_OUT] == list(PAPER_TABLE)
    assert all(not REGISTRY[name].held_out for name in HELD_IN)
    assert all(REGISTRY[name].held_out for name in HELD_OUT)
    # The paper's results order (arXiv 2305.06500 Table 1).
    assert HELD_OUT[:5] == ("nocaps", "flickr30k", "gqa", "vsr", "iconqa")


@pytest.mark.parametrize("name", list(PAPER_TABLE))
def test_family_category_metric_and_inference_follow_the_paper(name):
    spec = get_spec(name)
    family, category, metric, inference = PAPER_TABLE[name]
    assert spec.name == name
    assert (spec.task_family, spec.paper_category, spec.metric, spec.inference) == (
        family,
        category,
        metric,
        inference,
    )
    assert spec.task_family in TASK_FAMILIES and (spec.metric is None or spec.metric in METRICS)
    assert spec.zero_shot_prompt, f"{name} needs a zero-shot prompt"
    assert set(spec.splits) <= {"train", "eval"}
    assert ("train" in spec.splits) != spec.held_out or "eval" in spec.splits  # held-out sets are evaluated only
    if spec.held_out:
        assert list(spec.splits) == ["eval"]


def _docstring_table(doc: str) -> list[tuple[str, ...]]:
    """The rows of the markdown table in ``doc``, as tuples of stripped cells (header and rule skipped)."""
    lines = [line.strip() for line in doc.splitlines() if line.strip().startswith("|")]
    assert len(lines) > 2 and set(lines[1]) <= set("|-"), "expected a header row and a |---| rule"
    return [tuple(cell.strip() for cell in line.strip("|").split("|")) for line in lines[2:]]


def test_the_table_in_paper_datasets_docstring_matches_the_registry_row_by_row():
    table = _docstring_table(paper_datasets.__doc__ or "")
    expected = [
        (
            spec.name,
            "held-out" if spec.held_out else "held-in",
            spec.paper_category,
            spec.hub_id or "-",
            spec.metric or "-",
            spec.inference,
        )
        for spec in REGISTRY.values()
    ]
    assert [row[0] for row in table] == list(REGISTRY)  # same names, same order
    for row, want in zip(table, expected):
        assert row == want, f"docstring row of {want[0]} says {row}, REGISTRY says {want}"


def test_datasets_without_a_hub_copy_say_why():
    assert {name for name, spec in REGISTRY.items() if spec.hub_id is None} == NO_HUB_COPY
    for name in NO_HUB_COPY:
        assert "Hub" in REGISTRY[name].notes, name


def test_the_papers_three_zero_shot_prompts_are_used_verbatim():
    assert get_spec("nocaps").zero_shot_prompt == "A short image description:"
    assert get_spec("flickr30k").zero_shot_prompt == "A short image description:"
    for name in ("msvd_qa", "msrvtt_qa", "ivqa"):
        assert get_spec(name).zero_shot_prompt == "Question: {question} Short answer:"
    prompt = "Context: {context} Question: {question} Options: {options}. Answer:"
    assert get_spec("scienceqa").zero_shot_prompt == prompt


def test_verbalisers_of_binary_and_classification_tasks():
    assert get_spec("vsr").candidates == ("false", "true")
    assert get_spec("hateful_memes").candidates == ("no", "yes")


def test_unknown_name_lists_the_registered_ones_with_a_hint():
    with pytest.raises(ValueError, match=r"unknown dataset 'text_vqa'\. Did you mean 'textvqa'\?.*Registered: coco"):
        get_spec("text_vqa")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_instruction_dataset("imagenet", "eval")


def test_spec_validation_rejects_unknown_family_metric_and_prompt_fields():
    base = dict(get_spec("vqav2").__dict__)
    with pytest.raises(ValueError, match="unknown task_family"):
        DatasetSpec(**{**base, "task_family": "vqa"})
    with pytest.raises(ValueError, match="unknown metric"):
        DatasetSpec(**{**base, "metric": "bleu"})
    with pytest.raises(ValueError, match="unknown fields"):
        DatasetSpec(**{**base, "zero_shot_prompt": "Question: {query}"})


# ---------------------------------------------------------------------------------------------------------------------
# Every converter on its fixture
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FIXTURE_CASES))
def test_converter_turns_the_fixture_into_valid_unified_samples(name):
    spec = get_spec(name)
    _, count, target, answers, candidates = FIXTURE_CASES[name]
    samples = list(convert_rows(fixture_rows(name), spec, zero_shot=spec.held_out, **convert_kwargs(name)))
    assert len(samples) == count
    first = samples[0]
    assert (first["target"], first["answers"], first["candidates"]) == (target, answers, candidates)
    assert all(s["dataset"] == name and s["held_out"] == spec.held_out for s in samples)
    assert all(s["task_family"] == spec.task_family and s["instruction"] and s["target"] for s in samples)

    ds = datasets.Dataset.from_list(samples, features=INSTRUCTION_FEATURES)
    images = ds[0]["images"]
    assert len(images) == (4 if spec.task_family == "video_qa" else 1)
    assert images[0].size == (8, 8)


@pytest.mark.parametrize("name", ["textvqa", "ocr_vqa"])
@pytest.mark.parametrize("zero_shot", [False, True])
def test_ocr_tokens_go_to_the_llm_and_the_qformer(name, zero_shot):
    sample = next(convert_rows(fixture_rows(name), get_spec(name), zero_shot=zero_shot, image_root=FIXTURES))
    assert sample["ocr_tokens"] and sample["instruction"].startswith("OCR tokens: ")
    assert sample["qformer_text"] == sample["instruction"]  # LAVIS: one text_input for the Q-Former and the LLM


def test_held_in_rows_get_seeded_templates_and_held_out_rows_the_zero_shot_prompt():
    rows = fixture_rows("vqav2")
    trained = list(convert_rows(rows, get_spec("vqav2"), seed=3, image_root=FIXTURES))
    expected = [
        render_instruction("short_vqa", seed=3, index=i, question=row["question"]) for i, row in enumerate(rows)
    ]
    assert [s["instruction"] for s in trained] == expected
    assert [s["instruction"] for s in convert_rows(rows, get_spec("vqav2"), seed=3, image_root=FIXTURES)] == expected

    sample = next(convert_rows(fixture_rows("scienceqa"), get_spec("scienceqa"), zero_shot=True, image_root=FIXTURES))
    assert sample["instruction"] == (
        "Context: N/A Question: Which of these states is farthest north? "
        "Options: (a) West Virginia (b) Louisiana (c) Arizona (d) Oklahoma. Answer:"
    )


def test_iconqa_keeps_only_the_multi_text_choice_questions():
    samples = list(convert_rows(fixture_rows("iconqa"), get_spec("iconqa"), zero_shot=True, image_root=FIXTURES))
    assert [s["target"] for s in samples] == ["5", "8:00"]  # the choose_img row is not part of the benchmark


def test_visual_dialog_gives_one_sample_per_round_with_the_history_as_context():
    samples = list(convert_rows(fixture_rows("visdial"), get_spec("visdial"), zero_shot=True, image_root=FIXTURES))
    assert [s["target"] for s in samples] == ["yes", "red", "no"]
    assert samples[1]["instruction"] == (
        "Dialog history: a red square on a plain background Q: is it sunny A: yes\n"
        "Question: what color is the square Short answer:"
    )
    assert samples[1]["candidates"] == ["blue", "red", "no", "maybe"]


def test_resolve_visdial_replaces_indices_with_text():
    rows = resolve_visdial(json.loads((FIXTURES / "visdial.json").read_text()))
    assert rows[0]["image"] == "VisualDialog_val2018_000000185565.jpg"
    assert rows[0]["dialog"][0] == {
        "question": "is it sunny",
        "answer": "yes",
        "answer_options": ["yes", "no", "maybe", "red"],
        "gt_index": 0,
    }
    with pytest.raises(ValueError, match=r"not a VisDial v1\.0 json"):
        resolve_visdial({"dialogs": []})


def test_llava_conversation_concatenates_earlier_rounds_and_drops_the_image_mark():
    samples = list(convert_rows(fixture_rows("llava_conversation"), get_spec("llava_conversation"), zero_shot=True))
    assert samples[0]["instruction"] == "What colour is the square?"
    assert (
        samples[1]["instruction"]
        == "Q: What colour is the square? A: It is olive green. Is there anything else in it?"
    )
    # The spec's image_root (the COCO train2017 server) resolves the bare file names.
    assert samples[0]["images"] == ["http://images.cocodataset.org/train2017/img_08.png"]


def test_video_rows_without_frames_explain_what_to_do():
    row = {k: v for k, v in fixture_rows("msvd_qa")[0].items() if k != "frames"}
    with pytest.raises(BadSampleError, match=r"'msvd_qa', row 0: missing field `frames`: video datasets need frames"):
        list(convert_rows([row], get_spec("msvd_qa"), zero_shot=True))


def test_answer_candidates_override_for_vocabulary_ranking():
    samples = convert_rows(
        fixture_rows("msvd_qa"), get_spec("msvd_qa"), image_root=FIXTURES, answer_candidates=["man", "dance"]
    )
    assert next(samples)["candidates"] == ["man", "dance"]


# ---------------------------------------------------------------------------------------------------------------------
# Loading through datasets.load_dataset (json builder), map-style and streaming
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FIXTURE_CASES))
def test_load_instruction_dataset_reads_local_files_map_style_and_streaming(name, tmp_path, cache_dir):
    spec = get_spec(name)
    split, count, target, _, _ = FIXTURE_CASES[name]
    files = str(fixture_file(name, tmp_path))
    ds = load_instruction_dataset(name, split, data_files=files, cache_dir=cache_dir, **convert_kwargs(name))
    assert isinstance(ds, datasets.Dataset) and ds.features == INSTRUCTION_FEATURES
    assert len(ds) == count and ds[0]["target"] == target
    stream = load_instruction_dataset(
        name, split, data_files=files, streaming=True, cache_dir=cache_dir, **convert_kwargs(name)
    )
    assert isinstance(stream, datasets.IterableDataset)
    streamed = list(stream)
    assert [s["instruction"] for s in streamed] == ds["instruction"]
    assert streamed[0]["images"][0].size == (8, 8)
    # Held-out datasets default to the zero-shot prompt, held-in ones to sampled templates.
    reference = next(convert_rows(fixture_rows(name), spec, zero_shot=spec.held_out, **convert_kwargs(name)))
    assert ds[0]["instruction"] == reference["instruction"]


def test_a_dict_of_data_files_must_name_the_split(cache_dir):
    files = {"eval": str(FIXTURES / "vizwiz.jsonl")}
    ds = load_instruction_dataset("vizwiz", "eval", data_files=files, image_root=FIXTURES, cache_dir=cache_dir)
    assert len(ds) == 2
    with pytest.raises(ValueError, match=r"data_files has splits \['eval'\], not 'train'"):
        load_instruction_dataset("vizwiz", "train", data_files=files, cache_dir=cache_dir)


def test_datasets_without_a_hub_copy_ask_for_local_files():
    with pytest.raises(ValueError, match=r"ivqa has no public Hub copy.*data_files"):
        load_instruction_dataset("ivqa", "eval")


def test_unknown_split_is_reported_before_touching_the_hub():
    with pytest.raises(ValueError, match=r"nocaps has splits \['eval'\] \(ours\), not 'train'"):
        load_instruction_dataset("nocaps", "train")


def test_gqa_from_local_files_needs_an_image_lookup(cache_dir):
    with pytest.raises(ValueError, match=r"reference images by id .*image_lookup"):
        load_instruction_dataset("gqa", "eval", data_files=str(FIXTURES / "gqa.jsonl"), cache_dir=cache_dir)


# ---------------------------------------------------------------------------------------------------------------------
# Bad rows
# ---------------------------------------------------------------------------------------------------------------------

BAD_ROWS = [
    ("vqav2", lambda row: row.pop("question"), "missing field `question`"),
    ("vqav2", lambda row: row.update(question=7), "`question` must be a string, got int"),
    ("vizwiz", lambda row: row.update(image={"bytes": b"not a png", "path": None}), "cannot be decoded"),
    ("coco_caption", lambda row: row.update(sentences=[""]), "empty target"),
    ("vsr", lambda row: row.update(label=3), r"`label` = 3 is not a label index"),
    ("iconqa", lambda row: row.update(answer="9"), "answer '9' is not one of the options"),
    ("a_okvqa", lambda row: row.update(correct_choice_idx=4), "is not an index into 4 options"),
    (
        "a_okvqa",
        lambda row: row.update(direct_answers="['cab', 'taxi]"),
        "looks like a printed list but does not parse",
    ),
    ("a_okvqa", lambda row: row.update(direct_answers="cab"), "`direct_answers` = 'cab' is not the printed form"),
    ("a_okvqa", lambda row: row.update(direct_answers="[1, 2]"), r"`direct_answers`\[0\] must be a string, got int"),
    ("iconqa", lambda row: row.pop("ques_type"), "missing field `ques_type` .only rows whose"),
    ("ocr_vqa", lambda row: row["answers"].pop(), "3 questions but 2 answers"),
    ("llava_detail", lambda row: row["conversations"][1].update(value=None), "conversation turn 1 must be"),
]


def _rows_with_bad_second_row(name, mutate):
    rows = fixture_rows(name)
    rows = [rows[0], json.loads(json.dumps(rows[0]))]  # row 1 is a copy of row 0 ...
    mutate(rows[1])  # ... made bad
    return rows


@pytest.mark.parametrize(("name", "mutate", "reason"), BAD_ROWS)
def test_bad_rows_raise_naming_dataset_and_row(name, mutate, reason):
    rows = _rows_with_bad_second_row(name, mutate)
    with pytest.raises(BadSampleError, match=rf"dataset '{name}', row 1: .*{reason}") as info:
        list(convert_rows(rows, get_spec(name), image_root=FIXTURES))
    assert (info.value.dataset, info.value.index) == (name, 1)


@pytest.mark.parametrize(("name", "mutate", "reason"), BAD_ROWS)
def test_bad_rows_are_skipped_and_counted(name, mutate, reason):
    rows = _rows_with_bad_second_row(name, mutate)
    report = BadSampleReport()
    samples = list(convert_rows(rows, get_spec(name), image_root=FIXTURES, on_bad_sample="skip", report=report))
    assert samples and all(s["dataset"] == name for s in samples)
    assert report.total == 1
    ((dataset, message),) = report.skipped
    assert dataset == name and report.examples[(dataset, message)] == [1]


@pytest.mark.parametrize("streaming", [False, True])
def test_load_instruction_dataset_skips_and_counts_bad_rows(tmp_path, cache_dir, streaming):
    rows = _rows_with_bad_second_row("vqav2", lambda row: row.pop("question"))
    path = tmp_path / "vqav2_bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = BadSampleReport()
    ds = load_instruction_dataset(
        "vqav2",
        "train",
        data_files=str(path),
        image_root=FIXTURES,
        on_bad_sample="skip",
        report=report,
        streaming=streaming,
        cache_dir=cache_dir,
    )
    assert len(list(ds)) == 1
    assert report.total == 1 and "vqav2: 1 x missing field `question`" in report.summary()
    with pytest.raises(BadSampleError, match="dataset 'vqav2', row 1: missing field `question`"):
        list(
            load_instruction_dataset(
                "vqav2", "train", data_files=str(path), image_root=FIXTURES, streaming=streaming, cache_dir=cache_dir
            )
        )


def test_converters_are_shared_by_task_shape():
    converters = {spec.convert for spec in REGISTRY.values()}
    assert len(converters) <= 8  # captioning, vqa, vqa per question, qg, mc, classification, dialog, conversation
    assert {name for name, spec in REGISTRY.items() if spec.convert is convert_vqa} >= {
        "vqav2",
        "okvqa",
        "gqa",
        "textvqa",
        "vizwiz",
        "msvd_qa",
        "msrvtt_qa",
        "ivqa",
    }


# ---------------------------------------------------------------------------------------------------------------------
# The Hub path (the Hub is not reachable in tests: `datasets.load_dataset` is replaced by a recorder)
# ---------------------------------------------------------------------------------------------------------------------


# Every Hub copy the registry reads, as verified against its stored card / lmms-eval config (see paper_datasets.py):
# name -> (load_dataset call for our split, the columns that are `Image` features there).
HUB_CALLS = {
    "textcaps": (("lmms-lab-encoder/TextCaps", None, "train", False, {}), ("image",)),
    "vqav2": (("Multimodal-Fatima/VQAv2_train", None, "train", False, {}), ("image",)),
    "a_okvqa": (("HuggingFaceM4/A-OKVQA", None, "train", False, {}), ("image",)),
    "nocaps": (("lmms-lab-encoder/NoCaps", None, "validation", False, {}), ("image",)),
    "flickr30k": (("umaru97/flickr30k_train_val_test", None, "test", False, {}), ("image",)),
    "iconqa": (
        ("lmms-lab-encoder/ICON-QA", None, "test", False, {}),
        ("query_image", "choice_image_0", "choice_image_1"),
    ),
    "textvqa": (("lmms-lab-encoder/textvqa", None, "validation", False, {}), ("image",)),
    "hateful_memes": (
        ("neuralcatcher/hateful_memes", None, "validation", False, {"data_files": {"validation": "dev_seen.jsonl"}}),
        (),  # a jsonl with `img` paths inside the repo
    ),
    "vizwiz": (("lmms-lab-encoder/VizWiz-VQA", None, "val", False, {}), ("image",)),
    "scienceqa": (("lmms-lab-encoder/ScienceQA", "ScienceQA-IMG", "test", False, {}), ("image",)),
}


def _image_struct(path: str | None, hub_name: str) -> dict | None:
    """An `Image` cell as a parquet on the Hub holds it: the bytes, and a file name that exists nowhere here."""
    return None if path is None else {"bytes": (FIXTURES / path).read_bytes(), "path": hub_name}


def _as_stored_on_the_hub(rows: list[dict], image_columns: tuple[str, ...]) -> datasets.Dataset:
    rows = [
        {**row, **{c: _image_struct(row[c], f"COCO_val2014_{i:012d}_{c}.jpg") for c in image_columns}}
        for i, row in enumerate(rows)
    ]
    ds = datasets.Dataset.from_list(rows)
    for column in image_columns:
        ds = ds.cast_column(column, datasets.Image())
    return ds


class _FakeHub:
    """Records load_dataset calls and serves fixture rows as the Hub stores them (`Image` columns hold bytes)."""

    def __init__(self, name: str, image_columns: tuple[str, ...] = ()):
        self.name, self.image_columns, self.calls = name, image_columns, []

    def __call__(self, path, name=None, *, split, streaming=False, **kwargs):
        self.calls.append((path, name, split, streaming, kwargs))
        if name == "testdev_balanced_images":
            table = [{"id": key, "image": path} for key, path in GQA_IMAGES.items()]
            return _as_stored_on_the_hub(table, ("image",))
        return _as_stored_on_the_hub(fixture_rows(self.name), self.image_columns)


def _image_paths(ds: datasets.Dataset) -> list[str]:
    undecoded = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))
    return [image["path"] for sample in undecoded for image in sample["images"]]


@pytest.mark.parametrize("name", list(HUB_CALLS))
def test_hub_loading_reads_the_stored_form_under_the_specs_id_config_and_split(monkeypatch, name):
    expected_call, image_columns = HUB_CALLS[name]
    hub = _FakeHub(name, image_columns)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    split, count, target, answers, candidates = FIXTURE_CASES[name]
    ds = load_instruction_dataset(name, split)
    assert hub.calls == [expected_call]
    assert len(ds) == count and ds.features == INSTRUCTION_FEATURES
    first = ds.remove_columns("images")[0]  # hateful_memes' images live in the Hub repo
    assert (first["target"], first["answers"], first["candidates"]) == (target, answers, candidates)
    if name == "hateful_memes":  # relative `img` paths resolve inside the Hub repo (read lazily via hf://)
        assert _image_paths(ds)[0] == "hf://datasets/neuralcatcher/hateful_memes/images/img_07.png"
    else:  # the image comes from the struct's bytes: its Hub file name does not exist on this machine
        assert ds[0]["images"][0].size == (8, 8)


def test_every_hub_copy_is_checked_and_none_uses_the_moved_lmms_lab_ids():
    hub_copies = {name for name, spec in REGISTRY.items() if spec.hub_id is not None}
    checked = set(HUB_CALLS) | {"gqa", "okvqa", "okvqa_qg", "vqav2_qg", "a_okvqa_qg", "ocr_vqa", "coco_caption", "vsr"}
    assert hub_copies - checked <= {"llava_detail", "llava_reasoning", "llava_conversation"}
    assert not [spec.hub_id for spec in REGISTRY.values() if (spec.hub_id or "").startswith("lmms-lab/")]


def test_gqa_from_the_hub_looks_images_up_in_the_image_configuration(monkeypatch):
    hub = _FakeHub("gqa")
    monkeypatch.setattr(datasets, "load_dataset", hub)
    ds = load_instruction_dataset("gqa", "eval")
    assert [call[:3] for call in hub.calls] == [
        ("lmms-lab-encoder/GQA", "testdev_balanced_images", "testdev"),
        ("lmms-lab-encoder/GQA", "testdev_balanced_instructions", "testdev"),
    ]
    assert ds["target"] == ["yes", "green"] and ds[1]["images"][0].size == (8, 8)
    assert ds[0]["instruction"] == "Question: Is the square red? Short answer:"


# ---------------------------------------------------------------------------------------------------------------------
# Data as the Hub stores it: string-encoded lists, fallbacks, the paper's splits
# ---------------------------------------------------------------------------------------------------------------------


def test_a_okvqa_direct_answers_are_stored_as_a_printed_list_and_become_ten_answers():
    rows = fixture_rows("a_okvqa")
    assert rows[0]["direct_answers"].startswith("['cab', 'cab', 'taxi'")  # one string, as HuggingFaceM4/A-OKVQA
    for zero_shot in (False, True):
        sample = next(convert_rows(rows, get_spec("a_okvqa"), zero_shot=zero_shot, image_root=FIXTURES))
        assert sample["answers"] == ["cab", "cab", "taxi", "cab", "cab", "taxi", "cab", "cab", "taxi", "cab"]
        assert sample["target"] == "cab" and sample["candidates"] == ["skateboarder", "train", "delivery", "cab"]
    # The official json (aokvqa_v1p0_val.json) holds a real list: read as it is.
    official = {**rows[0], "direct_answers": ["cab"] * 10}
    assert next(convert_rows([official], get_spec("a_okvqa"), image_root=FIXTURES))["answers"] == ["cab"] * 10


def test_iconqa_choices_a_printed_list_and_an_answer_with_a_comma():
    spec = get_spec("iconqa")
    row = fixture_rows("iconqa")[0]
    printed = {**row, "choices": "['3', '5', '7']"}
    comma = {**row, "choices": "1,000,2,000,3,000", "answer": "2,000"}
    samples = list(convert_rows([printed, comma], spec, zero_shot=True, image_root=FIXTURES))
    assert samples[0]["candidates"] == ["3", "5", "7"] and samples[0]["target"] == "5"
    # The right answer's pieces are glued back; the other options cannot be told apart from a comma-joined string.
    assert samples[1]["target"] == "2,000" and samples[1]["candidates"] == ["1", "000", "2,000", "3", "000"]


def test_flickr30k_keeps_karpathys_test_split_only_and_needs_the_split_column():
    spec = get_spec("flickr30k")
    row = fixture_rows("flickr30k")[0]
    full_table = [{**row, "split": split, "caption": [f"a {split} caption"]} for split in ("train", "test", "val")]
    samples = list(convert_rows(full_table, spec, zero_shot=True, image_root=FIXTURES))
    assert [s["target"] for s in samples] == ["a test caption"]
    without_split = {k: v for k, v in row.items() if k != "split"}  # e.g. lmms-lab-encoder/flickr30k's 31,783 rows
    with pytest.raises(BadSampleError, match=r"'flickr30k', row 0: missing field `split`"):
        list(convert_rows([without_split], spec, zero_shot=True, image_root=FIXTURES))
    assert "Karpathy" in spec.notes and "lmms-lab-encoder/flickr30k" in spec.notes


@pytest.mark.parametrize("name", ["vqav2", "vqav2_qg"])
@pytest.mark.parametrize("absent", [None, [], "missing"])
def test_vqav2_falls_back_to_the_multiple_choice_answer(name, absent):
    row = dict(fixture_rows("vqav2")[0], multiple_choice_answer="crimson")
    if absent == "missing":
        del row["answers"]
    else:
        row["answers"] = absent
    sample = next(convert_rows([row], get_spec(name), image_root=FIXTURES))
    if name == "vqav2":
        assert (sample["target"], sample["answers"]) == ("crimson", ["crimson"])
    else:  # question generation: the answer goes into the instruction, the question is the target
        assert "crimson" in sample["instruction"] and sample["target"] == row["question"]
    with pytest.raises(BadSampleError, match="missing field `multiple_choice_answer`"):
        list(convert_rows([{k: v for k, v in row.items() if k != "multiple_choice_answer"}], get_spec(name)))


def test_vizwiz_val_results_are_labelled_not_comparable_to_the_papers_test_dev():
    from hf_instructblip.evaluation.harness import DatasetResult, results_table

    caveats = {name: spec.results_caveat for name, spec in REGISTRY.items() if spec.results_caveat}
    assert list(caveats) == ["vizwiz"] and "test-dev" in caveats["vizwiz"] and "not comparable" in caveats["vizwiz"]
    assert get_spec("vizwiz").splits == {"eval": "val"}
    results = {name: DatasetResult(name, "vqa_accuracy", "generate", True, 1, 0.5) for name in ("vizwiz", "gqa")}
    assert caveats["vizwiz"] in results_table(results)
    assert "not comparable" not in results_table({"gqa": results["gqa"]})


def test_string_lists_must_name_an_encoding():
    with pytest.raises(ValueError, match="string_lists needs a separator or PRINTED_LIST"):
        DatasetSpec(**{**get_spec("iconqa").__dict__, "string_lists": {"choices": ""}})
