"""A firmware program and one run of it: what `cosim.runner.run_program` and the cocotb backend's test both execute.

A program is named "module:function" and called as `function(cpu, **args)` with a `firmware.cpu.Cpu` over any
backend's `transact`. A `CpuFault` that escapes the program is the run's *result*; its value, the context spans the
firmware opened and the access events make a `RunResult`. A streamed run (`sink`) hands its events to the sink in
batches as it goes (`cosim.stream`) and keeps only counts of its spans.
"""

from __future__ import annotations

import gc
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cosim.stream import BATCH_EVENTS, BatchPump, Columns, ContextTracker, EventSink, SpanCounts
from firmware.cpu import CheckpointCpu, Cpu, CpuFault, Transactor
from hdl.protocol import AccessEvent, Counter, MmuConfig

Program = Callable[..., Any]


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
    events: list[AccessEvent] = field(repr=False)  # empty unless traced, and when streamed (they went to the sink)
    contexts: list[Span] = field(repr=False)  # the same
    backend: str
    config: MmuConfig
    wall_s: float  # the program's run time, without building or starting the simulator
    ops: int  # protocol operations issued (one event each, when traced)
    spans: SpanCounts | None = field(default=None, repr=False)  # a streamed run's spans, counted

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
    *,
    drain: Callable[[], Columns] | None = None,
    sink: EventSink | None = None,
) -> tuple[Any, int, list[Span] | SpanCounts, float]:
    """Call `function(cpu, **args)` on a Cpu over `transactor`: (value or CpuFault, ops, spans, seconds).

    Spans are recorded only when tracing: nothing reads them otherwise, and they cost an untraced run half its speed.
    With a `sink` (and tracing), every BATCH_EVENTS operations and at the end the events recorded so far are taken
    with `drain` and written to the sink, tagged with their contexts; the spans come back as SpanCounts.
    """
    pump = None
    if sink is not None:
        if not trace or drain is None:
            raise ValueError("a sink needs a traced run and a way to drain its events")
        log: ContextLog | ContextTracker = ContextTracker(progress)
        pump = BatchPump(drain, log, sink)
        cpu: Cpu = CheckpointCpu(transactor, log, interval=BATCH_EVENTS, checkpoint=pump.flush)
    else:
        log = ContextLog(progress)
        cpu = Cpu(transactor, log if trace else None)
    thresholds = gc.get_threshold()
    if trace and pump is None:  # millions of event tuples, none in a cycle: the collector would rescan them
        gc.set_threshold(200_000, *thresholds[1:])
    start = time.perf_counter()
    try:
        value = function(cpu, **args)
    except CpuFault as fault:
        value = fault
    finally:
        gc.set_threshold(*thresholds)
    if pump is not None:
        pump.flush()
    spans = log.counts() if isinstance(log, ContextTracker) else log.spans
    return value, cpu.ops, spans, time.perf_counter() - start


def measured(cpu: Cpu, program: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run `program(cpu, **args)`, timed apart from importing it, then read every performance counter (CYCLES
    first, so that the reads add only their own cycles to it): what `mmucosim bench` and `mmucosim sweep` run, as
    MEASURED_PROGRAM. Importable by name, so that it runs inside the cocotb simulators too; there the CPU time is
    the simulator process's, which runs the simulator too."""
    function = resolve_program(program)
    wall, cpu_time = time.perf_counter(), time.process_time()
    value = function(cpu, **args)
    wall, cpu_time = time.perf_counter() - wall, time.process_time() - cpu_time
    counters = {counter.name.lower(): cpu.read_counter(counter) for counter in Counter}
    return {"value": value, "counters": counters, "wall_s": wall, "cpu_s": cpu_time}


MEASURED_PROGRAM = f"{__name__}:measured"
COUNTER_READS = len(Counter)  # operations `measured` adds after the workload
