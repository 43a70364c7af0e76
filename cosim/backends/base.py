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


MAX_RAM_BYTES = 2 << 30
"""The largest physical RAM a backend simulates: Verilator refuses the 4 GiB array ("vector of over 1 billion
bits"), and the reference model allocates the RAM up front."""
MAX_TLB_ENTRIES = 1024
MAX_PWC_ENTRIES = 1024
"""Every lookup compares every entry of a set, in hardware and in each simulated cycle, so build and step costs grow
with the entries: a fully associative 1024-entry TLB took 21 s here to export, Verilate and run the demo; a
million-entry one ran for minutes in MyHDL's conversion alone."""


def check_simulation_limits(config: MmuConfig) -> None:
    """Raise BackendError when `config` is valid hardware (MmuConfig.validate) but beyond what the backends
    simulate (MAX_RAM_BYTES, MAX_TLB_ENTRIES, MAX_PWC_ENTRIES)."""
    for value, limit, what in ((config.mem_bytes, MAX_RAM_BYTES, "mem_bytes"),
                               (config.tlb_entries, MAX_TLB_ENTRIES, "tlb_entries"),
                               (config.pwc_entries, MAX_PWC_ENTRIES, "pwc_entries")):
        if value > limit:
            raise BackendError(f"{what} {value} is more than the backends simulate ({limit}; see "
                               "cosim/backends/base.py for why)")


class Backend(ABC):
    """One simulated MMU with its physical RAM, reset and ready for its first request."""

    name: str

    def __init__(self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None) -> None:
        config.validate()
        check_simulation_limits(config)
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
