# gr-spectrumfm: `make demo` runs the main job, `make test` runs every test.
# Both install what is missing first (`make install`, idempotent: a second run takes seconds).

VENV      := .venv
PY        := $(VENV)/bin/python
BUILD     := build
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS  := gnuradio python3-venv cmake make soapysdr-tools python3-soapysdr \
             soapysdr-module-rtlsdr soapysdr-module-uhd gr-osmosdr xvfb python3-zmq \
             python3-scipy python3-pyqtgraph python3-yaml python3-matplotlib
PYTEST    ?= $(PY) -m pytest
# Tests marked slow, gpu or hardware are left out of the default run: `make test-all` runs
# them (hardware tests skip when no radio is attached).
TEST_ARGS ?= -m "not slow and not gpu and not hardware"

.PHONY: install system venv module demo test test-all clean

install: system venv module

system:
	@dpkg -s $(APT_PKGS) >/dev/null 2>&1 || { \
	  echo "Installing Debian packages: $(APT_PKGS)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PKGS); }

venv: $(VENV)/.deps-stamp

$(VENV)/bin/python:
	/usr/bin/python3 -m venv --system-site-packages $(VENV)

# torch first: peft needs torch, and installed before it pip would satisfy that with the
# newest CUDA build from PyPI (gigabytes) instead of the pinned CPU one.
$(VENV)/.deps-stamp: $(VENV)/bin/python requirements.txt requirements-torch.txt constraints.txt
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
	  echo "A CUDA build of torch is installed: keeping it"; \
	else $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements-torch.txt; fi
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt
	touch $@

# Configure once, then build+install on every call: CMake copies only what changed (the
# models folder is copied afresh, so that what was deleted from models/ is not served).
module: venv
	@[ -f $(BUILD)/CMakeCache.txt ] || cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(CURDIR)/$(VENV) \
	  -DPython3_EXECUTABLE=$(CURDIR)/$(PY) >/dev/null
	@rm -rf $(VENV)/share/spectrumfm/models   # an adapter removed from models/ goes from here too
	@cmake --build $(BUILD) >/dev/null && cmake --install $(BUILD) >/dev/null
	@echo "installed: $$($(VENV)/bin/spectrumfm --version)"

demo: install
	$(VENV)/bin/spectrumfm demo

test: install
	$(PYTEST) $(TEST_ARGS)

test-all: install
	$(PYTEST)

clean:
	rm -rf $(BUILD) $(VENV)
