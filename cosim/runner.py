"""Run one firmware program on any backend and collect what it did: its value, access events and context spans.

The in-process backends (`reference`, `myhdl`, `verilator`) run the program right here; the cocotb backends run it
inside their simulator process and hand the same `RunResult` back. Either way a `CpuFault` that escapes the program
is the run's *result*, while a tool or simulator failure is a `BackendError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cosim.backends import backend_info, check_memory
from cosim.backends.base import check_simulation_limits
from cosim.program import ProgressCallback, RunResult, execute, resolve_program
from cosim.stream import EventSink, SpanCounts
from hdl.protocol import MmuConfig


def run_program(
    program: str,
    backend: str,
    config: MmuConfig | None = None,
    *,
    args: dict[str, Any] | None = None,
    trace: bool = False,
    waves: Path | None = None,
    progress: ProgressCallback | None = None,
    sink: EventSink | None = None,
) -> RunResult:
    """Run `program` on `backend`, built for `config` (default MmuConfig()), and return what it did.

    `progress`, for in-process backends when tracing, hears of every firmware context as it opens (a live display);
    the cocotb backends run the firmware in the simulator's process and do not call it.

    `sink` (with `trace`) streams the run: its events go to `sink.write` in batches of about
    cosim.stream.BATCH_EVENTS, tagged with their contexts, as the run produces them (for the cocotb backends, once
    the simulator has written them all to a file). The result then has no events or context spans, only
    `spans`, their counts; a sink's exception stops the run.
    """
    info = backend_info(backend)
    config = config or MmuConfig()
    config.validate()
    check_simulation_limits(config)
    check_memory(backend, config)
    args = args or {}
    function = resolve_program(program)
    if sink is not None and not trace:
        raise ValueError("a sink receives the events of a traced run: pass trace=True")
    if not info.in_process:
        return info.load()(program, backend, config, args=args, trace=trace, waves=waves, sink=sink)
    with info.load()(config, trace=trace, waves=waves) as sim:
        drain = sim.drain_batch if sink is not None else None
        value, ops, spans, wall_s = execute(function, sim, args, trace, progress, drain=drain, sink=sink)
        if isinstance(spans, SpanCounts):
            return RunResult(value, [], [], backend, config, wall_s, ops, spans)
        events = sim.drain_events()
    return RunResult(value, events, spans, backend, config, wall_s, ops)
