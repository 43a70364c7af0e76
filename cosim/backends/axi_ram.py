"""Simulation only: the memory an MMU built with memory "axi" talks to under cocotb — cocotbext-axi's `AxiRam` on the
`m_axi_*` ports, with the knobs its tests turn: random pauses on every channel, and error responses at chosen
addresses.

`attach_axi_ram` is what the cocotb backends call (zeroed RAM of `mem_bytes`, as the bram starts, no pauses, no
errors) and what tests/cocotb/test_axi.py calls with pauses and errors. cocotbext-axi 0.1.28 still calls cocotb 1.x
APIs that cocotb 2 deprecates; its DeprecationWarnings are filtered here, for that package only.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hdl.protocol import AXI_PREFIX, AxiResp, MmuConfig

warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")

from cocotbext.axi import AxiBus, AxiRam  # noqa: E402 - after the filter, which must see its import-time warnings

CHANNELS = ("aw", "w", "b", "ar", "r")


@dataclass(frozen=True)
class ErrorRegion:
    """Bytes [start, end) of the subordinate's address space answer `resp` (SLVERR or DECERR) to `reads` and/or
    `writes`; nothing is read or written there."""

    start: int
    end: int
    resp: AxiResp = AxiResp.SLVERR
    reads: bool = True
    writes: bool = True

    def covers(self, address: int, write: bool) -> bool:
        return self.start <= address < self.end and (self.writes if write else self.reads)


class _ErrorResponse(Exception):
    """Raised by the RAM's access hooks in an error region: cocotbext-axi answers SLVERR for any exception."""

    def __init__(self, resp: AxiResp) -> None:
        super().__init__(resp.name)
        self.resp = resp


def _inject(interface: Any, channel: Any, access_name: str, resp_field: str, regions: Sequence[ErrorRegion],
            write: bool) -> None:  # fmt: skip
    """Make `interface` (the RAM's read or write half) answer the regions' errors: its per-beat access hook raises
    in a region (cocotbext-axi then sends SLVERR), and the response channel's `send` turns that SLVERR into the
    region's code (DECERR)."""
    access, send = getattr(interface, access_name), channel.send
    pending: list[AxiResp] = []

    async def checked_access(address: int, *args: Any) -> Any:
        for region in regions:
            if region.covers(address, write):
                pending.append(region.resp)
                raise _ErrorResponse(region.resp)
        return await access(address, *args)

    async def send_with_code(transaction: Any) -> None:
        if pending:
            setattr(transaction, resp_field, int(pending.pop()))
            pending.clear()
        await send(transaction)

    setattr(interface, access_name, checked_access)
    channel.send = send_with_code


def random_pauses(rng: random.Random, probability: float, max_run: int = 4) -> Iterator[bool]:
    """A pause generator for cocotbext-axi: runs of 1..max_run paused cycles, each run starting with
    `probability`, forever."""
    while True:
        if rng.random() < probability:
            yield from [True] * rng.randint(1, max_run)
        else:
            yield False


def attach_axi_ram(
    dut: Any, config: MmuConfig, *, pause_seed: int | None = None, pause_probability: float = 0.3,
    errors: Sequence[ErrorRegion] | None = None,
) -> AxiRam:  # fmt: skip
    """An AxiRam of `config.mem_bytes` zeroed bytes on the dut's AXI port, reset by its `rst`.

    With `pause_seed`, every channel (AW, W, B, AR, R) pauses at random, each from its own generator. `errors` lists
    the address regions that answer error responses; the RAM consults it at each access, so a caller may change it
    as the simulation runs.
    """
    ram = AxiRam(AxiBus.from_prefix(dut, AXI_PREFIX), dut.clk, dut.rst, size=config.mem_bytes)
    if errors is not None:
        _inject(ram.read_if, ram.read_if.r_channel, "_read", "rresp", errors, write=False)
        _inject(ram.write_if, ram.write_if.b_channel, "_write", "bresp", errors, write=True)
    if pause_seed is not None:
        set_pauses(ram, pause_seed, pause_probability)
    return ram


def channels(ram: AxiRam) -> dict[str, Any]:
    """The RAM's five channel models by AXI name."""
    return {"aw": ram.write_if.aw_channel, "w": ram.write_if.w_channel, "b": ram.write_if.b_channel,
            "ar": ram.read_if.ar_channel, "r": ram.read_if.r_channel}


def set_pauses(ram: AxiRam, seed: int, probability: float) -> None:
    """Random pauses on every channel, each channel from its own generator seeded from `seed`."""
    for index, channel in enumerate(channels(ram).values()):
        channel.set_pause_generator(random_pauses(random.Random(seed * len(CHANNELS) + index), probability))


def clear_pauses(ram: AxiRam) -> None:
    for channel in channels(ram).values():
        channel.clear_pause_generator()
