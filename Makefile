# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_data
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install lint test demo ablation bench clean

$(VENV)/.installed: setup.py requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade-strategy only-if-needed -r requirements.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest tests

demo: install
	$(PY) scripts/demo.py --data_dir $(DEMO_DIR) $(DEMO_ARGS)

ablation: install
	$(PY) scripts/ablation.py --data_dir $(DEMO_DIR) $(ABLATION_ARGS)

bench: install
	for script in bench/*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_DIR) save results
