"""The `myhdl` backend: MyHDL's own simulator running `hdl.mmu`, stepped from the firmware's synchronous calls.

MyHDL simulates generators inside `Simulation.run()`, which does not return between operations, while the firmware
calls `transact` and expects an answer. So the simulation runs in its own greenlet: a driver generator inside it
switches back to the firmware with each response and receives the next request, one switch each way per operation,
no threads. The driver also owns the clock, so every cycle costs two scheduler steps and nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from greenlet import greenlet
from myhdl import StopSimulation, block, delay, instance, traceSignals
from myhdl._simulator import _signals as myhdl_signals

from cosim.backends import check_memory, check_waves
from cosim.backends.base import Backend, BackendError
from cosim.backends.handshake import EVENT_PORTS, MAX_OP_CYCLES, RESET_CYCLES, hdl_event
from hdl.protocol import AccessEvent, MmuConfig

Request = tuple[int, int, int, int, bool, bool]  # the arguments of transact
Response = tuple[int, int, int]


class MyhdlBackend(Backend):
    """The MMU as a MyHDL model in this process (MyHDL allows one running simulation per process)."""

    name = "myhdl"
    _open: ClassVar[MyhdlBackend | None] = None

    def __init__(
        self, config: MmuConfig, *, trace: bool = False, waves: Path | None = None, ram_model: Any = None
    ) -> None:
        """`ram_model` is the RAM block: by default hdl.sim_ram (a dict, fast to build); tests of the RAM itself
        pass hdl.ram, the synthesizable one."""
        super().__init__(config, trace=trace, waves=waves)
        check_memory(self.name, config)  # the bram only: nothing here answers an AXI port
        if waves is not None:
            check_waves(self.name, waves)
        if MyhdlBackend._open is not None:
            raise BackendError("MyHDL runs one simulation per process: close the open myhdl backend first")
        from hdl.interfaces import top_ports
        from hdl.mmu import mmu
        from hdl.sim_ram import sim_ram

        self._closed = False
        first_signal = len(myhdl_signals)
        self._ports = top_ports()
        self._events: list[AccessEvent] = []
        self._seq = 0
        self._bench = _bench(mmu, ram_model or sim_ram, self._ports, config, self)
        self._own_signals = myhdl_signals[first_signal:]
        if waves is not None:
            waves.parent.mkdir(parents=True, exist_ok=True)
            _trace_to(self._bench, waves)
        self._simulation = greenlet(self._simulate)
        MyhdlBackend._open = self
        try:
            self._simulation.switch()  # reset, then wait for the first request
        except BaseException:
            self.close()
            raise

    def _simulate(self) -> None:
        try:
            self._bench.run_sim(quiet=1)
        except BackendError:
            raise
        except Exception as exc:  # a MyHDL error, or a Python error in a block: the simulator failed
            raise BackendError(f"the MyHDL simulation failed: {type(exc).__name__}: {exc}") from exc

    def serve(self, response: Response | None) -> Request | None:
        """Called by the driver inside the simulation: hand `response` to the firmware, get its next request."""
        return self._simulation.parent.switch(response)

    def record(self, request: Request, response: Response, ev: tuple[int, ...]) -> None:
        """Keep the access event of one operation (when tracing)."""
        op, addr, size, wdata, _user, _fetch = request
        rdata, fault, errcode = response
        self._events.append(hdl_event(self._seq, op, addr, size, wdata, rdata, fault, errcode, ev))

    def transact(
        self, op: int, addr: int, size: int = 3, wdata: int = 0, user: bool = False, fetch: bool = False
    ) -> tuple[int, int, int]:
        if self._simulation.dead:
            raise BackendError("the myhdl simulation has ended")
        response = self._simulation.switch((op, addr, size, wdata, user, fetch))
        self._seq += 1
        return response

    def drain_events(self) -> list[AccessEvent]:
        events, self._events = self._events, []
        return events

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # MyHDL keeps every Signal ever made in one global list and resets them all when a simulation ends: a
        # leak per backend, and every later end slower. Ours are done with, so they leave the list first.
        own = {id(signal) for signal in self._own_signals}
        myhdl_signals[:] = [signal for signal in myhdl_signals if id(signal) not in own]
        self._own_signals = []
        if self._simulation:  # running: the driver stops the simulation, which also closes the VCD file
            self._simulation.switch(None)
        else:
            self._bench.quit_sim()  # never started, or ended by an error
        if MyhdlBackend._open is self:
            MyhdlBackend._open = None


def _check_hung(cycles: int, request: Request) -> None:
    """A BackendError when the design has spent too many cycles on `request` without answering it."""
    if cycles >= MAX_OP_CYCLES:
        raise BackendError(
            f"the design did not answer op {request[0]} at {request[1]:#x} within {MAX_OP_CYCLES} cycles"
        )


def _trace_to(bench: Any, waves: Path) -> None:
    """Make `bench` write its VCD to `waves` (MyHDL's tracer is configured through global attributes)."""
    saved = {name: getattr(traceSignals, name) for name in ("directory", "filename", "tracebackup", "tracelists")}
    try:
        bench.config_sim(
            trace=True, directory=str(waves.parent), filename=waves.stem, tracebackup=False, tracelists=False
        )  # the RAM's words would dwarf everything else
    finally:
        for name, value in saved.items():
            setattr(traceSignals, name, value)


@block
def _bench(mmu: Any, ram_model: Any, ports: dict[str, Any], config: MmuConfig, backend: MyhdlBackend):
    """The mmu and the one MyHDL driver of its handshake (cosim.backends.handshake): it clocks the design and turns
    each request from `backend` into port activity."""
    dut = mmu(config=config, ram_model=ram_model, **ports)
    clk, rst, req_valid, req_ready, resp_valid = (
        ports[n] for n in ("clk", "rst", "req_valid", "req_ready", "resp_valid")
    )
    request_ports = [ports[n] for n in ("req_op", "req_addr", "req_size", "req_wdata", "req_user", "req_fetch")]
    resp_rdata, resp_fault, resp_errcode = (ports[n] for n in ("resp_rdata", "resp_fault", "resp_errcode"))
    event_ports = [ports[n] for n in EVENT_PORTS]
    trace = backend.trace

    @instance
    def driver():
        # One scheduler time step per clock edge and nothing else; inputs change with the falling edge.
        half_period = delay(1)
        rst.next = True
        for _ in range(RESET_CYCLES):
            clk.next = False
            yield half_period
            clk.next = True
            yield half_period
        rst.next = False
        response = None
        presented: list[int | bool | None] = [None] * len(request_ports)  # a port keeps its value until changed
        while True:
            request = backend.serve(response)
            if request is None:
                raise StopSimulation("closed")
            for i, (port, value) in enumerate(zip(request_ports, request, strict=True)):
                if presented[i] != value:
                    port.next = presented[i] = value
            req_valid.next = True
            clk.next = False
            yield half_period
            cycles = 0
            while True:  # hold the request until a rising edge samples req_ready
                accepted = bool(req_ready.val)
                clk.next = True
                yield half_period
                cycles += 1
                if accepted:
                    break
                _check_hung(cycles, request)
                clk.next = False
                yield half_period
            req_valid.next = False
            while True:  # the response comes with a rising edge, at the earliest the one after the accepting edge
                clk.next = False
                yield half_period
                clk.next = True
                yield half_period
                cycles += 1
                if resp_valid.val:
                    break
                _check_hung(cycles, request)
            response = (int(resp_rdata.val), int(resp_fault.val), int(resp_errcode.val))
            if trace:
                backend.record(request, response, tuple(int(port.val) for port in event_ports))

    return dut, driver
