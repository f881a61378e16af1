# Two entry points for a newcomer: `make run` (the main job) and `make test`.
# Each creates .venv and installs fdi_keras with its extras on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT_DIR ?= profiles/this_cpu
# Configurations per kernel kind: empty for the per-kind defaults (DEFAULT_COUNTS, 10-26 min on 2 cores).
NUM_CONFIGS ?=
# Kernel numeric type: float32, or int8 (full-integer post-training quantization, what phones
# run; e.g. `make profile DTYPE=int8 OUT_DIR=profiles/this_cpu_int8`). int8 has no GRU/LSTM:
# TensorFlow's int8 calibrator cannot convert them.
DTYPE ?= float32
RECURRENT_KINDS := gru,lstm,
ifeq ($(DTYPE),int8)
RECURRENT_KINDS :=
endif

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench,qat]"
	touch $@

install: $(VENV)/.installed

run: profile  ## the main job: profile this CPU, then compress LeNet-5 on MNIST to 3x predicted speed
	$(PY) examples/mnist_lenet.py --tree=$(OUT_DIR)/timing_tree.json --target_speedup=3

profile: $(VENV)/.installed  ## profile this CPU, fit its timing tree, print the report
	$(PY) tools/profile_device.py --backend=local \
		--kinds=conv2d,depthwise_conv2d,dense,pool2d,global_pool,add,squared_difference,softmax,activation,concat,pad,$(RECURRENT_KINDS)network \
		$(if $(NUM_CONFIGS),--num_configs=$(NUM_CONFIGS)) --dtype=$(DTYPE) --threads=1 --out_dir=$(OUT_DIR)

test: $(VENV)/.installed  ## lint and the test suite
	$(VENV)/bin/ruff check fdi_keras tools tests benchmarks examples
	$(PY) -m pytest -q

benchmark: profile  ## timing-model, keras.applications, compression and slimming benchmarks, into benchmarks/RESULTS.md
	$(PY) benchmarks/timing_model.py --profile_dir=$(OUT_DIR)
	$(PY) benchmarks/applications.py --tree=$(OUT_DIR)/timing_tree.json
	$(PY) benchmarks/compressors.py --tree=$(OUT_DIR)/timing_tree.json
	$(PY) benchmarks/compressed_predictions.py --trees=now=$(OUT_DIR)/timing_tree.json
	$(PY) benchmarks/rebirth.py
	$(PY) benchmarks/profiler_stress.py

.PHONY: install run profile test benchmark
