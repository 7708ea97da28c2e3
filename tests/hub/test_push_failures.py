"""A push that fails says why, commits nothing, leaves the folder alone, never shows the token, and can be redone."""

from __future__ import annotations

import hashlib
import logging
import secrets
import socket
import traceback
from pathlib import Path

import pytest

from conftest import make_processor, model_for
from hf_instructblip.hub import PushToHubError, push_to_hub

from .conftest import USER


@pytest.fixture(scope="module")
def fresh_model(tokenizer_dirs, tmp_path_factory) -> Path:
    """A model whose weights the server has never seen, so a push has LFS objects to upload."""
    processor = make_processor(tokenizer_dirs)
    folder = tmp_path_factory.mktemp("failures") / "model"
    model_for(processor, seed=7).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def watched(caplog):
    """Everything a push may print or log, at DEBUG level."""
    for name in ("huggingface_hub", "hf_instructblip", "transformers"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with the sha256 of its bytes (folders: "dir")."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        for path in sorted(folder.rglob("*"))
    }


def _remote(state: dict) -> dict:
    return {"repos": state["repos"], "lfs_objects": state["lfs_objects"]}


def _failed_push(folder: Path, repo_id: str, token: str, capfd, caplog, **kwargs) -> PushToHubError:
    """Push, expect a PushToHubError, and check the token appears nowhere: message, traceback, output, logs."""
    before = _snapshot(folder)
    with pytest.raises(PushToHubError) as failure:
        push_to_hub(folder, repo_id, token=token, **kwargs)
    error = failure.value
    shown = "".join(traceback.format_exception(error)) + repr(error)
    out, err = capfd.readouterr()
    for text in (shown, out, err, caplog.text):
        assert token not in text
    assert _snapshot(folder) == before  # the local folder is byte-identical
    return error


def test_unreachable_server(hub, fresh_model, capfd, watched):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    before = hub.state()
    error = _failed_push(
        fresh_model, f"{USER}/unreachable", hub.token, capfd, watched, endpoint=f"http://127.0.0.1:{port}"
    )
    assert f"could not reach the Hub at http://127.0.0.1:{port}" in str(error) and error.status_code is None
    assert _remote(hub.state()) == _remote(before)


def test_rejected_token(hub, fresh_model, capfd, watched):
    wrong = "hf_" + secrets.token_hex(16)
    before = hub.state()
    error = _failed_push(fresh_model, f"{USER}/bad-token", wrong, capfd, watched)
    assert error.status_code == 401 and "refused the token" in str(error)
    assert _remote(hub.state()) == _remote(before)


def test_server_error_mid_push_commits_nothing_and_a_retry_succeeds(hub, fresh_model, capfd, watched):
    repo_id = f"{USER}/flaky"
    hub.fault(r"/commit/", status=500)  # the LFS uploads succeed; the commit call then fails
    before = hub.state()
    error = _failed_push(fresh_model, repo_id, hub.token, capfd, watched)
    assert error.status_code == 500 and "HTTP 500" in str(error) and "run the push again" in str(error)
    during = hub.state()
    uploaded = len(during["lfs_uploads"]) - len(before["lfs_uploads"])
    assert uploaded >= 1  # it failed in the middle: weights were already uploaded
    assert [c["message"] for c in during["repos"][repo_id]["commits"]] == ["initial commit"]

    hub.clear_faults()
    info = push_to_hub(fresh_model, repo_id, token=hub.token)
    after = hub.state()
    head = after["repos"][repo_id]["commits"][-1]
    assert head["oid"] == info.oid and "model.safetensors" in head["files"]
    assert len(after["lfs_uploads"]) == len(during["lfs_uploads"])  # the objects uploaded before are reused


def test_transient_lfs_upload_error_is_retried_by_the_client(hub, tokenizer_dirs, tmp_path):
    processor = make_processor(tokenizer_dirs)
    model_for(processor, seed=8).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    hub.fault(r"^/_lfs/[0-9a-f]+$", status=500, method="PUT", count=1)
    info = push_to_hub(tmp_path / "model", f"{USER}/transient", token=hub.token)
    state = hub.state()
    assert state["faults"][0]["hits"] == 1
    assert state["repos"][f"{USER}/transient"]["refs"]["main"] == info.oid


def test_cli_failure_exits_2_without_showing_the_token(hub, fresh_model, monkeypatch, capfd, watched):
    from hf_instructblip.cli import main

    wrong = "hf_" + secrets.token_hex(16)
    monkeypatch.setenv("HF_TOKEN", wrong)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(fresh_model), f"{USER}/cli-bad-token"])
    assert exit_info.value.code == 2
    out, err = capfd.readouterr()
    assert "hf-instructblip push: error: push to hub-tester/cli-bad-token failed" in err and "401" in err
    for text in (out, err, watched.text):
        assert wrong not in text
