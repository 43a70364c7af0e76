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

    # The request, registered: what the RAM sees in the next cycle.
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

    # One clocked block: MyHDL's simulator pays for every block it wakes (a combinational arbiter would wake with
    # each toggle of a strobe) and for every signal assigned, changed or not. So the request is routed here, in
    # variables, and a register is assigned only in the cycles it can change in: in hardware an enable, within two
    # LUTs of registers (the walker's state, `data.valid` and `data.write`). The address is registered with a
    # request and the data with a write; the lanes in every cycle, so that their path to the block RAM holds no more
    # than the request's decode; the read's flags while a read is requested or in flight. A bank's block holds its
    # word until it next reads, so its register follows it without an enable, the one fan-in that lets it sit
    # beside the block. A synchronous reset clears the lanes, the flags and the latency count alone. The latency is
    # counted from the registered request (so that the request's decision drives registers only), and rvalid is
    # registered with the count (it marks the last cycle: rvalid_next's cycle plus one), so it changes only when a
    # read does.
    if banks == 2:

        @always(clk.posedge)
        def pipeline():
            low_word.next = low_rdata
            high_word.next = high_rdata
            if word_ready:
                if high_chosen:
                    resp.rdata.next = high_word
                else:
                    resp.rdata.next = low_word
            # This cycle's request, the walker's first: `claims` routes its address, lanes and data, so that the
            # routing waits for no `valid`.
            request_addr = data.word_addr
            request_byte_enable = data.byte_enable
            request_wdata = data.wdata
            if walk.claims:
                request_addr = walk.word_addr
                request_byte_enable = walk.byte_enable
                request_wdata = walk.wdata
            request_write = data.valid and data.write
            request_read = data.valid and not data.write
            if walk.valid:
                request_write = bool(walk.write)
                request_read = not walk.write
            if walk.valid or data.valid:
                ram_addr.next = request_addr[addr_width:1]
            if request_write:
                ram_wdata.next = request_wdata
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
                # (with word_ready clear, high_chosen is too)
                if request_read or low_reading or high_reading or low_read_done or high_read_done or word_ready:
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
            low_word.next = low_rdata
            if word_ready:
                resp.rdata.next = low_word
            request_addr = data.word_addr
            request_byte_enable = data.byte_enable
            request_wdata = data.wdata
            if walk.claims:
                request_addr = walk.word_addr
                request_byte_enable = walk.byte_enable
                request_wdata = walk.wdata
            request_write = data.valid and data.write
            request_read = data.valid and not data.write
            if walk.valid:
                request_write = bool(walk.write)
                request_read = not walk.write
            if walk.valid or data.valid:
                ram_addr.next = request_addr
            if request_write:
                ram_wdata.next = request_wdata
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
                if request_read or low_reading or low_read_done or word_ready:
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

    return low_bank, high_bank, pipeline, announce
