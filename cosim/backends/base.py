"""The Backend interface: what every simulator of the MMU offers the firmware's `Cpu`.

A backend executes one protocol operation at a time (`transact`) and, when tracing, keeps the `AccessEvent` of each
operation until `drain_events` takes them. In-process backends (`reference`, `myhdl`, `verilator`) are built by
`open_backend`; the cocotb backends own the process they run in, so `cosim.runner` launches them instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

from cosim.stream import Columns, event_columns
from hdl.protocol import AccessEvent, MmuConfig


class BackendError(Exception):
    """A backend cannot be built or started (missing tool, bad configuration); never a fault of the firmware."""


class Backend(ABC):
    """One simulated MMU with its physical RAM, reset and ready for its first request."""

    name: str

    def __init__(self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None) -> None:
        config.validate()
        self.config = config
        self.trace = trace
        self.waves = waves

    @abstractmethod
    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        """Run one operation (see hdl.protocol.Op; `size` is log2 bytes) and return (rdata, fault, errcode).

        This is the hot path: no allocation beyond the tuple, no logging.
        """

    def drain_events(self) -> list[AccessEvent]:
        """The events recorded since the last call, oldest first; empty unless built with trace=True."""
        return []

    def drain_batch(self) -> Columns:
        """`drain_events` as columns (a structured array with AccessEvent's field names), for streamed traces."""
        return event_columns(self.drain_events())

    def close(self) -> None:  # noqa: B027 - optional hook: a pure model has nothing to free
        """Finish the simulation: flush waveforms, free the simulator."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


WAVES_FORMATS = {".vcd": "vcd", ".fst": "fst"}  # waveform file suffix -> trace format of the Verilog simulators


def waves_format(waves: Path | None) -> str | None:
    """The trace format of a waves file, chosen by its suffix; None without waves."""
    if waves is None:
        return None
    if waves.suffix.lower() not in WAVES_FORMATS:
        raise BackendError(f"waves are written as *.vcd or *.fst, not {waves.name}")
    return WAVES_FORMATS[waves.suffix.lower()]
