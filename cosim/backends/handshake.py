"""How every HDL backend drives the `mmu`'s request/response handshake, so that their events agree cycle for cycle.

The rule, in one place (the MyHDL and cocotb drivers follow it, and so does the C++ shim of the verilator backend):

- Inputs change only while clk is low.
- Reset holds rst high for RESET_CYCLES rising edges; rst falls with clk low and the first request is presented at
  once.
- A request is presented in the cycle that carried the previous response and held until a rising edge samples
  req_ready = 1; req_valid falls in the next low phase.
- The drivers read req_ready before their own writes settle, so they rely on the mmu deriving it from registers
  only (hdl/mmu.py: state IDLE or RESP), not combinationally from req_*.
- An operation that has no response after MAX_OP_CYCLES cycles means the design is hung.
"""

from __future__ import annotations

from hdl.protocol import PORTS_OUT, AccessEvent, Op

RESET_CYCLES = 2
MAX_OP_CYCLES = 1_000_000  # a design that has not answered one operation after this many cycles is hung
EVENT_PORTS = tuple(name for name in PORTS_OUT if name.startswith("ev_"))  # the order hdl_event takes them in


def hdl_event(
    seq: int, op: int, addr: int, size_log2: int, wdata: int, rdata: int, fault: int, errcode: int,
    ev: tuple[int, ...],
) -> AccessEvent:  # fmt: skip
    """The AccessEvent of one operation from its request, its response and the values of EVENT_PORTS.

    cosim/backends/verilator_shim.cpp builds the same record in C++.
    """
    cycle, paddr, tlb_hit, tlb_miss, evict, evict_vpn, walk_levels, walk_cycles, pwc_hits, ad_writes = ev
    memory = op in (Op.LOAD, Op.STORE)
    if op == Op.STORE:
        data = wdata & ((1 << (8 << size_log2)) - 1)
    elif op == Op.CSR_WRITE:
        data = int(wdata)
    elif op in (Op.LOAD, Op.CSR_READ):
        data = rdata
    else:
        data = 0
    return AccessEvent(
        seq, cycle, int(op), int(addr), paddr, 1 << size_log2 if memory else 0, data, bool(tlb_hit), bool(tlb_miss),
        evict_vpn if evict else -1, walk_levels, walk_cycles, pwc_hits, ad_writes, fault, errcode,
    )  # fmt: skip
