"""Shared testbench machinery for the cocotb tests of the MMU's blocks (tlb, pwc, page_walker, csr,
memory_controller) and of the whole `mmu` (driven by cosim.backends.cocotb_driver): conversion and simulator builds
(cached by cosim.toolchain.build), and the per-cycle discipline the block tests follow on both simulators.

A block test is an *environment*: a synchronous Python model of everything around the block (the commands it is
given, the memory it talks to) that also predicts the block's outputs. Each cycle the driver asks the environment
for the inputs (`drive`), lets them settle, hands it the outputs (`sample`, which asserts them against the model),
and clocks. The same environment runs on the MyHDL simulation of the block (`run_myhdl`) and on its converted
Verilog under cocotb (`run_cocotb`), so the model's assertions check the source and its conversion alike.

Directory note: tests/cocotb has no __init__.py on purpose. As a package it would be imported as `cocotb` (pytest
puts tests/ on sys.path for conftest.py) and shadow the real cocotb.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

from myhdl import ResetSignal, Signal, SignalType, StopSimulation, block, delay, instance, intbv

from cosim.backends.cocotb_driver import CLOCK_PERIOD_NS, read_value
from cosim.backends.cocotb_sim import SIMULATORS as COCOTB_SIMULATORS
from cosim.backends.handshake import RESET_CYCLES
from cosim.toolchain import build
from hdl.interfaces import (
    MemPort,
    MemResponse,
    PwcInsert,
    PwcLookup,
    TlbLookup,
    TlbUpdate,
    WalkResult,
    word_addr_width,
)
from hdl.protocol import (
    DATA_WIDTH,
    DEFAULT_MAXPHYADDR,
    ERRCODE_WIDTH,
    FAULT_WIDTH,
    OP_WIDTH,
    PORTS_OUT,
    VADDR_WIDTH,
    MmuConfig,
    frame_width,
)

SIMULATORS = tuple(COCOTB_SIMULATORS.values())
PARAMS_ENV = "MMUCOSIM_TB"  # JSON: {"params": ..., "trace_dir": ...} for the cocotb module inside the simulator
BLOCK_RUNS = build.BUILD_ROOT / "blocks" / "runs"
TESTS_DIR = Path(__file__).resolve().parent
# The testbenches run a few thousand cycles: compiling without optimisation saves most of the build time.
_BUILD_ARGS = {
    "verilator": ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0"],
    "icarus": [],
}


# -- the blocks and their ports ---------------------------------------------------------------------------------


def _signal(width: int) -> SignalType:
    return Signal(bool(0)) if width == 1 else Signal(intbv(0)[width:])


def _block_ports(name: str, params: dict[str, Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The MyHDL block function of `name` and the keyword arguments (Signals, interfaces, parameters) for it."""
    if name == "tlb":
        from hdl.tlb import tlb

        frame_bits = frame_width(params.get("maxphyaddr", DEFAULT_MAXPHYADDR))
        return tlb, {"lookup": TlbLookup(frame_bits), "update": TlbUpdate(frame_bits), "entries": params["entries"],
                     "ways": params["ways"], "policy": params["policy"]}
    if name == "pwc":
        from hdl.pwc import pwc

        frame_bits = frame_width(params.get("maxphyaddr", DEFAULT_MAXPHYADDR))
        return pwc, {"lookup": PwcLookup(frame_bits), "insert": PwcInsert(frame_bits), "flush": _signal(1),
                     "entries": params["entries"]}
    if name == "csr":
        from hdl.csr import csr

        widths = {"accept": 1, "next_addr": VADDR_WIDTH, "next_user": 1, "next_csr": 1, "in_lookup": 1,
                  "op": OP_WIDTH, "addr": VADDR_WIDTH, "wdata": DATA_WIDTH,
                  "rdata": DATA_WIDTH, "known": 1, "writable": 1, "names_cr0": 1, "names_cr3": 1, "paging": 1,
                  "cr3": DATA_WIDTH,
                  "fault_addr": VADDR_WIDTH,
                  "event_valid": 1, "event_fault": FAULT_WIDTH, "event_errcode": ERRCODE_WIDTH, "event_flush": 1,
                  "cycles": PORTS_OUT["ev_cycle"]}
        widths |= {f"event_{port}": PORTS_OUT[f"ev_{port}"] for port in
                   ("tlb_hit", "tlb_miss", "evict", "walk_levels", "walk_cycles", "pwc_hits", "ad_writes")}
        settings = {key: value for key, value in params.items() if key != "seed"}
        # the policy as a plain int, not the IntEnum: see cosim.toolchain.export
        config = MmuConfig(**settings | {"tlb_policy": int(settings.get("tlb_policy", 0))})
        return csr, {**{port: _signal(width) for port, width in widths.items()}, "config": config}
    config = MmuConfig(mem_bytes=params.get("mem_bytes", 1 << 16), mem_latency=params.get("mem_latency", 1),
                       maxphyaddr=params.get("maxphyaddr", DEFAULT_MAXPHYADDR),
                       tlb_policy=0)  # a plain int, not the IntEnum: see cosim.toolchain.export
    words = word_addr_width(config.mem_bytes)
    if name == "page_walker":
        from hdl.page_walker import page_walker

        frame_bits = frame_width(config.maxphyaddr)
        widths = {"start": 1, "vaddr": 64, "is_store": 1, "is_user": 1, "is_fetch": 1, "cr3": 64}
        kwargs = {port: _signal(width) for port, width in widths.items()}
        return page_walker, {**kwargs, "pwc": PwcLookup(frame_bits), "pwc_insert": PwcInsert(frame_bits),
                             "mem": MemPort(words), "mem_resp": MemResponse(), "result": WalkResult(frame_bits),
                             "config": config}
    if name == "memory_controller":
        from hdl.memory_controller import memory_controller

        return memory_controller, {"walk": MemPort(words), "data": MemPort(words), "resp": MemResponse(),
                                   "config": config, "ram_words": params["ram_words"]}
    raise ValueError(f"no block {name!r}")


def _flatten(kwargs: dict[str, Any]) -> dict[str, SignalType]:
    """The Signals of `kwargs` under the names MyHDL gives them in Verilog: a Signal by its name, a bundle's by
    `<argument>_<attribute>` (`mem` . `valid` -> `mem_valid`)."""
    flat: dict[str, SignalType] = {}
    for name, value in kwargs.items():
        if isinstance(value, SignalType):
            flat[name] = value
        elif hasattr(value, "__dict__"):
            flat.update({f"{name}_{attr}": sig for attr, sig in vars(value).items() if isinstance(sig, SignalType)})
    return flat


@dataclasses.dataclass(frozen=True)
class BlockDesign:
    """One block at one point of its parameter space."""

    name: str
    params: dict[str, Any]

    @property
    def tag(self) -> str:
        design = sorted((key, value) for key, value in self.params.items() if key != "seed")
        return self.name + "-" + "_".join(f"{key}{value}" for key, value in design)

    def instantiate(self) -> tuple[Callable[..., Any], dict[str, Any], dict[str, SignalType]]:
        """The block function, its arguments (clock and reset first) and all its Signals by Verilog name.

        The caller makes the instance itself: MyHDL wants a subblock created in its parent @block's own body.
        """
        function, kwargs = _block_ports(self.name, self.params)
        kwargs = {"clk": Signal(bool(0)), "rst": ResetSignal(0, active=1, isasync=False), **kwargs}
        return function, kwargs, _flatten(kwargs)


def convert_block(design: BlockDesign) -> Path:
    """The Verilog of `design` (build/blocks/<tag>-<key>/<block>.v), converted by MyHDL unless cached.

    The conversion runs in a fresh interpreter (`python tb.py BLOCK PARAMS`): after a conversion, MyHDL's
    process-wide state made later simulations and conversions in the same process misbehave (wrong outputs from
    the first cycles, "referenced before assignment" errors), and cosim.toolchain.export isolates its conversions
    the same way.
    """
    artefact = f"{design.name}.v"

    def make(directory: Path) -> None:
        done = subprocess.run([sys.executable, __file__, design.name, json.dumps(design.params)],
                              capture_output=True, text=True, check=False, cwd=TESTS_DIR.parents[1])
        if done.returncode != 0:
            raise RuntimeError(f"MyHDL could not convert {design.tag}:\n{done.stderr.strip()}")
        (directory / artefact).write_text(re.sub(r"^// Date:.*\n", "", done.stdout, flags=re.M))

    return build.cached("blocks", design.tag, [build.hdl_digest(), design.tag], artefact, make) / artefact


def _convert_here(design: BlockDesign) -> str:
    """The conversion proper, in the child process of convert_block."""
    function, kwargs, _ = design.instantiate()
    instance_ = function(**kwargs)
    with tempfile.TemporaryDirectory(prefix="block_") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MyHDL warns about every constant-driven signal
        instance_.convert(hdl="Verilog", name=design.name, path=tmp, testbench=False)
        return (Path(tmp) / f"{design.name}.v").read_text()


# -- building and running under cocotb ------------------------------------------------------------------------------


def run_cocotb_module(
    simulator: str, sources: dict[str, str], toplevel: str, build_name: str, test_module: str, params: dict[str, Any],
    extra_args: tuple[str, ...] = (),
) -> Path:  # fmt: skip
    """Run every cocotb test of `test_module` on the Verilog `sources` (file name -> text); return the directory of
    the traces they wrote.

    Raises AssertionError naming the failed cocotb tests and their messages.
    """

    build_args = [*_BUILD_ARGS[simulator], *extra_args]
    build_dir = build.cocotb_simulation(simulator, build_name, sources, toplevel, build_args, kind="blocks")
    build.prune_runs(BLOCK_RUNS)
    BLOCK_RUNS.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{test_module}-{simulator}-", dir=BLOCK_RUNS))
    results = run_dir / "results.xml"
    # cocotb's runner exits when a test fails; the results file says which
    with build.tool_environment(simulator), suppress(SystemExit):
        build.cocotb_runner(simulator).test(
            test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", build_dir=build_dir,
            test_dir=run_dir, extra_env={PARAMS_ENV: json.dumps({"params": params, "trace_dir": str(run_dir)})},
            results_xml=str(results), log_file=run_dir / "sim.log",
        )  # fmt: skip
    failures = _failures(results, run_dir / "sim.log")
    if failures:
        raise AssertionError(f"cocotb tests of {test_module} failed on {simulator}:\n" + "\n".join(failures))
    return run_dir


def _failures(results: Path, log: Path) -> list[str]:
    if not results.exists():
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else ["(no log)"]
        return ["the simulator wrote no results:", *tail]
    failed = []
    for case in ElementTree.parse(results).iter("testcase"):
        for failure in case.iter("failure"):
            failed.append(f"  {case.get('name')}: {failure.get('message', '')}")
    return failed


def matrix(points: list[Any], name: Callable[[Any], str], verilator: tuple[int, ...]) -> list[Any]:
    """pytest parameters (simulator, point): every point on Icarus, which builds in seconds, and the points at
    indices `verilator` on Verilator too, whose builds take most of the cocotb tests' time."""
    import pytest

    return [pytest.param(simulator, point, id=f"{name(point)}-{simulator}")
            for index, point in enumerate(points) for simulator in SIMULATORS
            if simulator == "icarus" or index in verilator]


@dataclasses.dataclass
class EventRun:
    """A run's events (and value) as cosim.analysis.lockstep compares them, for runs made without the runner."""

    backend: str
    events: list[Any]
    value: Any = None
    contexts: list[Any] = dataclasses.field(default_factory=list)


def job() -> dict[str, Any]:
    """Inside the simulator: the parameters and trace directory the pytest runner passed."""
    return json.loads(os.environ[PARAMS_ENV])


def save_trace(name: str, trace: list[Any]) -> None:
    """Inside the simulator: leave the trace of scenario `name` for the pytest runner (tests/cocotb/test_mmu.py)."""
    (Path(job()["trace_dir"]) / f"{name}.json").write_text(json.dumps(trace))


# -- environments and the two drivers -----------------------------------------------------------------------------


class Environment:
    """The world around a block, cycle by cycle (see the module docstring). Subclasses set `outputs`."""

    outputs: tuple[str, ...] = ()
    max_cycles = 20_000

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cycle = 0
        self.done = False

    def drive(self) -> dict[str, int]:
        """The inputs for this cycle (inputs not named keep their values)."""
        raise NotImplementedError

    def sample(self, values: dict[str, int | None]) -> None:
        """The outputs settled under this cycle's inputs (None: X/Z); check them and advance the model."""
        raise NotImplementedError

    def expect(self, what: str, got: int | None, want: int) -> None:
        if got != want:
            shown = "X" if got is None else hex(got)
            raise AssertionError(f"cycle {self.cycle}: {what} = {shown}, expected {want:#x}")

    def gap(self, max_idle: int, probability: float) -> int:
        """Idle cycles before the next command: 0, or 1..max_idle with `probability` (exercises stalls)."""
        return self.rng.randint(1, max_idle) if max_idle and self.rng.random() < probability else 0


class ScriptedEnvironment(Environment):
    """An environment whose inputs come from a script: `cycles`, an iterator of each cycle's inputs, and `_cycle()`,
    the inputs of a cycle that does nothing. It must meet every situation in `required` (the model adds the ones it
    meets to `seen`), so that a scenario that stops exercising what it was written for fails rather than passes."""

    def __init__(self, seed: int, required: set[str]) -> None:
        super().__init__(seed)
        self.required = required
        self.seen: set[str] = set()
        self.inputs: dict[str, int] = {}  # this cycle's
        self.cycles: Iterator[dict[str, int]] = iter(())

    def _cycle(self) -> dict[str, int]:
        raise NotImplementedError

    def drive(self) -> dict[str, int]:
        inputs = next(self.cycles, None)
        if inputs is None:  # the scenario is over: one idle cycle more
            self.done = True
            missing = self.required - self.seen
            if missing:
                raise AssertionError(f"the scenario never met: {', '.join(sorted(missing))}")
            inputs = self._cycle()
        self.inputs = inputs
        return inputs


def run_myhdl(design: BlockDesign, env: Environment) -> None:
    """Run `env` on the MyHDL simulation of `design` (its model asserts every cycle)."""
    function, kwargs, signals = design.instantiate()
    clk, rst = signals["clk"], signals["rst"]

    @block
    def bench():
        dut = function(**kwargs)

        @instance
        def driver():
            # Inputs change with clk low; outputs are read a quarter period before the rising edge.
            rst.next = True
            for _ in range(RESET_CYCLES):
                yield delay(2)
                clk.next = True
                yield delay(2)
                clk.next = False
            rst.next = False
            while not env.done:
                if env.cycle >= env.max_cycles:
                    raise AssertionError(f"{type(env).__name__} did not finish in {env.max_cycles} cycles")
                for name, value in env.drive().items():
                    signals[name].next = value
                yield delay(1)
                env.sample({name: int(signals[name].val) for name in env.outputs})
                env.cycle += 1
                yield delay(1)
                clk.next = True
                yield delay(2)
                clk.next = False
            raise StopSimulation()

        return dut, driver

    simulation = bench()
    try:
        simulation.run_sim(quiet=1)
    finally:
        simulation.quit_sim()


async def run_cocotb(dut: Any, env: Environment) -> None:
    """Run `env` on the Verilog `dut` with the discipline of run_myhdl."""
    from cocotb.clock import Clock
    from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

    handles = {name: getattr(dut, name) for name in env.outputs}
    dut.rst.value = 1
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=False)
    for _ in range(RESET_CYCLES):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    while not env.done:
        if env.cycle >= env.max_cycles:
            raise AssertionError(f"{type(env).__name__} did not finish in {env.max_cycles} cycles")
        for name, value in env.drive().items():
            getattr(dut, name).value = int(value)
        await ReadOnly()
        env.sample({name: read_value(handle) for name, handle in handles.items()})
        env.cycle += 1
        await FallingEdge(dut.clk)


def check_block(
    design: BlockDesign, simulator: str, test_module: str, scenarios: dict[str, Callable[[dict[str, Any]], Environment]]
) -> None:
    """The pytest half of a block test: run the cocotb module on the converted block, then every scenario on the
    MyHDL block.

    What guards what: on each side the environment's model asserts, in every cycle, every output the contract
    defines in that cycle, so the two runs check the MyHDL source and its Verilog against the contract directly.
    The outputs a model leaves unchecked are the contract's don't-cares (a TLB's frame while it misses, a port's
    data while its valid is low, read data before the first read), and those legitimately differ between the
    sides: the cocotb scenarios share one simulation, so storage that is never reset (RAM words, TLB and PWC
    contents) holds the previous scenario's values there and zeros in MyHDL's fresh run. Comparing the two
    runs' outputs would therefore add nothing the models do not check, and is not done.
    """
    verilog = convert_block(design)
    sources = {verilog.name: verilog.read_text()}
    run_dir = run_cocotb_module(simulator, sources, design.name, design.tag, test_module, design.params)
    for scenario in scenarios.values():
        run_myhdl(design, scenario(design.params))
    shutil.rmtree(run_dir, ignore_errors=True)


def run_mmu_module(simulator: str, config: MmuConfig, test_module: str, params: dict[str, Any]) -> Path:
    """Run the cocotb tests of `test_module` on the `mmu` exported for `config` (see run_cocotb_module)."""
    from cosim.toolchain.export import config_tag, exported_verilog

    verilog_text = exported_verilog(config).read_text()  # its RAM starts as zero on every simulator
    build_name = f"mmu-{config_tag(config)}"
    return run_cocotb_module(simulator, {"mmu.v": verilog_text}, "mmu", build_name, test_module, params)


if __name__ == "__main__":  # the child process of convert_block: block name and parameters in, Verilog out
    sys.stdout.write(_convert_here(BlockDesign(sys.argv[1], json.loads(sys.argv[2]))))
