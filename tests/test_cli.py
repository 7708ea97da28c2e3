"""The command line with careless input: one clear line naming the file, key or argument, never a traceback."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image
from transformers import GenerationConfig

from conftest import make_processor, model_for
from hf_instructblip import loading
from hf_instructblip.cli import main


@pytest.fixture(scope="module")
def saved(tokenizer_dirs, tmp_path_factory):
    """A saved tiny model + processor and a photo."""
    root = tmp_path_factory.mktemp("cli")
    processor = make_processor(tokenizer_dirs)
    model_for(processor).save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / "photo.png")
    return root


def _error_line(capsys) -> str:
    """The one line the CLI printed for the error (library warnings may come before it; no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("hf-instructblip ")]
    assert len(lines) == 1, err
    return lines[0]


def _truncated_copy(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved / "model", broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:6])
    return broken


# (case, argv from the saved folder and an empty tmp folder, what the error line says)
CASES = [
    ("missing model folder", lambda s, t: ["generate", str(t / "nope"), "--image", str(s / "photo.png")],
     r"model folder '.*nope' does not exist"),
    ("folder without a model", lambda s, t: ["generate", str(t), "--image", str(s / "photo.png")],
     r"holds no config\.json"),
    ("truncated weights, generate",
     lambda s, t: ["generate", str(_truncated_copy(s, t)), "--image", str(s / "photo.png")],
     r"cannot read .*broken/model\.safetensors: .*truncated or corrupt"),
    ("truncated weights, evaluate", lambda s, t: ["evaluate", str(_truncated_copy(s, t)), "--num-samples", "2"],
     r"cannot read .*broken/model\.safetensors: .*truncated or corrupt"),
    ("image is a directory", lambda s, t: ["generate", str(s / "model"), "--image", str(t)],
     r"--image .* is a directory"),
    ("missing image", lambda s, t: ["generate", str(s / "model"), "--image", str(t / "no.png")],
     r"--image .*no\.png: no such file"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[case[0] for case in CASES])
def test_each_careless_input_is_one_clear_line(saved, tmp_path, capsys, case, argv, message):
    arguments = argv(saved, tmp_path)
    assert main(arguments) == 2
    line = _error_line(capsys)
    assert line.startswith(f"hf-instructblip {arguments[0]}: error: ")
    assert re.search(message, line), line


def test_an_answer_the_model_does_not_give_is_said_not_printed_empty(saved, tmp_path, capsys):
    folder = tmp_path / "silent"
    shutil.copytree(saved / "model", folder)
    config = GenerationConfig.from_pretrained(folder)
    config.forced_eos_token_id = config.eos_token_id  # the one new token is end-of-sequence: no text
    config.save_pretrained(folder)
    argv = ["generate", str(folder), "--image", str(saved / "photo.png"), "--max-new-tokens", "1"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the model generated no text for this prompt" in captured.err


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(saved, capsys, monkeypatch):
    def broken(path):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(loading, "load_for_inference", broken)
    argv = ["generate", str(saved / "model"), "--image", str(saved / "photo.png")]
    assert main(argv) == 2
    assert "RuntimeError: something inside broke (run with --debug for the traceback)" in _error_line(capsys)
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(RuntimeError, match="something inside broke"):
            main(debug)


def test_a_long_prompt_is_cut_with_a_warning(saved, tmp_path, capsys, caplog):
    folder = tmp_path / "short-window"
    shutil.copytree(saved / "model", folder)
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(
        config.replace('"max_position_embeddings": 2048', '"max_position_embeddings": 64')
    )
    prompt = " ".join(["word"] * 300)
    assert main(["generate", str(folder), "--image", str(saved / "photo.png"), "--prompt", prompt,
                 "--max-new-tokens", "3", "--num-beams", "1"]) == 0  # fmt: skip
    assert "cut from the left" in caplog.text  # a warning (on stderr outside pytest's log capture)
    assert capsys.readouterr().out.strip()  # and an answer


def test_help_shows_defaults_and_the_config_sections(capsys):
    for argv in (["generate", "--help"], ["evaluate", "--help"], ["train", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "(default: " in text, argv
    assert main(["train", "examples/configs/tiny.yaml", "--help"]) == 0  # help, not "override --help has no value"
    text = capsys.readouterr().out
    assert "config file sections" in text
    for expected in ("  model: ModelArguments", "  data: DataArguments", "  training: InstructBlipTrainingArguments",
                     "model_name_or_path (default: None)", "custom_datasets (default: [])",
                     "learning_rate (default: 1e-05)", "relative to the config file"):  # fmt: skip
        assert expected in text, expected
