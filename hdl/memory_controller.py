"""Synthesizable: the memory controller, which gives the page walker and the data path one RAM port between them.

The MMU serves one request at a time, so the walker and the data path never ask in the same cycle; a fixed
priority (walker first) is all the arbitration needed. A write completes at the edge that samples it; a read's
word is ready `mem_latency` cycles after the request (the RAM reads in one, and `rdata` holds while the
controller counts the rest), which models slower memories without changing the RAM.
"""

from __future__ import annotations

from collections.abc import Callable

from myhdl import Signal, SignalType, always_comb, always_seq, block, intbv

from hdl.interfaces import MemPort, MemResponse
from hdl.protocol import MmuConfig
from hdl.ram import ram


@block
def memory_controller(
    clk: SignalType, rst: SignalType, walk: MemPort, data: MemPort, resp: MemResponse, config: MmuConfig,
    ram_words: int | None = None, ram_model: Callable[..., object] = ram,
):
    """Route `walk` (priority) or `data` to the RAM and report read completion in `resp`.

    `ram_words`, `ram_model`: see hdl.mmu.mmu; by default the RAM holds all of `config.mem_bytes`.
    """
    word_addr_width = len(walk.word_addr)
    latency = config.mem_latency
    single_cycle = latency == 1

    ram_addr = Signal(intbv(0)[word_addr_width:])
    ram_write = Signal(bool(0))
    ram_read = Signal(bool(0))
    ram_byte_enable = Signal(intbv(0)[len(walk.byte_enable):])
    ram_wdata = Signal(intbv(0)[len(walk.wdata):])
    # of the read in flight; 0 when none. At least two bits, as wide as the 2 it is compared with.
    cycles_left = Signal(intbv(0, min=0, max=max(latency + 1, 3)))

    memory = ram_model(clk, ram_addr, ram_write, ram_byte_enable, ram_wdata, ram_read, resp.rdata,
                       words=ram_words or config.mem_bytes // len(walk.byte_enable))

    # Two blocks, split by how often their inputs change: the strobes follow `valid`, which toggles nearly every
    # cycle, while the address and data change once per request; one block would re-assign all five each time.
    @always_comb
    def arbitrate_strobes():
        if walk.valid:
            ram_write.next = walk.write
            ram_read.next = not walk.write
        else:
            ram_write.next = data.valid and data.write
            ram_read.next = data.valid and not data.write

    @always_comb
    def arbitrate_word():
        if walk.valid:
            ram_addr.next = walk.word_addr
            ram_byte_enable.next = walk.byte_enable
            ram_wdata.next = walk.wdata
        else:
            ram_addr.next = data.word_addr
            ram_byte_enable.next = data.byte_enable
            ram_wdata.next = data.wdata

    @always_seq(clk.posedge, reset=rst)
    def count_latency():
        # rvalid is registered with the count (it marks the last cycle: rvalid_next's cycle plus one), so it changes
        # only when a read does.
        if ram_read:
            cycles_left.next = latency
            resp.rvalid.next = single_cycle
        elif cycles_left != 0:
            cycles_left.next = cycles_left - 1
            resp.rvalid.next = cycles_left == 2

    # rvalid_next: with 1-cycle reads the read itself, else the cycle before the last.
    if single_cycle:

        @always_comb
        def announce():
            resp.rvalid_next.next = ram_read

    else:

        @always_comb
        def announce():
            resp.rvalid_next.next = cycles_left == 2

    return memory, arbitrate_strobes, arbitrate_word, count_latency, announce
