"""The Backend interface: what every simulator of the MMU offers the firmware's `Cpu`.

A backend executes one protocol operation at a time (`transact`) and, when tracing, keeps the `AccessEvent` of each
operation until `drain_events` takes them. In-process backends (`reference`, `myhdl`, `verilator`) are built by
`open_backend`; the cocotb backends own the process they run in, so `cosim.runner` launches them instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType

from hdl.protocol import AccessEvent, MmuConfig

BACKENDS = ("reference", "myhdl", "verilator", "cocotb-verilator", "cocotb-icarus")
IN_PROCESS_BACKENDS = ("reference", "myhdl", "verilator")
HDL_BACKENDS = ("myhdl", "verilator", "cocotb-verilator", "cocotb-icarus")


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

    def close(self) -> None:  # noqa: B027 - optional hook: a pure model has nothing to free
        """Finish the simulation: flush waveforms, free the simulator."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_backend(
    name: str, config: MmuConfig | None = None, *, trace: bool = False, waves: Path | None = None
) -> Backend:
    """Build the in-process backend `name` for `config`."""
    config = config or MmuConfig()
    if name == "reference":
        from cosim.reference import ReferenceBackend

        return ReferenceBackend(config, trace=trace, waves=waves)
    if name == "myhdl":
        from cosim.myhdl_backend import MyhdlBackend

        return MyhdlBackend(config, trace=trace, waves=waves)
    if name == "verilator":
        from cosim.verilator_backend import VerilatorBackend

        return VerilatorBackend(config, trace=trace, waves=waves)
    if name in BACKENDS:
        raise BackendError(f"{name} runs the firmware inside its simulator: use cosim.runner.run_program")
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
