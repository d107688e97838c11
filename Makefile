# Two commands on a fresh machine: `make demo` (digits, end to end) and `make test`.
# `make test` skips the tests marked slow (benchmark smoke runs, torchrun, kill-resume, real
# data, long end-to-end runs); `make test-all` (what CI runs) runs every test.
# Both create the virtual environment first if it is missing.

VENV ?= .venv
PYTHON ?= python3
# The CPU build of torch is installed first so that `torch>=2.2` in pyproject.toml is already
# met and pip never pulls a multi-GB CUDA build. Elsewhere, choose your own build, e.g.
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BIN := $(VENV)/bin

.PHONY: demo test test-all test-vision lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)
	$(BIN)/ensemble-distill run --out runs/digits

# The fast tier is hundreds of tiny models, where a second process gains more than a second
# intra-op thread: one worker per core with one thread each (1:54 against 3:06 serial on 2
# cores). test-all stays serial: its kill-resume and torchrun tests time themselves.
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts
	OMP_NUM_THREADS=1 $(BIN)/pytest -m "not slow" -n auto

# test-all also installs `eval.corruptions`' package (the shift extra) so that the tests check
# every corruption against it; headless OpenCV and --no-deps, as the extra's comment says.
SHIFT := $(VENV)/.shift-installed
$(SHIFT): $(STAMP)
	$(BIN)/python -m pip install --quiet numba==0.68.1 scikit-image==0.26.0 \
		opencv-python-headless==5.1.0.95
	$(BIN)/python -m pip install --quiet --no-deps imagecorruptions-imaug==1.1.5
	touch $@

test-all: $(STAMP) $(SHIFT)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts
	$(BIN)/pytest
	$(MAKE) test-vision

# test-vision: the tests marked `vision` (the ResNet-18 example, its built-in network against
# torchvision's, the timm recipe end to end) on real torchvision and timm, in a venv of their
# own. PyPI's torchvision for torch 2.13.0 is built against CUDA torch and does not import
# beside the CPU build, so this venv takes a matching pair as PyPI gives it for Linux x86_64:
# torch 2.14.1 (a CUDA build, 5.5 GB, that runs on the CPU) and torchvision 0.29.1. Where the
# disk has less than VISION_GB free it says so and stops without failing: the main suite has
# run by then.
VISION_VENV ?= .venv-vision
VISION ?= torch==2.14.1 torchvision==0.29.1
# timm as docs/data-and-models.md installs it: without dependencies (it would pull a torch of
# its own choosing), then huggingface_hub with its own (none of them torch).
TIMM ?= timm==1.0.31
HUB ?= huggingface_hub==2.4.0
VISION_GB ?= 10
VISION_STAMP := $(VISION_VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
$(VISION_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/python -m pip install --quiet $(VISION)
	$(VISION_VENV)/bin/python -m pip install --quiet --no-deps $(TIMM)
	$(VISION_VENV)/bin/python -m pip install --quiet $(HUB) -e '.[dev]'
	rm -f $(VISION_VENV)/.installed-* && touch $@

test-vision:
	@free=$$(df -P -BG . | awk 'NR == 2 {print $$4 + 0}'); \
	if [ ! -e $(VISION_STAMP) ] && [ "$$free" -lt $(VISION_GB) ]; then \
		echo "test-vision NOT RUN: $${free} GB free, torch and torchvision need $(VISION_GB)"; \
	else \
		$(MAKE) $(VISION_STAMP) && \
		REQUIRE_TORCHVISION=1 OMP_NUM_THREADS=1 $(VISION_VENV)/bin/pytest -m vision; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples scripts
	$(BIN)/ruff check --fix src tests benchmarks examples scripts

clean:
	rm -rf $(VENV) $(VISION_VENV) runs .pytest_cache .ruff_cache
