# mmucosim — `make demo` runs the main job, `make test` the tests. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKEND ?= verilator
ARGS ?=  # extra options for mmucosim, e.g. make verilog ARGS='--tlb-entries 32 --tlb-ways 4'

.PHONY: demo test test-full bench sweep verilog lint synth gatesim iverilog clean help

help:
	@echo "make demo      run the seed's kernel on the $(BACKEND) backend, with TLB trace, plots and waves"
	@echo "make test      the test suite on every backend (Icarus tests skip with a reason if it is missing)"
	@echo "make test-full also the full-size seed tests (many_boxes with 102,400 boxes) on every backend"
	@echo "make bench     throughput of every backend, and of a sweep on 1 and 2 Dask workers (build/bench/results.json)"
	@echo "make sweep     a design-space sweep on Dask (ARGS='demo many_boxes --tlb-entries 4,8,16 ...'; docs/sweeps.md)"
	@echo "make verilog   export the Verilog of a configuration to build/verilog/ (ARGS='--tlb-entries 32 ...')"
	@echo "make lint      ruff, and verilator --lint-only -Wall on the exported Verilog"
	@echo "make synth     issue 10's timing-closure set (ECP5 bram and axi, iCE40): Yosys, nextpnr seeds 1-3, Fmax"
	@echo "make gatesim   the demo on the synthesized iCE40 and ECP5 netlists against the RTL, cycle for cycle"

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Icarus Verilog for the cocotb-icarus backend: installed from Debian when missing and we are root.
iverilog:
	@if ! command -v iverilog >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing iverilog (Debian package)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null) \
	      || echo "could not install iverilog: cocotb-icarus tests will be skipped"; \
	  else \
	    echo "iverilog missing and not root: cocotb-icarus tests will be skipped"; \
	  fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/mmucosim demo --backend $(BACKEND) $(ARGS)

test: $(STAMP) iverilog
	$(PY) -m pytest -n 2 -q

test-full: $(STAMP) iverilog
	$(PY) -m pytest -n 2 -q --run-slow

bench: $(STAMP) iverilog
	$(VENV)/bin/mmucosim bench --sweep $(ARGS)

sweep: $(STAMP)
	$(VENV)/bin/mmucosim sweep $(ARGS)

verilog: $(STAMP)
	$(VENV)/bin/mmucosim verilog $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mmucosim verilog --lint

# Without ARGS: the timing-closure set, 3 builds x 3 nextpnr seeds (about 15 minutes on 2 cores).
synth: $(STAMP)
	$(PY) -m pip install -q -e '.[synth]'
	$(VENV)/bin/mmucosim synth $(ARGS)

gatesim: $(STAMP) iverilog
	$(VENV)/bin/mmucosim gatesim $(ARGS)

clean:
	rm -rf build
