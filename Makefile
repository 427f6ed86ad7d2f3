# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11:
#   make drive   set up .venv, then drive on the built-in defaults: synthetic camera, bundled
#                model, recording on, for DRIVE_SECONDS; then review the bag
#   make test    set up .venv, then run the test suite
# Other targets: make test-fast (the tests that start no ROS process and take under a second each:
# pytest -m "not ros and not slow"), make figure2 (the paper's Figure 2), make bench (timings),
# make fleet-bench (vbp-fleet's throughput), make node-ceiling (the highest camera rate vbp_node
# keeps up with), make gpu-check (CUDA tests and benchmarks on a GPU machine), make clean.

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
REFERENCE ?= $(abspath $(CURDIR)/../shared/reference/visualbackprop-authors)
# Source snapshots of the upstream ROS 2 launch system and ros2 CLI (not on PyPI).
UPSTREAM ?= $(abspath $(CURDIR)/../shared/upstream)
RUNS ?= $(CURDIR)/runs
DRIVE_SECONDS ?= 20
DRIVE_ARGS ?=
DRIVE_DIR := $(RUNS)/drive/$(shell date +%Y%m%d-%H%M%S)
# The set-up steps print a line each; what pip and the install script print goes to this log,
# whose end is shown when a step fails.
SETUP_LOG := $(VENV)/setup.log
SHOW_SETUP_LOG = { tail -n 40 $(SETUP_LOG); echo "set-up failed: the whole log is $(SETUP_LOG)"; \
	exit 1; }
CHROMIUM := /usr/bin/chromium

# What the PyPI ROS 2 wheels need: ament_index_python looks up packages under this prefix.
export AMENT_PREFIX_PATH := $(VENV)
export VBP_REFERENCE_DIR := $(REFERENCE)

PACKAGE_FILES := setup.py setup.cfg package.xml $(shell find vbp_ros resource launch config -type f \
	-not -name '*.pyc' 2>/dev/null)

.PHONY: drive figure2 test test-fast bench fleet-bench node-ceiling gpu-check clean python-venv apt

SETUP := $(VENV)/.package $(VENV)/.ros2launch $(VENV)/.ros2lifecycle

drive: $(SETUP)
	$(BIN)/vbp-drive --duration $(DRIVE_SECONDS) --bag-dir $(DRIVE_DIR)/bag $(DRIVE_ARGS)
	$(BIN)/vbp-review $(DRIVE_DIR)/bag
	@echo "bag, logs and review: $(DRIVE_DIR)"

figure2: $(VENV)/.package
	$(BIN)/vbp-import-t7 $(REFERENCE)/model.t7b $(RUNS)/models/authors.safetensors
	$(BIN)/vbp-figure2 --model $(RUNS)/models/authors.safetensors --out $(RUNS)/figure2 \
		$(REFERENCE)/images
	@echo "Figure 2 renderings: $(RUNS)/figure2"

test: $(SETUP) $(CHROMIUM)
	cd $(CURDIR) && $(BIN)/python -m pytest -q test

test-fast: $(VENV)/.package
	cd $(CURDIR) && $(BIN)/python -m pytest -q -m "not ros and not slow" test

bench: $(VENV)/.package
	$(BIN)/vbp-bench --networks netsvf,nethvf,authors --batches 1,8 --json $(RUNS)/bench.json
	$(BIN)/vbp-import-t7 $(REFERENCE)/model.t7b $(RUNS)/models/authors.safetensors
	$(BIN)/vbp-agreement --model $(RUNS)/models/authors.safetensors $(REFERENCE)/images

fleet-bench: $(VENV)/.package
	$(BIN)/vbp-fleet-bench --json $(RUNS)/fleet-bench.json

node-ceiling: $(VENV)/.package
	$(BIN)/vbp-ceiling

# The CUDA tests and benchmarks in one call, on a GPU machine (under 4 minutes). It uses the
# machine's own CUDA torch (GPU_PYTHON, e.g. Python 3.12 with torch 2.11 + CUDA), never the CPU
# pin of requirements.txt: a venv with --system-site-packages gets only the pinned packages that
# are missing (numpy, safetensors, OpenCV, simplejpeg, torchfile, pytest, PyYAML, onnx,
# onnxruntime); the package runs from
# this tree. Without a CUDA device it stops at once with "no CUDA device".
GPU_PYTHON ?= python3
GPU_VENV := $(CURDIR)/.venv-gpu
GPU_MODULES := numpy:numpy safetensors:safetensors cv2:opencv-python-headless \
	simplejpeg:simplejpeg torchfile:torchfile pytest:pytest yaml:PyYAML onnx:onnx \
	onnxruntime:onnxruntime

gpu-check:
	@$(GPU_PYTHON) -c 'import importlib.util as u, sys; torch = u.find_spec("torch") and \
		__import__("torch"); sys.exit(0 if torch and torch.cuda.is_available() else \
		"make gpu-check: no CUDA device (or no CUDA build of torch for $(GPU_PYTHON))")'
	@[ -x $(GPU_VENV)/bin/python ] || $(GPU_PYTHON) -m venv --system-site-packages $(GPU_VENV)
	@for pair in $(GPU_MODULES); do module=$${pair%%:*}; package=$${pair#*:}; \
		$(GPU_VENV)/bin/python -c "import $$module" 2>/dev/null || \
		$(GPU_VENV)/bin/python -m pip install -q "$$(grep -i "^$$package==" requirements.txt)"; \
	done
	cd $(CURDIR) && PYTHONPATH=$(CURDIR) timeout 120 $(GPU_VENV)/bin/python -m pytest -q \
		-p no:cacheprovider -k cuda test/test_engine.py test/test_vbp_behaviour.py
	cd $(CURDIR) && PYTHONPATH=$(CURDIR) timeout 120 $(GPU_VENV)/bin/python -m \
		vbp_ros.tools.gpu_check

# Pinned dependencies; re-run when requirements.txt changes.
$(VENV)/.deps: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || \
		{ echo "Python 3.10 or newer is needed (set PYTHON=...)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || $(MAKE) --no-print-directory python-venv
	@$(PYTHON) -m venv $(VENV)
	@echo "set-up: the pinned packages of requirements.txt into $(VENV) (the first time takes" \
		"minutes; log: $(SETUP_LOG))"
	@{ $(BIN)/python -m pip install --upgrade pip && \
		$(BIN)/python -m pip install -r requirements.txt; } > $(SETUP_LOG) 2>&1 || $(SHOW_SETUP_LOG)
	@touch $@

# The package itself, installed (not editable) so that data_files reach .venv/share, where
# the ament index finds them; re-installed whenever a package file changes. A wheel install
# ignores setup.cfg's install_scripts, so the console scripts are copied to .venv/lib/vbp_ros/,
# where `ros2 run` and `ros2 launch` look for a package's executables (colcon puts them there).
$(VENV)/.package: $(VENV)/.deps $(PACKAGE_FILES)
	@echo "set-up: vbp_ros into $(VENV)"
	@$(BIN)/python -m pip install --no-deps --force-reinstall . >> $(SETUP_LOG) 2>&1 || \
		$(SHOW_SETUP_LOG)
	@rm -rf build *.egg-info
	@rm -rf $(VENV)/lib/vbp_ros && mkdir -p $(VENV)/lib/vbp_ros
	@for exe in $$($(BIN)/python -c "from importlib.metadata import distribution; \
		print(*(e.name for e in distribution('vbp_ros').entry_points \
		if e.group == 'console_scripts'))"); do cp $(BIN)/$$exe $(VENV)/lib/vbp_ros/; done
	@touch $@

# The upstream launch system and ros2 CLI (ros2 launch, ros2 run, ros2 topic ...) from the
# snapshots in ../shared/upstream; without that folder (a clone on its own) they are skipped,
# and so are the tests that run them.
$(VENV)/.ros2launch: $(VENV)/.deps
	@if [ -f $(UPSTREAM)/install-ros2-launch.sh ]; then \
		echo "set-up: ros2 launch and the ros2 command line from $(UPSTREAM)"; \
		bash $(UPSTREAM)/install-ros2-launch.sh $(BIN)/python >> $(SETUP_LOG) 2>&1 || \
			$(SHOW_SETUP_LOG); \
		touch $@; \
	else echo "note: $(UPSTREAM) not found: ros2 launch/run not installed (UPSTREAM=...)"; fi

# `ros2 lifecycle get|set|list|nodes`, the usual way to drive a managed node (vbp_lifecycle_node),
# is in the same ros2cli snapshot but not among the packages that script installs.
$(VENV)/.ros2lifecycle: $(VENV)/.ros2launch
	@if [ -f $(UPSTREAM)/ros2cli.tar.gz ]; then \
		echo "set-up: ros2 lifecycle from $(UPSTREAM)"; \
		src=$$(mktemp -d) && tar -xzf $(UPSTREAM)/ros2cli.tar.gz -C $$src ros2cli/ros2lifecycle && \
		$(BIN)/python -m pip install --no-deps --no-build-isolation $$src/ros2cli/ros2lifecycle \
			>> $(SETUP_LOG) 2>&1; \
		status=$$?; rm -rf $$src; [ $$status -eq 0 ] || $(SHOW_SETUP_LOG); touch $@; \
	fi

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
	rm -rf $(VENV) $(GPU_VENV) build *.egg-info $(RUNS)
