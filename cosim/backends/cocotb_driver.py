"""The one cocotb driver of the `mmu`'s request/response handshake, used by the cocotb backends and the testbenches.

It follows cosim.backends.handshake to the cycle, so that back to back it produces the events of the myhdl and
verilator backends. A knob inserts random idle cycles before requests (every handshake then also runs after
stalls, as cocotbext-axi's pause generators do for AXI), and a strict mode reads the ports through cocotb's
`LogicArray`, so that an X or Z shows as None instead of being read as a number.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from cosim.backends.base import BackendError
from cosim.backends.handshake import EVENT_PORTS, MAX_OP_CYCLES, RESET_CYCLES, hdl_event
from cosim.stream import event_columns
from hdl.protocol import AccessEvent

CLOCK_PERIOD_NS = 10
REQUEST_PORTS = ("req_op", "req_addr", "req_size", "req_wdata", "req_user", "req_fetch")  # transact's argument order
RESPONSE_PORTS = ("resp_rdata", "resp_fault", "resp_errcode")
Request = tuple[int, int, int, int, bool, bool]

_NO_DELAY = 3  # cocotb's _GPISetAction.NO_DELAY: the action number an `Immediate` write passes to the GPI
_GPI_INT_BITS = 32  # get_signal_val_long and set_signal_val_int carry a signed 32-bit int


def _fast_reader(port: Any) -> Callable[[], int]:
    """A function returning `port`'s value as an unsigned int, straight from its GPI handle.

    The public `.value` builds a `LogicArray` of one `Logic` per bit that `.to_unsigned()` parses back: most of a
    cocotb backend's time (docs/performance.md). This reads the private `_handle` of cocotb 2.1, which
    pyproject.toml pins; tests/test_lockstep.py catches a change in cocotb.
    """
    handle = port._handle
    if len(port) < _GPI_INT_BITS:
        return handle.get_signal_val_long
    get_binstr = handle.get_signal_val_binstr
    return lambda: int(get_binstr(), 2)


def read_value(port: Any) -> int | None:
    """`port`'s value through cocotb's public API as an unsigned int, or None if any bit is X or Z."""
    value = port.value
    try:
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)  # a 1-bit port holds a Logic
    except ValueError:
        return None


def _strict_reader(port: Any) -> Callable[[], int | None]:
    return lambda: read_value(port)


def _writer(port: Any) -> Callable[[int], None]:
    """A function writing an unsigned int to `port` at once, straight through its GPI handle (what `Immediate`
    does, without cocotb's write scheduling)."""
    handle = port._handle
    width = len(port)
    if width < _GPI_INT_BITS:
        set_int = handle.set_signal_val_int
        return lambda value: set_int(_NO_DELAY, value)
    set_binstr = handle.set_signal_val_binstr
    binary = f"0{width}b"
    return lambda value: set_binstr(_NO_DELAY, format(value, binary))


class MmuDriver:
    """The `mmu` under cocotb: clock, reset, and `transact` for one operation at a time.

    `max_gap` > 0 draws, before each request with `gap_probability`, 1..max_gap idle cycles; with 0 the driver runs
    back to back, exactly as the other backends do. `trace` keeps the AccessEvent of every operation in `events`.
    """

    def __init__(
        self, dut: Any, *, trace: bool = True, strict: bool = False, seed: int = 0, max_gap: int = 0,
        gap_probability: float = 0.5,
    ) -> None:  # fmt: skip
        self.dut = dut
        read = _strict_reader if strict else _fast_reader
        self._request = [_writer(getattr(dut, name)) for name in REQUEST_PORTS]
        self._driven: list[int | None] = [None] * len(REQUEST_PORTS)  # what each request port holds
        self._set_req_valid = _writer(dut.req_valid)
        self._offering = False  # req_valid is held high from one request to the next (see transact)
        self._req_ready, self._resp_valid = _fast_reader(dut.req_ready), _fast_reader(dut.resp_valid)
        self._response = [read(getattr(dut, name)) for name in RESPONSE_PORTS]
        self._event = [read(getattr(dut, name)) for name in EVENT_PORTS]
        self.trace = trace
        self.events: list[AccessEvent] = []  # recorded since the last drain_batch
        self._seq = 0  # operations traced
        self._rng = random.Random(seed)
        self.max_gap, self.gap_probability = max_gap, gap_probability
        self._falling = FallingEdge(dut.clk)
        self._next_cycle = Timer(CLOCK_PERIOD_NS, unit="ns")  # from a falling edge to the next one
        self._hit_latency = Timer(2 * CLOCK_PERIOD_NS, unit="ns")  # request to response of an op without a walk

    async def reset(self, *, clock_in_design: bool = False) -> None:
        """Hold reset for RESET_CYCLES rising edges; start the clock unless the design's bench drives it."""
        self.dut.rst.value = 1
        self.dut.req_valid.value = 0
        self._offering = False
        self._driven = [None] * len(REQUEST_PORTS)
        if not clock_in_design:
            self.dut.clk.value = 0
            Clock(self.dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start(start_high=False)
        rising = RisingEdge(self.dut.clk)
        for _ in range(RESET_CYCLES):
            await rising
        await self._falling
        self.dut.rst.value = 0

    async def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[Any, Any, Any]:
        """Run one operation; called with clk low, in the cycle of the previous response (or right after reset).

        Writes take effect at once (GPI NO_DELAY): nothing in the design reacts to the falling edge, so there is no
        race to avoid by deferring them, and Icarus would pay an extra callback per operation for it.

        req_valid stays high after the request is taken, until `idle`: the mmu takes no request while busy
        (req_ready is low from the accepting edge to the response cycle), and this coroutine offers the next
        request, or calls `idle`, in the response cycle itself. So the fastest operation, two cycles, costs one
        timed wait of exactly two periods instead of two edge waits; any longer one then waits cycle by cycle.
        """
        request = (op, addr, size, wdata, user, fetch)
        if self.max_gap and self._rng.random() < self.gap_probability:
            self.idle()
            for _ in range(self._rng.randint(1, self.max_gap)):
                await self._falling
        ready = self._req_ready()  # req_ready depends on registers only: the value the next rising edge samples
        driven = self._driven
        for index, value in enumerate(request):  # writes cost more than compares: write only what changed
            if driven[index] != value:
                self._request[index](int(value))
                driven[index] = value
        if not self._offering:
            self._set_req_valid(1)
            self._offering = True
        cycles = 1
        while not ready:
            self._check_alive(request, cycles)
            await self._next_cycle
            ready = self._req_ready()
            cycles += 1
        await self._hit_latency  # no response comes sooner: the accepting edge, then LOOKUP's edge
        cycles += 1
        while not self._resp_valid():
            self._check_alive(request, cycles)
            await self._next_cycle
            cycles += 1
        rdata, fault, errcode = (read() for read in self._response)
        if self.trace:
            ev = tuple(read() for read in self._event)
            self.events.append(hdl_event(self._seq, op, addr, size, wdata, rdata, fault, errcode, ev))
            self._seq += 1
        return rdata, fault, errcode

    def drain_batch(self) -> np.ndarray:
        """The events recorded since the last call, as columns (see cosim.stream), and forget them."""
        events, self.events = self.events, []
        return event_columns(events)

    def idle(self) -> None:
        """Stop offering a request (in a response cycle, so before the mmu would take the last one again)."""
        self._set_req_valid(0)
        self._offering = False

    @staticmethod
    def _check_alive(request: Request, cycles: int) -> None:
        if cycles > MAX_OP_CYCLES:
            raise BackendError(
                f"the design did not answer op {request[0]} at {request[1]:#x} within {MAX_OP_CYCLES} cycles"
            )
