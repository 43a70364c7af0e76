"""The cocotb backends (`cocotb-verilator`, `cocotb-icarus`): the exported Verilog under a cocotb 2 test.

This file is both halves. `run_in_simulator` runs in the caller's process: it builds the simulation once per
configuration (cached by cosim.toolchain.build), writes the job to a pickle and starts the simulator
through cocotb_tools.runner. `run_job` is the cocotb test inside the simulator: it runs the firmware in a greenlet
and, for each request the firmware switches out with, drives the ports, awaits the response and switches back with
it, so a synchronous `cpu.load_u64()` costs one greenlet switch each way and a few awaits; no bridge threads. The
`RunResult` goes back through a pickle, exceptions included, so the caller sees the same exception type. A streamed
run (a sink) does not pickle its events: the test writes them to an Arrow IPC stream in the run's folder as the
firmware runs, batch by batch, and the caller reads that file back into its sink once the simulator is done.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cocotb
from cocotb_tools.runner import Icarus, Runner
from greenlet import greenlet

from cosim.backends.base import BackendError, waves_format
from cosim.backends.cocotb_driver import CLOCK_PERIOD_NS, MmuDriver
from cosim.program import RunResult, execute, resolve_program
from cosim.stream import ArrowSpool, EventSink, SpanCounts, replay_spool
from cosim.toolchain import build
from cosim.toolchain.export import config_tag, exported_verilog
from hdl.protocol import MmuConfig

SIMULATORS = {"cocotb-verilator": "verilator", "cocotb-icarus": "icarus"}
JOB_ENV = "MMUCOSIM_JOB"  # names the job pickle for the test inside the simulator
# cocotb 2 rewrites the asserts of every module imported after it starts (pytest's hook): the firmware's modules,
# about 1.7 s per launch, for asserts nothing here relies on being rewritten.
_NO_ASSERTION_REWRITING = {"COCOTB_REWRITE_ASSERTION_FILES": ""}
TOPLEVEL = "mmu"
_VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-CFLAGS", "-O2"]  # -O2 overrides the default -Os


@dataclass(frozen=True)
class Job:
    """What the test inside the simulator runs, and where it leaves the outcome."""

    program: str
    args: dict[str, Any]
    config: MmuConfig
    backend: str
    simulator: str  # "icarus" or "verilator"
    trace: bool
    outcome_path: str
    spool_path: str | None = None  # a streamed run's events go there (cosim.stream.ArrowSpool)


class SimulatorTraceback(Exception):
    """The traceback, inside the simulator process, of an exception re-raised in the caller's process."""


# -- the caller's side --------------------------------------------------------------------------------------------


def run_in_simulator(
    program: str,
    backend: str,
    config: MmuConfig,
    *,
    args: dict[str, Any],
    trace: bool = False,
    waves: Path | None = None,
    sink: EventSink | None = None,
) -> RunResult:
    """Run `program` inside the simulator of `backend` and return its RunResult (see cosim.runner.run_program)."""
    simulator = SIMULATORS[backend]
    build_dir = build_simulation(simulator, config, waves_format(waves))  # by suffix, for both simulators
    return run_built(program, backend, simulator, build_dir, config, args=args, trace=trace, waves=waves, sink=sink)


def run_built(
    program: str, backend: str, simulator: str, build_dir: Path, config: MmuConfig, *, args: dict[str, Any],
    trace: bool = False, waves: Path | None = None, sink: EventSink | None = None,
) -> RunResult:  # fmt: skip
    """Run the job in the `simulator` build in `build_dir`, and return or raise its outcome.

    The build is that of build_simulation, or any other of a top `mmu` with the same ports (the gate-level
    netlists of cosim.toolchain.gatesim); `backend` names the run in the RunResult and in error messages.
    """
    runs = build.BUILD_ROOT / "cocotb" / "runs"
    build.prune_runs(runs)
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{simulator}-", dir=runs))
    job_path, outcome_path, log_path = run_dir / "job.pickle", run_dir / "outcome.pickle", run_dir / "sim.log"
    spool_path = run_dir / "events.arrows" if sink is not None else None
    job = Job(program, args, config, backend, simulator, trace, str(outcome_path), spool_path and str(spool_path))
    job_path.write_bytes(pickle.dumps(job))
    test_args: list[str] = []
    plusargs: list[str] = []
    if waves is not None:
        waves = waves.resolve()
        waves.parent.mkdir(parents=True, exist_ok=True)
        if simulator == "verilator":
            test_args = ["--trace-file", str(waves)]
        else:
            plusargs = [f"+dumpfile_path={waves}"]
    runner = _runner(simulator, dump_vcd=waves_format(waves) == "vcd")
    with build.tool_environment(simulator):
        try:
            runner.test(
                test_module=__name__, hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog", build_dir=build_dir,
                test_dir=run_dir, extra_env={JOB_ENV: str(job_path), **_NO_ASSERTION_REWRITING},
                waves=waves is not None, test_args=test_args,
                plusargs=plusargs, log_file=log_path, results_xml=str(run_dir / "results.xml"),
            )  # fmt: skip
        except (SystemExit, RuntimeError) as exc:
            raise BackendError(f"{backend} failed ({exc}):\n{build.log_tail(log_path)}") from None
    if not outcome_path.exists():
        raise BackendError(f"{backend} ended without running the program:\n{build.log_tail(log_path)}")
    kind, payload, remote_traceback = pickle.loads(outcome_path.read_bytes())
    if kind == "error":
        shutil.rmtree(run_dir, ignore_errors=True)
        raise payload from SimulatorTraceback(remote_traceback)
    try:
        if sink is not None and isinstance(payload.spans, SpanCounts):
            for batch in replay_spool(spool_path, payload.spans.table):
                sink.write(batch)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return payload


def build_for_verilator(config: MmuConfig) -> Path:
    """The cocotb-verilator backend's build of `config` (cosim.backends.build_for)."""
    return build_simulation("verilator", config)


def build_for_icarus(config: MmuConfig) -> Path:
    """The cocotb-icarus backend's build of `config` (cosim.backends.build_for)."""
    return build_simulation("icarus", config)


def build_simulation(
    simulator: str, config: MmuConfig, trace_format: str | None = None, build_root: Path | None = None
) -> Path:  # fmt: skip
    """The build of `config` for `simulator` (cached by cosim.toolchain.build)."""
    verilog_text = exported_verilog(config, build_root).read_text()  # built from this very text
    sources = {"mmu.v": verilog_text}
    if simulator == "verilator":
        # cocotb adds --trace (VCD) to a build with waves; --trace-fst turns that into FST
        build_args = [*_VERILATOR_ARGS, *(["--trace-fst"] if trace_format == "fst" else [])]
    else:
        _runner(simulator)  # a clear error when Icarus is missing
        sources["mmu.v"] = _unnamed_blocks(verilog_text)
        sources[f"{_ICARUS_BENCH_MODULE}.v"] = _icarus_bench_module()
        build_args = ["-s", _ICARUS_BENCH_MODULE]
    waves = trace_format is not None
    return build.cocotb_simulation(simulator, config_tag(config), sources, TOPLEVEL, build_args, waves=waves,
                                   build_root=build_root)


_ICARUS_BENCH_MODULE = "mmucosim_icarus_bench"
# `always @(...) begin: name`, then the block's own declarations (if any), its statements and its `end`
_NAMED_BLOCK = re.compile(
    r"^(?P<header>always @\([^\n]*\) begin): (?P<name>\w+)\n(?P<locals>(?:[ \t]+(?:reg|integer)\b[^\n]*;\n)*)"
    r"(?P<body>.*?^end$)",
    re.MULTILINE | re.DOTALL,
)


def _unnamed_blocks(verilog_text: str) -> str:
    """The Verilog with its always blocks unnamed, for Icarus: the same statements on the same variables.

    Icarus makes a named block a scope of its own and forks a thread into it at every wake-up (%fork/%join); with
    MyHDL naming every block, that was most of the thread creation and memory allocation in a profile of the
    simulator. A block's local variables (static, like every variable of an always block) become module variables
    named `<block>__<variable>`, renamed in the block's statements only, so that the name is no longer needed.
    """

    def unname(block: re.Match[str]) -> str:
        name, body = block["name"], block["body"]
        declarations = []
        for line in block["locals"].splitlines():
            variable = line.rstrip(";").split()[-1]  # `reg [15:0] name;`, `integer name;`
            hoisted = f"{name}__{variable}"
            if re.search(rf"\b{hoisted}\b", verilog_text):
                return block[0]  # the new name is taken: keep the block as it is
            declarations.append(line.strip().replace(f" {variable};", f" {hoisted};"))
            body = re.sub(rf"\b{variable}\b", hoisted, body)
        return "".join(f"{declaration}\n" for declaration in declarations) + f"{block['header']}\n{body}"

    return _NAMED_BLOCK.sub(unname, verilog_text)


def _icarus_bench_module() -> str:
    """A second top module for Icarus that drives the mmu's clock.

    The clock is the one cocotb's Clock would make (low for the first half period, CLOCK_PERIOD_NS), but toggled by
    Icarus itself: cocotb's clock costs a VPI timer callback and a write each half cycle, an eighth of the run's
    time. (The RAM needs no zeroing here: the exported Verilog starts it as zero itself.)
    """
    return "\n".join([
        "// Generated by cosim/backends/cocotb_sim.py: the clock.",
        "`timescale 1ns/10ps",
        f"module {_ICARUS_BENCH_MODULE};",
        "    reg clk = 1'b0;",
        f"    always #{CLOCK_PERIOD_NS // 2} clk = ~clk;",
        f"    initial force {TOPLEVEL}.clk = clk;",
        "endmodule",
        "",
    ])  # fmt: skip


class _IcarusRunner(Icarus):
    """cocotb's Icarus runner, dumping VCD instead of FST when asked (cocotb always passes vvp `-fst`)."""

    dump_vcd = False

    def _test_command(self) -> list[list[str]]:
        commands = super()._test_command()
        if not self.dump_vcd:
            return commands
        return [["-vcd" if arg == "-fst" else arg for arg in command] for command in commands]


def _runner(simulator: str, *, dump_vcd: bool = False) -> Runner:
    if simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise BackendError("Icarus Verilog is not installed (no `iverilog` on PATH): apt-get install iverilog")
        runner = build.cocotb_runner(simulator, _IcarusRunner)
        runner.dump_vcd = dump_vcd
        return runner
    with build.tool_environment(simulator):
        return build.cocotb_runner(simulator)


# -- the simulator's side -----------------------------------------------------------------------------------------


def _rebuild_exception(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    """An exception of `cls` with `args` and attributes `state`, made without calling its __init__."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class _OutcomePickler(pickle.Pickler):
    """Pickles exceptions by class, args and attributes: `PageFault(addr, error_code)` and other exceptions whose
    __init__ does not take their own args survive the trip, which plain pickling does not allow."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException):
            return _rebuild_exception, (type(obj), obj.args, dict(obj.__dict__))
        return NotImplemented


def _write_outcome(path: str, kind: str, payload: Any, remote_traceback: str = "") -> None:
    with open(path, "wb") as handle:
        _OutcomePickler(handle).dump((kind, payload, remote_traceback))


class _SwitchingTransactor:
    """The firmware's backend inside its greenlet: each transact switches to the test coroutine and back."""

    def __init__(self, test: greenlet) -> None:
        self._test = test

    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        return self._test.switch((op, addr, size, wdata, user, fetch))


async def run_firmware(
    driver: MmuDriver, program: str, args: dict[str, Any], trace: bool, spool: ArrowSpool | None = None
) -> tuple[Any, ...]:  # fmt: skip
    """Run firmware `program` through `driver` (reset, ready for its first request), streaming its events into
    `spool` when given; return what cosim.program.execute returns: (value, ops, spans, wall_s)."""
    function = resolve_program(program)
    test = greenlet.getcurrent()
    drain = driver.drain_batch if spool is not None else None
    firmware = greenlet(lambda: execute(function, _SwitchingTransactor(test), args, trace, drain=drain, sink=spool))
    outcome = firmware.switch()
    while not firmware.dead:
        outcome = firmware.switch(await driver.transact(*outcome))
    driver.idle()
    return outcome


@cocotb.test()
async def run_job(dut: Any) -> None:
    """Run the job named by $MMUCOSIM_JOB on the design and leave its outcome where the job says."""
    job: Job = pickle.loads(Path(os.environ[JOB_ENV]).read_bytes())
    try:
        if job.config.memory == "axi":  # the RAM outside the mmu: zeroed, as the bram starts
            from cosim.backends.axi_ram import attach_axi_ram

            attach_axi_ram(dut, job.config)
        driver = MmuDriver(dut, trace=job.trace)
        await driver.reset(clock_in_design=job.simulator == "icarus")
        spool = ArrowSpool(Path(job.spool_path)) if job.spool_path else None
        value, ops, spans, wall_s = await run_firmware(driver, job.program, job.args, job.trace, spool)
        if spool is not None:
            spool.close()
            result = RunResult(value, [], [], job.backend, job.config, wall_s, ops, spans)
        else:
            result = RunResult(value, driver.events, spans, job.backend, job.config, wall_s, ops)
    except Exception as exc:
        _write_outcome(job.outcome_path, "error", exc, traceback.format_exc())
        return
    _write_outcome(job.outcome_path, "ok", result)
