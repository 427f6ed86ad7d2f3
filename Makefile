# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11:
#   make drive   set up .venv, then drive on the built-in defaults: synthetic camera, bundled
#                model, recording on, for DRIVE_SECONDS; then review the bag
#   make test    set up .venv, then run the test suite
# Other targets: make figure2 (the paper's Figure 2), make bench (timings), make fleet-bench
# (vbp-fleet's throughput), make clean.

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
REFERENCE ?= $(abspath $(CURDIR)/../shared/reference/visualbackprop-authors)
RUNS ?= $(CURDIR)/runs
DRIVE_SECONDS ?= 20
DRIVE_ARGS ?=
DRIVE_DIR := $(RUNS)/drive/$(shell date +%Y%m%d-%H%M%S)
CHROMIUM := /usr/bin/chromium

# What the PyPI ROS 2 wheels need: ament_index_python looks up packages under this prefix.
export AMENT_PREFIX_PATH := $(VENV)
export VBP_REFERENCE_DIR := $(REFERENCE)

PACKAGE_FILES := setup.py setup.cfg package.xml $(shell find vbp_ros resource launch config -type f \
	-not -name '*.pyc' 2>/dev/null)

.PHONY: drive figure2 test bench fleet-bench clean python-venv apt

drive: $(VENV)/.package
	$(BIN)/vbp-drive --duration $(DRIVE_SECONDS) --bag-dir $(DRIVE_DIR)/bag $(DRIVE_ARGS)
	$(BIN)/vbp-review $(DRIVE_DIR)/bag
	@echo "bag, logs and review: $(DRIVE_DIR)"

figure2: $(VENV)/.package
	$(BIN)/vbp-import-t7 $(REFERENCE)/model.t7b $(RUNS)/models/authors.safetensors
	$(BIN)/vbp-figure2 --model $(RUNS)/models/authors.safetensors --out $(RUNS)/figure2 \
		$(REFERENCE)/images
	@echo "Figure 2 renderings: $(RUNS)/figure2"

test: $(VENV)/.package $(CHROMIUM)
	cd $(CURDIR) && $(BIN)/python -m pytest -q test

bench: $(VENV)/.package
	$(BIN)/vbp-bench --networks netsvf,nethvf,authors --batches 1,8 --json $(RUNS)/bench.json
	$(BIN)/vbp-import-t7 $(REFERENCE)/model.t7b $(RUNS)/models/authors.safetensors
	$(BIN)/vbp-agreement --model $(RUNS)/models/authors.safetensors $(REFERENCE)/images

fleet-bench: $(VENV)/.package
	$(BIN)/vbp-fleet-bench --json $(RUNS)/fleet-bench.json

# Pinned dependencies; re-run when requirements.txt changes.
$(VENV)/.deps: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || \
		{ echo "Python 3.10 or newer is needed (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory python-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

# The package itself, installed (not editable) so that data_files reach .venv/share, where
# the ament index finds them; re-installed whenever a package file changes.
$(VENV)/.package: $(VENV)/.deps $(PACKAGE_FILES)
	$(BIN)/python -m pip install --no-deps --force-reinstall .
	rm -rf build *.egg-info
	touch $@

# Debian and Ubuntu ship venv/ensurepip separately.
python-venv:
	@$(MAKE) --no-print-directory apt PACKAGES=python3-venv

# Headless Chromium for the test of vbp-fleet's HTML report (Debian's package).
$(CHROMIUM):
	@$(MAKE) --no-print-directory apt PACKAGES=chromium

apt:
	@if [ "$$(id -u)" = 0 ]; then apt-get update && \
		apt-get install -y --no-install-recommends $(PACKAGES); \
	else sudo apt-get update && sudo apt-get install -y --no-install-recommends $(PACKAGES); fi

clean:
	rm -rf $(VENV) build *.egg-info $(RUNS)
