"""Pushing through the real huggingface_hub client to the local Hub server, and loading back in a fresh process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import make_processor, model_for
from hf_instructblip.hub import REMOTE_CODE_FILES, CardInfo, push_to_hub, render_model_card

from .conftest import ADAPTER_REPO, MODEL_REPO, SNIPPET_PROMPT, USER


def _local_inputs(published):
    return published.processor(images=Image.open(published.root / "photo.jpg"), text=SNIPPET_PROMPT)


def _files(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _head(state, repo_id, ref="main"):
    repo = state["repos"][repo_id]
    return next(commit for commit in repo["commits"] if commit["oid"] == repo["refs"][ref])


# ----- round trips in a fresh process without the package ---------------------------------------------------------
def test_model_round_trip_gives_identical_logits(published):
    assert all(module.startswith("transformers_modules.") for module in published.report["classes"])
    with torch.no_grad():
        expected = published.model(**_local_inputs(published)).logits
    assert torch.equal(published.remote["logits"], expected)


def test_processor_round_trip_gives_identical_tensors(published):
    local = _local_inputs(published)
    remote = {
        key.removeprefix("inputs."): value for key, value in published.remote.items() if key.startswith("inputs.")
    }
    assert set(remote) == set(local)
    for key, value in local.items():
        assert torch.equal(remote[key], value), key


def test_adapter_round_trip_gives_identical_logits(published):
    inputs = _local_inputs(published)
    with torch.no_grad():
        expected = published.peft_model(**inputs).logits
        base = published.model(**inputs).logits
    assert torch.equal(published.remote["adapter_logits"], expected)
    assert not torch.allclose(expected, base)  # the adapter (LoRA + fully trained parts + query tokens) matters
    pushed = _head(published.state, ADAPTER_REPO)["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(pushed)
    assert pushed["adapter_model.safetensors"]["lfs"]


# ----- what went over the wire ---------------------------------------------------------------------------------------
def test_safetensors_go_through_lfs_and_remote_code_is_pushed(published):
    state = published.state
    files = _head(state, MODEL_REPO)["files"]
    assert set(REMOTE_CODE_FILES) <= set(files)
    assert {"config.json", "processor_config.json", "results.json", "results.md", "README.md"} <= set(files)
    weights = [path for path in files if path.endswith(".safetensors")]
    assert weights
    for path, info in files.items():
        assert info["lfs"] == path.endswith(".safetensors"), path  # weights through LFS, nothing else
    assert {files[path]["oid"] for path in weights} <= set(state["lfs_uploads"])
    assert len(state["repos"][MODEL_REPO]["commits"]) == 2  # the repo's initial commit + ONE commit for the push


def test_repushing_unchanged_files_uploads_nothing(hub, published):
    before = hub.state()
    info = push_to_hub(published.root / "model", MODEL_REPO, **published.push_kwargs)
    after = hub.state()
    assert after["lfs_uploads"] == before["lfs_uploads"]
    assert after["repos"][MODEL_REPO] == before["repos"][MODEL_REPO]  # no empty commit either
    assert info.oid == before["repos"][MODEL_REPO]["refs"]["main"]


def test_private_repo_branch_and_commit_message(hub, published):
    repo_id = f"{USER}/private-experiment"
    before = _files(published.root / "model")
    info = push_to_hub(
        published.root / "model",
        repo_id,
        token=hub.token,
        private=True,
        revision="experiment",
        commit_message="Tiny model on a branch",
    )
    assert _files(published.root / "model") == before  # nothing written locally (the card went into the commit)
    repo = hub.state()["repos"][repo_id]
    assert repo["private"]
    assert set(repo["refs"]) == {"main", "experiment"}
    head = _head(hub.state(), repo_id, "experiment")
    assert head["message"] == "Tiny model on a branch" and head["oid"] == info.oid
    assert set(_head(hub.state(), repo_id)["files"]) == {".gitattributes"}  # main untouched
    assert json.loads(hub.read(repo_id, "config.json", revision="experiment"))["model_type"] == "hf_instructblip"
    with pytest.raises(urllib.error.HTTPError) as anonymous:  # invisible without the token
        urllib.request.urlopen(f"{hub.url}/{repo_id}/resolve/experiment/config.json", timeout=30)
    assert anonymous.value.code == 404


def test_create_pr_leaves_the_branch_alone(hub, published):
    repo_id = f"{USER}/pull-request"
    push_to_hub(published.root / "adapter", repo_id, token=hub.token)
    head_before = hub.state()["repos"][repo_id]["refs"]["main"]
    info = push_to_hub(published.root / "eval", repo_id, token=hub.token, create_pr=True)
    refs = hub.state()["repos"][repo_id]["refs"]
    assert info.pr_url and refs["main"] == head_before
    assert "results.json" in _head(hub.state(), repo_id, "refs/pr/1")["files"]


def test_cli_push(hub, published, monkeypatch, capsys):
    from hf_instructblip.cli import main

    monkeypatch.setenv("HF_TOKEN", hub.token)
    repo_id = f"{USER}/from-the-cli"
    argv = ["push", str(published.root / "model"), repo_id, "--private", "--commit-message", "From the CLI"]
    assert main([*argv, "--results", str(published.root / "eval"), "--license", "mit"]) == 0
    out = capsys.readouterr().out
    head = _head(hub.state(), repo_id)
    assert head["oid"] in out and head["message"] == "From the CLI"
    assert hub.state()["repos"][repo_id]["private"]
    readme = hub.read(repo_id, "README.md").decode()
    assert "license: mit" in readme and "model-index" in readme


def test_trainer_push_to_hub_pushes_the_final_model_with_its_card(hub, tokenizer_dirs, tmp_path):
    from hf_instructblip.data.collator import InstructBlipDataCollator
    from hf_instructblip.data.mixture import concatenate_mixture
    from hf_instructblip.data.synthetic import SYNTHETIC_HELD_IN, synthetic_mixture
    from hf_instructblip.training import InstructBlipTrainer, InstructBlipTrainingArguments

    processor = make_processor(tokenizer_dirs)
    model = model_for(processor, seed=5)
    parts = synthetic_mixture(SYNTHETIC_HELD_IN[:2], 4, seed=0, image_size=32)
    repo_id = f"{USER}/trained"
    args = InstructBlipTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_token=hub.token,
    )
    trainer = InstructBlipTrainer(
        model=model,
        args=args,
        train_dataset=concatenate_mixture(parts),
        data_collator=InstructBlipDataCollator.for_model(model, processor),
        processing_class=processor,
        mixture_sizes={name: len(part) for name, part in parts.items()},
    )
    trainer.train()
    trainer.save_model()  # with push_to_hub=True: saves and pushes (transformers' Trainer contract)

    files = _head(hub.state(), repo_id)["files"]
    assert files["model.safetensors"]["lfs"] and "processor_config.json" in files
    assert set(REMOTE_CODE_FILES) <= set(files)
    readme = hub.read(repo_id, "README.md").decode()
    assert "hf_instructblip" in readme and "image-text-to-text" in readme
    for name in parts:
        assert f"| {name} | 4 |" in readme  # the mixture with its sizes
    assert "- learning_rate: 1e-05" in readme and "- max_steps: 2" in readme
    assert "last logged training loss" in readme


def test_pushing_a_folder_that_is_not_a_model_is_refused_before_any_request(hub, tmp_path):
    requests = len(hub.state()["log"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a model"):
        push_to_hub(tmp_path / "empty", f"{USER}/nothing", token=hub.token)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text('{"model_type": "hf_instructblip", "auto_map": {}}')
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"no \*\.safetensors"):
        push_to_hub(tmp_path / "bin", f"{USER}/nothing", token=hub.token, card=CardInfo())
    assert len(hub.state()["log"]) == requests


def test_missing_remote_code_is_added_from_the_package_and_our_card_is_kept(hub, published, tmp_path):
    import shutil

    import hf_instructblip

    folder = tmp_path / "model"
    shutil.copytree(published.root / "model", folder, ignore=shutil.ignore_patterns("*.py"))
    card = render_model_card(folder, f"{USER}/kept-card", CardInfo(license="mit", llm_source="me/some-llm"))
    card.save(folder / "README.md")  # as InstructBlipTrainer writes it
    push_to_hub(folder, f"{USER}/kept-card", token=hub.token)
    package = Path(hf_instructblip.__file__).parent
    for name in REMOTE_CODE_FILES:
        assert hub.read(f"{USER}/kept-card", name) == (package / name).read_bytes(), name
    assert hub.read(f"{USER}/kept-card", "README.md") == (folder / "README.md").read_bytes()
    assert not list(folder.glob("*.py"))


def test_peft_placeholder_card_is_replaced_by_ours(hub_server, published):
    assert "library_name: peft" in (published.root / "adapter" / "README.md").read_text()  # PEFT wrote one
    pushed = hub_server.read(ADAPTER_REPO, "README.md").decode()
    assert "- hf_instructblip" in pushed and f'base_id = "{MODEL_REPO}"' in pushed
    config = json.loads(hub_server.read(ADAPTER_REPO, "adapter_config.json"))
    assert config["base_model_name_or_path"] == MODEL_REPO  # CardInfo.base_model, in the pushed copy only
    local = json.loads((published.root / "adapter" / "adapter_config.json").read_text())
    assert local["base_model_name_or_path"] != MODEL_REPO
