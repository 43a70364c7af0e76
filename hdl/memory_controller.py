"""Synthesizable: the memory controller, which gives the page walker and the data path one RAM port between them.

The MMU serves one request at a time, so the walker and the data path never ask in the same cycle; a fixed
priority (walker first) is all the arbitration needed. The RAM sits between two registers, so that no path runs
from the MMU's decisions into the block RAM or from the block RAM's output into them (on the ECP5-85F the 128
DP16KD of 256 KiB span the die, and one of them takes 5.6 ns from its clock to its data): the request is
registered on its way in (a write lands at the edge after the one that samples the request), and the word read
is registered on its way out. A read's word is ready `mem_latency + 2` cycles after the request (the RAM reads in
one, and the controller counts the rest while the word holds), which models slower memories without changing the
RAM.
"""

from __future__ import annotations

from collections.abc import Callable

from myhdl import Signal, SignalType, always, always_comb, always_seq, block, intbv

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
    latency = config.bram_read_cycles

    # The request this cycle, and registered: what the RAM sees in the next.
    request_addr = Signal(intbv(0)[word_addr_width:])
    request_write = Signal(bool(0))
    request_read = Signal(bool(0))
    request_byte_enable = Signal(intbv(0)[len(walk.byte_enable):])
    request_wdata = Signal(intbv(0)[len(walk.wdata):])
    ram_addr = Signal(intbv(0)[word_addr_width:])
    ram_write = Signal(bool(0))
    ram_read = Signal(bool(0))
    ram_byte_enable = Signal(intbv(0)[len(walk.byte_enable):])
    ram_wdata = Signal(intbv(0)[len(walk.wdata):])
    ram_rdata = Signal(intbv(0)[len(resp.rdata):])  # the block RAM's own output, registered into resp.rdata
    word_read = Signal(bool(0))  # the RAM read at the last edge: its word is on ram_rdata
    # of the read in flight; 0 when none
    cycles_left = Signal(intbv(0, min=0, max=latency + 1))

    memory = ram_model(clk, ram_addr, ram_write, ram_byte_enable, ram_wdata, ram_read, ram_rdata,
                       words=ram_words or config.mem_bytes // len(walk.byte_enable))

    # Two blocks, split by how often their inputs change: the strobes follow `valid`, which toggles nearly every
    # cycle, while the address and data change once per request; one block would re-assign all five each time.
    @always_comb
    def arbitrate_strobes():
        if walk.valid:
            request_write.next = walk.write
            request_read.next = not walk.write
        else:
            request_write.next = data.valid and data.write
            request_read.next = data.valid and not data.write

    @always_comb
    def arbitrate_word():
        if walk.valid:
            request_addr.next = walk.word_addr
            request_byte_enable.next = walk.byte_enable
            request_wdata.next = walk.wdata
        else:
            request_addr.next = data.word_addr
            request_byte_enable.next = data.byte_enable
            request_wdata.next = data.wdata

    @always_seq(clk.posedge, reset=rst)
    def register_strobes():
        ram_write.next = request_write
        ram_read.next = request_read
        word_read.next = ram_read

    @always(clk.posedge)
    def register_word():
        # In every cycle, not only with a request: an enable would hang the whole word on the request's decision.
        # (Never reset: the strobes alone say whether the RAM acts.)
        ram_addr.next = request_addr
        ram_byte_enable.next = request_byte_enable
        ram_wdata.next = request_wdata
        if word_read:
            resp.rdata.next = ram_rdata

    @always_seq(clk.posedge, reset=rst)
    def count_latency():
        # rvalid is registered with the count (it marks the last cycle: rvalid_next's cycle plus one), so it changes
        # only when a read does.
        if request_read:
            cycles_left.next = latency
        elif cycles_left != 0:
            cycles_left.next = cycles_left - 1
            resp.rvalid.next = cycles_left == 2

    @always_comb
    def announce():
        resp.rvalid_next.next = cycles_left == 2  # the cycle before the word's

    return memory, arbitrate_strobes, arbitrate_word, register_strobes, register_word, count_latency, announce
