"""The local Hub: a real server process (hub_server.py) and the client pointed at it.

``hub_server`` (session) starts the server on 127.0.0.1 with a free port and a random token. ``hub`` (per test)
points the real `huggingface_hub` client at it: environment variables for subprocesses (``HF_ENDPOINT``,
``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE=0``, a temporary ``HF_HOME``) and, in this process, where
huggingface_hub already read them at import, its module constants (monkeypatched, restored after the test).
``published`` (session) pushes one tiny model (with results) and one LoRA adapter, then loads them back in a fresh
process that cannot import hf_instructblip; test_push.py and test_model_card.py check what it saw.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import HIDE_PACKAGE

SERVER = Path(__file__).with_name("hub_server.py")
USER = "hub-tester"


@dataclass
class HubServer:
    """Handle on the server process: its URL, the valid token, and the debug hooks."""

    url: str
    token: str
    process: subprocess.Popen

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def state(self) -> dict[str, Any]:
        """Repos (refs, commits with their files), LFS objects, every LFS upload, the request log."""
        return self._call("GET", "/_debug/state")

    def fault(self, path: str, status: int = 500, method: str | None = None, skip: int = 0, count: int = -1) -> None:
        """Answer requests whose path matches the regex ``path`` with ``status`` (``count=-1``: until cleared)."""
        fault = {"path": path, "status": status, "skip": skip, "count": count}
        if method:
            fault["method"] = method
        self._call("POST", "/_debug/fault", fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_debug/fault")

    def commits(self, repo_id: str) -> list[dict[str, Any]]:
        return self.state()["repos"][repo_id]["commits"]

    def read(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """A file's content as the Hub serves it (authenticated, so private repos work)."""
        request = urllib.request.Request(f"{self.url}/{repo_id}/resolve/{revision}/{path}")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    token = "hf_" + secrets.token_hex(16)
    log = tmp_path_factory.mktemp("hub_server") / "stderr.log"  # tracebacks of a crashed handler end up here
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", "0", "--token", token],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    line = process.stdout.readline()
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"hub_server.py did not start: {line!r} {log.read_text()}")
    server = HubServer(f"http://127.0.0.1:{int(line.split()[1])}", token, process)
    yield server
    process.terminate()
    process.wait(timeout=10)


@contextmanager
def client_env(server: HubServer, home: Path) -> Iterator[None]:
    """Point the client at ``server``: env vars (for subprocesses) and huggingface_hub's import-time constants."""
    import huggingface_hub.constants as constants
    import transformers.utils.hub

    environment = {
        "HF_ENDPOINT": server.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    patch = pytest.MonkeyPatch()
    try:
        for name, value in environment.items():
            patch.setenv(name, value)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_MODULES_CACHE"):
            patch.delenv(name, raising=False)
        for name, value in patched.items():
            patch.setattr(constants, name, value)
        patch.setattr(transformers.utils.hub, "_hf_api", None)  # transformers' shared HfApi holds an endpoint
        yield
    finally:
        patch.undo()


@pytest.fixture
def hub(hub_server, tmp_path):
    """The client, in this process and in subprocesses, talks to ``hub_server``; faults are cleared afterwards."""
    with client_env(hub_server, tmp_path / "hf_home"):
        yield hub_server
    hub_server.clear_faults()


def run_python(script: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with this process's environment (set up by ``client_env``)."""
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=dict(os.environ), cwd=cwd, timeout=timeout
    )


# ----- one published model + adapter, loaded back in a fresh process (shared by test_push and test_model_card) ------
MODEL_REPO = f"{USER}/tiny-instructblip"
ADAPTER_REPO = f"{USER}/tiny-instructblip-lora"
#: What the card's usage snippet asks (it runs with a photo.jpg in its working directory).
SNIPPET_PROMPT = "What is in the photo?"
SNIPPET_GENERATION = {"max_new_tokens": 30, "do_sample": False}

_FRESH_PROCESS = (
    HIDE_PACKAGE
    + """
import contextlib, io, json
import torch
from PIL import Image
from huggingface_hub import ModelCard
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

processor = AutoProcessor.from_pretrained(MODEL_REPO, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(MODEL_REPO, trust_remote_code=True).eval()
inputs = processor(images=Image.open("photo.jpg"), text=PROMPT)
with torch.no_grad():
    logits = model(**inputs).logits
base = AutoModelForImageTextToText.from_pretrained(MODEL_REPO, trust_remote_code=True)
adapter = PeftModel.from_pretrained(base, ADAPTER_REPO).eval()
with torch.no_grad():
    adapter_logits = adapter(**inputs).logits
tensors = {"logits": logits, "adapter_logits": adapter_logits, **{"inputs." + k: v for k, v in inputs.items()}}
save_file({k: v.contiguous() for k, v in tensors.items()}, "remote.safetensors")

card = ModelCard.load(MODEL_REPO)
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    exec(open("snippet.py").read(), {"__name__": "__main__"})
report = {
    "classes": [type(model).__module__, type(processor).__module__],
    "model_index": [[r.dataset_type, r.metric_type, r.metric_value] for r in card.data.eval_results or []],
    "tags": card.data.tags,
    "snippet_output": printed.getvalue(),
}
with open("report.json", "w") as f:
    json.dump(report, f)
"""
)


@dataclass
class Published:
    """What the ``published`` fixture pushed, and what a fresh process without hf_instructblip loaded back."""

    root: Path
    processor: Any
    model: Any
    peft_model: Any
    card: Any
    push_kwargs: dict[str, Any]
    state: dict[str, Any]  # the server right after both pushes
    readme: str
    remote: dict[str, Any]  # tensors computed in the fresh process
    report: dict[str, Any]  # card and snippet facts from the fresh process


def write_example_results(folder: Path) -> Path:
    """A results.json / results.md as `evaluate_zero_shot` + `write_results` produce them."""
    from hf_instructblip.evaluation.harness import DatasetResult, write_results

    results = {
        "gqa": DatasetResult("gqa", "accuracy", "generate", True, 12, 0.41666, ["yes"] * 12),
        "hateful_memes": DatasetResult("hateful_memes", "auc", "rank", True, 12, 0.5734, ["no"] * 12),
        "synthetic_yes_no": DatasetResult("synthetic_yes_no", "accuracy", "rank", True, 8, 0.625, ["yes"] * 8),
    }
    write_results(results, folder, model_name=MODEL_REPO)
    return folder


def save_photo(path: Path, seed: int = 0) -> Path:
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.RandomState(seed).randint(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def published(hub_server, tokenizer_dirs, tmp_path_factory) -> Published:
    import re

    import torch
    from safetensors.torch import load_file

    from conftest import make_processor, model_for
    from hf_instructblip.hub import CardInfo, push_to_hub
    from hf_instructblip.training.lora import apply_lora

    root = tmp_path_factory.mktemp("published")
    processor = make_processor(tokenizer_dirs)
    model = model_for(processor)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    peft_model = apply_lora(model_for(processor), target="llm", r=4)  # same base weights as `model`
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero: move every trained tensor so the adapter changes the logits
        for param in peft_model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.eval().save_pretrained(str(root / "adapter"))
    write_example_results(root / "eval")
    save_photo(root / "photo.jpg")
    card = CardInfo(
        license="apache-2.0",
        qformer_source="sentence-transformers/all-MiniLM-L6-v2",
        mixture_sizes={"coco_caption": 400, "vqav2": 1600, "okvqa": 100},
        mixture_multipliers={"okvqa": 2.0},
    )
    push_kwargs = {"token": hub_server.token, "results": root / "eval", "card": card}
    with client_env(hub_server, root / "hf_home"):
        push_to_hub(root / "model", MODEL_REPO, **push_kwargs)
        push_to_hub(root / "adapter", ADAPTER_REPO, token=hub_server.token, card=CardInfo(base_model=MODEL_REPO))
        state = hub_server.state()
        readme = hub_server.read(MODEL_REPO, "README.md").decode()
        (root / "snippet.py").write_text(re.search(r"```python\n(.*?)```", readme, re.DOTALL).group(1))
        header = f"MODEL_REPO = {MODEL_REPO!r}\nADAPTER_REPO = {ADAPTER_REPO!r}\nPROMPT = {SNIPPET_PROMPT!r}\n"
        result = run_python(header + _FRESH_PROCESS, cwd=root)
    assert result.returncode == 0, result.stderr[-4000:]
    return Published(
        root=root,
        processor=processor,
        model=model,
        peft_model=peft_model,
        card=card,
        push_kwargs=push_kwargs,
        state=state,
        readme=readme,
        remote=load_file(root / "remote.safetensors"),
        report=json.loads((root / "report.json").read_text()),
    )
