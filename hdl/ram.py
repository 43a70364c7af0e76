"""Synthesizable: the physical RAM, 64-bit words with a write enable per byte lane and a registered read.

The read is synchronous (the word appears in `rdata` the cycle after `read`) and the array is never reset, so
Yosys infers block RAM and Verilator neither resets nor initialises millions of words. `rdata` holds between
reads: the memory controller relies on that to stretch the latency.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always, block, intbv

from hdl.protocol import DATA_WIDTH


@block
def ram(
    clk: SignalType,
    word_addr: SignalType,
    write: SignalType,
    byte_enable: SignalType,
    wdata: SignalType,
    read: SignalType,
    rdata: SignalType,
    words: int,
):
    """`words` 64-bit words; a write stores the enabled byte lanes of `wdata`, a read loads `rdata`."""
    mem_words = [Signal(intbv(0)[DATA_WIDTH:]) for _ in range(words)]

    @always(clk.posedge)
    def access():
        # One line per byte lane: MyHDL cannot emit Verilog's `+:` part-select, and constant slices infer byte-write
        # block RAM.
        if write:
            if byte_enable[0]:
                mem_words[word_addr].next[8:0] = wdata[8:0]
            if byte_enable[1]:
                mem_words[word_addr].next[16:8] = wdata[16:8]
            if byte_enable[2]:
                mem_words[word_addr].next[24:16] = wdata[24:16]
            if byte_enable[3]:
                mem_words[word_addr].next[32:24] = wdata[32:24]
            if byte_enable[4]:
                mem_words[word_addr].next[40:32] = wdata[40:32]
            if byte_enable[5]:
                mem_words[word_addr].next[48:40] = wdata[48:40]
            if byte_enable[6]:
                mem_words[word_addr].next[56:48] = wdata[56:48]
            if byte_enable[7]:
                mem_words[word_addr].next[64:56] = wdata[64:56]
        if read:
            rdata.next = mem_words[word_addr]

    return access
