"""Run one firmware program on any backend and collect what it did: its value, access events and context spans.

A program is named "module:function" and called as `function(cpu, **args)` with a `firmware.cpu.Cpu`. The three
in-process backends run it right here; the cocotb backends run it inside their simulator process
(cosim.cocotb_backend) and hand the same `RunResult` back through a pickle. Either way a `CpuFault` that escapes
the program is the run's *result*, while a tool or simulator failure is a `BackendError`.
"""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosim.backend import BACKENDS, IN_PROCESS_BACKENDS, BackendError, open_backend
from firmware.cpu import Cpu, CpuFault, Transactor
from hdl.protocol import PORTS_OUT, AccessEvent, MmuConfig, Op

Program = Callable[..., Any]

# -- How every HDL backend drives the `mmu` ports, so that their events agree cycle for cycle ------------------
# Inputs change only while clk is low. Reset holds rst high for RESET_CYCLES rising edges; rst falls with clk low
# and the first request is presented at once. A request is presented in the cycle that carried the previous
# response, held until a rising edge samples req_ready = 1, and req_valid falls in the next low phase. The Verilator
# and cocotb drivers read req_ready before their own writes settle, so they rely on the mmu deriving it from
# registers only (hdl/mmu.py: state IDLE or RESP), not combinationally from req_*.

RESET_CYCLES = 2
MAX_OP_CYCLES = 1_000_000  # a design that has not answered one operation after this many cycles is hung
EVENT_PORTS = tuple(name for name in PORTS_OUT if name.startswith("ev_"))  # the order hdl_event takes them in


def hdl_event(
    seq: int, op: int, addr: int, size_log2: int, wdata: int, rdata: int, fault: int, errcode: int,
    ev: tuple[int, ...],
) -> AccessEvent:  # fmt: skip
    """The AccessEvent of one operation from its request, its response and the values of EVENT_PORTS.

    cosim/verilator_shim.cpp builds the same record in C++.
    """
    cycle, paddr, tlb_hit, tlb_miss, evict, evict_vpn, walk_levels, walk_cycles, pwc_hits, ad_writes = ev
    memory = op in (Op.LOAD, Op.STORE)
    if op == Op.STORE:
        data = wdata & ((1 << (8 << size_log2)) - 1)
    elif op == Op.CSR_WRITE:
        data = int(wdata)
    elif op in (Op.LOAD, Op.CSR_READ):
        data = rdata
    else:
        data = 0
    return AccessEvent(
        seq, cycle, int(op), int(addr), paddr, 1 << size_log2 if memory else 0, data, bool(tlb_hit), bool(tlb_miss),
        evict_vpn if evict else -1, walk_levels, walk_cycles, pwc_hits, ad_writes, fault, errcode,
    )  # fmt: skip


class ProgramError(ValueError):
    """The program name does not lead to a callable: not "module:function", or no such module or function."""


@dataclass(slots=True)
class Span:
    """A named firmware operation: it issued the operations with start_seq <= seq < end_seq."""

    label: str
    depth: int  # 0 for outermost
    start_seq: int
    end_seq: int


ProgressCallback = Callable[[str, int, int], None]  # (label, depth, seq) of each context as it opens


class ContextLog:
    """Records the Cpu's `context()` nesting as Spans, in the order they opened (a ContextListener)."""

    def __init__(self, on_enter: ProgressCallback | None = None) -> None:
        self.spans: list[Span] = []
        self._open: list[int] = []  # indices into spans of the contexts not yet exited
        self._on_enter = on_enter

    def enter(self, label: str, seq: int) -> None:
        self._open.append(len(self.spans))
        self.spans.append(Span(label, len(self._open) - 1, seq, seq))
        if self._on_enter is not None:
            self._on_enter(label, len(self._open) - 1, seq)

    def exit(self, seq: int) -> None:
        self.spans[self._open.pop()].end_seq = seq


@dataclass
class RunResult:
    """What one run of a program produced."""

    value: Any  # the program's return value, or the CpuFault that ended it
    events: list[AccessEvent] = field(repr=False)  # empty unless traced
    contexts: list[Span] = field(repr=False)
    backend: str
    config: MmuConfig
    wall_s: float  # the program's run time, without building or starting the simulator
    ops: int  # protocol operations issued

    @property
    def fault(self) -> CpuFault | None:
        """The fault that ended the program, if one did."""
        return self.value if isinstance(self.value, CpuFault) else None


def resolve_program(program: str) -> Program:
    """The function named by "module:function"."""
    module_name, sep, function_name = program.partition(":")
    if not sep or not module_name or not function_name:
        raise ProgramError(f"a program is named 'module:function', got {program!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProgramError(f"cannot import the module of program {program!r}: {exc}") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ProgramError(f"module {module_name!r} has no function {function_name!r}")
    return function


def execute(
    function: Program,
    transactor: Transactor,
    args: dict[str, Any],
    trace: bool,
    progress: ProgressCallback | None = None,
) -> tuple[Any, int, list[Span], float]:
    """Call `function(cpu, **args)` on a Cpu over `transactor`: (value or CpuFault, ops, spans, seconds).

    Spans are recorded only when tracing: nothing reads them otherwise, and they cost an untraced run half its speed.
    """
    log = ContextLog(progress)
    cpu = Cpu(transactor, log if trace else None)
    thresholds = gc.get_threshold()
    if trace:  # millions of event tuples, none in a cycle: the collector would rescan them again and again
        gc.set_threshold(200_000, *thresholds[1:])
    start = time.perf_counter()
    try:
        value = function(cpu, **args)
    except CpuFault as fault:
        value = fault
    finally:
        gc.set_threshold(*thresholds)
    return value, cpu.ops, log.spans, time.perf_counter() - start


def run_program(
    program: str,
    backend: str,
    config: MmuConfig | None = None,
    *,
    args: dict[str, Any] | None = None,
    trace: bool = False,
    waves: Path | None = None,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run `program` on `backend`, built for `config` (default MmuConfig()), and return what it did.

    `progress`, for in-process backends when tracing, hears of every firmware context as it opens (a live display);
    the cocotb backends run the firmware in the simulator's process and do not call it.
    """
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    config = config or MmuConfig()
    args = args or {}
    function = resolve_program(program)
    if backend not in IN_PROCESS_BACKENDS:
        from cosim.cocotb_backend import run_in_simulator

        return run_in_simulator(program, backend, config, args=args, trace=trace, waves=waves)
    with open_backend(backend, config, trace=trace, waves=waves) as sim:
        value, ops, spans, wall_s = execute(function, sim, args, trace, progress)
        events = sim.drain_events()
    return RunResult(value, events, spans, backend, config, wall_s, ops)
