# Two entry points for a newcomer: `make profile` (the main job) and `make test`.
# Each creates .venv and installs fdi_keras with its extras on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT_DIR ?= profiles/this_cpu
NUM_CONFIGS ?= 300

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

install: $(VENV)/.installed

profile: $(VENV)/.installed  ## profile this CPU, fit its timing tree, print the report
	$(PY) tools/profile_device.py --backend=local --kinds=conv2d,depthwise_conv2d,dense,pool2d,global_pool,add \
		--num_configs=$(NUM_CONFIGS) --threads=1 --out_dir=$(OUT_DIR)

test: $(VENV)/.installed  ## lint and the test suite
	$(VENV)/bin/ruff check fdi_keras tools tests benchmarks
	$(PY) -m pytest -q

benchmark: $(VENV)/.installed  ## the timing-model benchmark (about 30 minutes), into benchmarks/RESULTS.md
	$(PY) benchmarks/timing_model.py

.PHONY: install profile test benchmark
