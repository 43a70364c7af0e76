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
) -> RunResult:
    """Run `program` on `backend`, built for `config` (default MmuConfig()), and return what it did.

    `progress`, for in-process backends when tracing, hears of every firmware context as it opens (a live display);
    the cocotb backends run the firmware in the simulator's process and do not call it.
    """
    info = backend_info(backend)
    config = config or MmuConfig()
    config.validate()
    check_simulation_limits(config)
    check_memory(backend, config)
    args = args or {}
    function = resolve_program(program)
    if not info.in_process:
        return info.load()(program, backend, config, args=args, trace=trace, waves=waves)
    with info.load()(config, trace=trace, waves=waves) as sim:
        value, ops, spans, wall_s = execute(function, sim, args, trace, progress)
        events = sim.drain_events()
    return RunResult(value, events, spans, backend, config, wall_s, ops)
