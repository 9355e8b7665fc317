# Two entry points, each self-contained on a fresh machine: `make demo` and `make test`.
# Both create .venv in the repository root and install what is missing, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.synth-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch/torchvision pinned to the CPU-machine builds this project is developed against.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	# this project was installed as "synth" before its distribution became synth-data
	$(BIN)/python -m pip uninstall -q -y synth 2>/dev/null || true
	$(BIN)/python -m pip install -q -e ".[diffusers,ray,sam,test]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/synth run manifests/quickstart.toml --overwrite
	$(BIN)/synth inspect out/quickstart -n 2
	$(BIN)/synth preview out/quickstart -o out/quickstart/preview.png
	$(BIN)/synth report out/quickstart

test: $(STAMP)
	# two workers: most tests wait on imports and subprocesses, not on both cores; worksteal: a
	# worker that runs out takes the other's queued tests, so neither idles at the end
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist worksteal --durations=15

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/engine_overhead.py

clean:
	rm -rf out .pytest_cache
