# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install medssl first;
# `make test` also creates .venv-deploy for the MONAI Deploy tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medssl-installed
PYTEST_ARGS ?=

# The MONAI Deploy App SDK (Holoscan, CUDA Python) changes what `import monai` loads: it gets its own venv.
DEPLOY_VENV ?= .venv-deploy
DEPLOY_PY := $(DEPLOY_VENV)/bin/python
DEPLOY_STAMP := $(DEPLOY_VENV)/.medssl-installed

.PHONY: demo test test-all install clean deploy-env test-deploy

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch==2.13.0 first (a CPU build): a bare torch requirement would pull a multi-GB CUDA build.
	# A torch already in the venv (e.g. a CUDA build on a GPU machine) is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

$(DEPLOY_STAMP): setup.cfg pyproject.toml
	test -x $(DEPLOY_PY) || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_PY) -c "import torch" 2>/dev/null || $(DEPLOY_PY) -m pip install torch==2.13.0
	$(DEPLOY_PY) -m pip install -e ".[deploy,test]"
	touch $(DEPLOY_STAMP)

deploy-env: $(DEPLOY_STAMP)

# Holoscan asks for a larger stack than the default 8 MiB.
test-deploy: $(DEPLOY_STAMP)
	ulimit -s 32768 2>/dev/null || true; $(DEPLOY_PY) -m pytest tests/deploy $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/medssl demo --out demo_output

# The whole suite: the core tests in .venv, then the deploy tests in .venv-deploy (both created here if absent).
test: $(STAMP) $(DEPLOY_STAMP)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-deploy

test-all: $(STAMP)
	$(PY) -m pytest -n 2 -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) demo_output .pytest_cache
