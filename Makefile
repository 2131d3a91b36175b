# satcompress: `make demo` and `make test` are all a new machine needs (Python 3.11 and make).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The project's reference data: the shared folder beside the checkout, when there is one.
SHARED_DATA := $(abspath ../shared/data)
export SATCOMPRESS_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),)

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/satcompress demo --out out
	$(BIN)/satcompress compress --task flares --recipe assembled --budget max_bytes=85kB,max_metric_drop=tss:0.01 --out out/flares/compress

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out .pytest_cache
