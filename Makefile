# The two set-up commands of the README:
#   make serve   run the reference attacks on the sample tiles, build the site from the catalog with
#                their results and serve it at http://127.0.0.1:8000/
#   make test    run the test suite (installs Debian's chromium for the browser test if it is missing)
# Both create .venv/ and install medfool into it on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ADDR ?= 127.0.0.1:8000
TORCHATTACKS := torchattacks==3.5.1

.PHONY: serve build test validate chromium cxx clean bench results

# torch first, pinned to the CPU build that installs in seconds (a bare `torch` would pull a multi-GB CUDA
# build); on a GPU machine: make serve TORCH=torch (or any torch>=2.2 you already have in the venv)
TORCH ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[dev,bench,ray,dicom,serve]'
	# torchattacks is a peer for the oracle tests and benchmarks; it pins requests~=2.25 (which
	# mkdocs-material cannot use) and pulls torchvision (a second torch build) but imports neither
	$(PY) -m pip install --quiet --no-deps $(TORCHATTACKS)
	touch $@

# real runs of every reference attack on the sample tiles (a few minutes on 2 cores), redone when the code changes
RESULTS := build/results/.done
$(RESULTS): $(VENV)/.installed $(wildcard medfool_ref/attacks/*.py medfool_ref/campaign/*.py medfool_ref/reports/*.py) medfool_ref/registry.py medfool_ref/data/reference-model/tilenet.safetensors
	$(VENV)/bin/medfool results --out build/results
	touch $@

# the long experiments, committed to docs/results/ with their provenance (about 25 min on 2 cores, and about
# 20 min more per defended audit, resize-pad's longer): the universal patch, one-pixel, fooling images, APGD,
# BadNets and generative poisoning (8 min), the reference model's audit on the sample tiles (the Audit page), one
# defended audit per input defence (the Defences measured page) and the whole-slide demo (the Whole slides page); the
# site marks them stale when the code that made them changes, and tests/test_recorded.py reproduces them
DEFENDED := jpeg bit-depth median stain-norm resize-pad
results: $(VENV)/.installed
	$(VENV)/bin/medfool results --recorded --out docs/results
	$(VENV)/bin/medfool audit --data sample --out docs/results/audit
	for d in $(DEFENDED); do $(VENV)/bin/medfool audit --data sample --defence $$d --budgets 2,8 --attacks fgsm,pgd,apgd-ce \
	  --out docs/results/defended/$$d || exit 1; done
	$(VENV)/bin/medfool slide demo --out docs/results/slides

serve: $(RESULTS)
	$(VENV)/bin/medfool site --serve --addr $(ADDR)

build: $(RESULTS)
	$(VENV)/bin/medfool site --out site

validate: $(VENV)/.installed
	$(VENV)/bin/medfool validate

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { echo "installing Debian's chromium for the browser test"; apt-get update -qq && apt-get install -y -qq chromium; }

# torch.compile's CPU backend (the --compile test) builds its kernels with a C++ compiler
cxx:
	@command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 || \
	  { echo "installing Debian's g++ for torch.compile"; apt-get update -qq && apt-get install -y -qq g++; }

test: $(VENV)/.installed chromium cxx
	$(PY) -m pytest

# the side-by-side comparison with torchattacks, Foolbox and ART (not part of the tests; see benchmarks/README.md)
bench: $(VENV)/.installed
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) site test-artifacts .pytest_cache
