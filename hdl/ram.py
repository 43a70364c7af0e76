"""Synthesizable: the physical RAM, 64-bit words with a write enable per byte lane and a registered read.

In a cycle with a lane enabled it writes those lanes of `wdata` and its output keeps its word; in every other cycle
it reads the addressed word into `rdata`, at the edge. So a read and a write never meet (the iCE40's SPRAM and the
ECP5's DP16KD in NORMAL write mode keep their output on a write), the block needs no read enable and no clock
enable, and every input comes straight from the memory controller's registers: no logic sits in front of the
block RAM. The array is never reset, so Yosys infers block RAM and Verilator neither resets nor initialises
millions of words.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always, block, intbv

from hdl.protocol import DATA_WIDTH


@block
def ram(
    clk: SignalType,
    word_addr: SignalType,
    lanes: SignalType,
    wdata: SignalType,
    rdata: SignalType,
    words: int,
):
    """`words` 64-bit words; `lanes` (one bit per byte lane) writes those lanes of `wdata`, none reads `rdata`."""
    mem_words = [Signal(intbv(0)[DATA_WIDTH:]) for _ in range(words)]

    @always(clk.posedge)
    def access():
        # One line per byte lane: MyHDL cannot emit Verilog's `+:` part-select, and constant slices infer byte-write
        # block RAM.
        if lanes != 0:
            if lanes[0]:
                mem_words[word_addr].next[8:0] = wdata[8:0]
            if lanes[1]:
                mem_words[word_addr].next[16:8] = wdata[16:8]
            if lanes[2]:
                mem_words[word_addr].next[24:16] = wdata[24:16]
            if lanes[3]:
                mem_words[word_addr].next[32:24] = wdata[32:24]
            if lanes[4]:
                mem_words[word_addr].next[40:32] = wdata[40:32]
            if lanes[5]:
                mem_words[word_addr].next[48:40] = wdata[48:40]
            if lanes[6]:
                mem_words[word_addr].next[56:48] = wdata[56:48]
            if lanes[7]:
                mem_words[word_addr].next[64:56] = wdata[64:56]
        else:
            rdata.next = mem_words[word_addr]

    return access
