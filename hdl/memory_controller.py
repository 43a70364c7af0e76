"""Synthesizable: the memory controller, which gives the page walker and the data path one RAM port between them.

The MMU serves one request at a time, so the walker and the data path never ask in the same cycle; a fixed
priority (walker first) is all the arbitration needed. The RAM sits between registers, so that no path runs from
the MMU's decisions into block RAM or from block RAM's output into them: on the ECP5-85F the 128 DP16KD of
256 KiB span the die, and one takes 5.6 ns from its clock to its data. The request is registered on its way in (a
write lands at the edge after the one that samples it); the RAM is built of one or two banks (hdl.interfaces.
ram_banks), each read into a register of its own; and the word is registered again as the bank's word is chosen.
A read's word is ready `config.bram_read_cycles` (`mem_latency` + 3) cycles after the request: the RAM reads in
one, and the controller counts the rest while the word holds, which models slower memories without changing the
RAM.
"""

from __future__ import annotations

from collections.abc import Callable

from myhdl import Signal, SignalType, always, always_comb, block, intbv

from hdl.interfaces import MemPort, MemResponse, ram_banks
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
    addr_width = len(walk.word_addr)
    word_width = len(resp.rdata)
    lanes = len(walk.byte_enable)
    latency = config.bram_read_cycles
    banks = ram_banks(config.mem_bytes)
    bank_addr_width = addr_width - (banks - 1)  # of two banks, the lowest address bit picks one (even, odd words)
    bank_words = (ram_words or config.mem_bytes // lanes) // banks

    # The request this cycle, and registered: what the RAM sees in the next.
    request_addr = Signal(intbv(0)[addr_width:])
    request_write = Signal(bool(0))
    request_read = Signal(bool(0))
    request_byte_enable = Signal(intbv(0)[lanes:])
    request_wdata = Signal(intbv(0)[word_width:])
    ram_addr = Signal(intbv(0)[bank_addr_width:])  # within the bank
    ram_wdata = Signal(intbv(0)[word_width:])
    # Per bank: the byte lanes it writes (registered already decoded, so that nothing sits between a register and
    # the block RAM), whether it reads for a request and read at the last edge, its block's output and that output
    # registered. A bank reads in every cycle it does not write; the read flags only time the word.
    low_lanes, low_reading, low_read_done = Signal(intbv(0)[lanes:]), Signal(bool(0)), Signal(bool(0))
    low_rdata, low_word = Signal(intbv(0)[word_width:]), Signal(intbv(0)[word_width:])
    high_lanes, high_reading, high_read_done = Signal(intbv(0)[lanes:]), Signal(bool(0)), Signal(bool(0))
    high_rdata, high_word = Signal(intbv(0)[word_width:]), Signal(intbv(0)[word_width:])
    word_ready = Signal(bool(0))  # a bank's word was registered at the last edge
    high_chosen = Signal(bool(0))  # ... and it was the high bank's
    cycles_left = Signal(intbv(0, min=0, max=latency))  # of the read in flight; 0 when none
    count_bits = len(cycles_left)

    low_bank = ram_model(clk, ram_addr, low_lanes, ram_wdata, low_rdata, words=bank_words)
    high_bank = ram_model(clk, ram_addr, high_lanes, ram_wdata, high_rdata, words=bank_words) if banks == 2 else ()

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
        if walk.claims:
            request_addr.next = walk.word_addr
            request_byte_enable.next = walk.byte_enable
            request_wdata.next = walk.wdata
        else:
            request_addr.next = data.word_addr
            request_byte_enable.next = data.byte_enable
            request_wdata.next = data.wdata

    # One clocked block (MyHDL's simulator pays per block woken on every edge), with a synchronous reset of the
    # strobes and the latency count alone. The request's address and data are registered in every cycle, not only
    # with a request: an enable would hang them on the request's decision; the lanes say whether the RAM writes. A
    # bank's block holds its word until it next reads, so its register follows it without an enable, the one fan-in
    # that lets it sit beside the block. The latency is counted from the registered request (so that the request's
    # decision drives registers only), and rvalid is registered with the count (it marks the last cycle:
    # rvalid_next's cycle plus one), so it changes only when a read does.
    if banks == 2:

        @always(clk.posedge)
        def pipeline():
            ram_addr.next = request_addr[addr_width:1]
            ram_wdata.next = request_wdata
            low_word.next = low_rdata
            high_word.next = high_rdata
            if word_ready:
                if high_chosen:
                    resp.rdata.next = high_word
                else:
                    resp.rdata.next = low_word
            if rst:
                low_lanes.next = 0
                high_lanes.next = 0
                low_reading.next = False
                high_reading.next = False
                low_read_done.next = False
                high_read_done.next = False
                word_ready.next = False
                high_chosen.next = False
                cycles_left.next = 0
                resp.rvalid.next = False
            else:
                if request_write and not request_addr[0]:
                    low_lanes.next = request_byte_enable
                else:
                    low_lanes.next = 0
                if request_write and request_addr[0]:
                    high_lanes.next = request_byte_enable
                else:
                    high_lanes.next = 0
                low_reading.next = request_read and not request_addr[0]
                high_reading.next = request_read and request_addr[0]
                low_read_done.next = low_reading
                high_read_done.next = high_reading
                word_ready.next = low_read_done or high_read_done
                high_chosen.next = high_read_done
                if low_reading or high_reading:  # counted from the registered request, a cycle after it
                    cycles_left.next = intbv(latency - 1)[count_bits:]
                elif cycles_left != 0:
                    cycles_left.next = cycles_left - 1
                    resp.rvalid.next = cycles_left == 2

    else:

        @always(clk.posedge)
        def pipeline():
            ram_addr.next = request_addr[bank_addr_width:]
            ram_wdata.next = request_wdata
            low_word.next = low_rdata
            if word_ready:
                resp.rdata.next = low_word
            if rst:
                low_lanes.next = 0
                low_reading.next = False
                low_read_done.next = False
                word_ready.next = False
                cycles_left.next = 0
                resp.rvalid.next = False
            else:
                if request_write:
                    low_lanes.next = request_byte_enable
                else:
                    low_lanes.next = 0
                low_reading.next = request_read
                low_read_done.next = low_reading
                word_ready.next = low_read_done
                if low_reading:
                    cycles_left.next = intbv(latency - 1)[count_bits:]
                elif cycles_left != 0:
                    cycles_left.next = cycles_left - 1
                    resp.rvalid.next = cycles_left == 2

    @always_comb
    def announce():
        resp.rvalid_next.next = cycles_left == 2  # the cycle before the word's

    return low_bank, high_bank, arbitrate_strobes, arbitrate_word, pipeline, announce
