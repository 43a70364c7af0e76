"""Simulation-only: a behavioural model of hdl.ram for MyHDL's simulator; never converted, never synthesized.

hdl.ram holds one MyHDL Signal per 64-bit word, which the simulator must build (seconds per MiB) and update with a
copy of the word on every write. This model keeps the words that were ever written in a dict (every other word
reads as zero, as the RAM does on Verilator and MyHDL) and answers with the same ports and the same timing: a
cycle with byte lanes enabled stores them at the clock edge and keeps `rdata`, any other cycle reads the addressed
word into `rdata` at the edge. Only this port writes the words, so a read of the address just read, with no lane
enabled since, reads the word `rdata` holds: the model sleeps through such edges until the address or the lanes
change (the memory controller keeps its address while it has no request), rather than waking on every one.
"""

from __future__ import annotations

from myhdl import SignalType, block, instance

from hdl.interfaces import WORD_BYTES

# The bit mask of each lanes value: lane i enabled keeps bits 8i..8i+7.
LANE_MASKS = tuple(
    sum(0xFF << (8 * lane) for lane in range(WORD_BYTES) if enable >> lane & 1) for enable in range(1 << WORD_BYTES)
)


@block
def sim_ram(
    clk: SignalType,
    word_addr: SignalType,
    lanes: SignalType,
    wdata: SignalType,
    rdata: SignalType,
    words: int,
):
    """hdl.ram's behaviour for `words` 64-bit words (the address port's width keeps accesses within them)."""
    del words  # the dict holds only the words written, whatever the depth
    memory: dict[int, int] = {}

    @instance
    def access():
        while True:
            yield clk.posedge
            address = int(word_addr.val)
            enabled = int(lanes.val)
            if enabled:  # (and at the next edge, which writes again or reads the word written)
                mask = LANE_MASKS[enabled]
                memory[address] = (memory.get(address, 0) & ~mask) | (int(wdata.val) & mask)
            else:
                word = memory.get(address, 0)
                if word != rdata.val:
                    rdata.next = word
                yield word_addr, lanes  # (registers: they change just after an edge, in time for the next)

    return access
