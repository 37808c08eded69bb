PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install train test clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install:  ## .venv with the package (editable) and test extras; Debian's Fashion-MNIST when run as root with apt
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; set PY=python3.11 (or newer)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		echo "installing Debian's dataset-fashion-mnist (offline Fashion-MNIST under /usr/share/datasets/fashion-mnist)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
			|| echo "warning: apt-get could not install dataset-fashion-mnist; training will try torchvision's download"; \
	fi

train:  ## train the default config (Fashion-MNIST, plain CNN); ARGS="key=value ..." for overrides
	$(BIN)/python train.py $(ARGS)

test:  ## the test suite (CPU, a few minutes)
	$(BIN)/python -m pytest -q

clean:  ## remove run logs (not the data cache)
	rm -rf logs outputs multirun
