"""Synthesizable: the AXI4 manager port, which stands in for the memory controller and the RAM with memory "axi".

The page walker and the data path keep their ports on it (walker first, as in hdl.memory_controller); each request
becomes one single-beat transfer on the AXI port (hdl.protocol.axi_ports): a read on AR/R, a write on AW/W/B, with
the request's byte lanes as WSTRB and its AxPROT. The MMU serves one request at a time and its clients wait for
each transfer's response before the next request, so one transfer is outstanding at most, and AxID is a constant.

Every output is a register or a constant: a request pulse is registered into VALID (one cycle after the request),
each VALID falls at its own handshake (AW and W independently: either order, or the same cycle), and RREADY or
BREADY is high from the request to the response's handshake. The response goes back in `resp`, in the clients'
terms: `rvalid_next` is the R handshake, after which `rdata` and `rerror` hold the beat (registered, `rvalid`
pulsing in the next cycle, as the bram's read data does), and `wdone` is the B handshake. An error is any response
but OKAY — SLVERR or DECERR, or EXOKAY, which a transfer without AxLOCK never gets — and also a response whose ID is
not ours or whose RLAST is low, which a subordinate answering the one transfer in flight never sends.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always_comb, always_seq, block, concat, intbv

from hdl.interfaces import AxiManagerPort, MemPort, MemResponse
from hdl.protocol import AXI_BURST_INCR, AXI_PROT_WALKER, AXI_SIZE, AxiResp, MmuConfig


@block
def axi_manager(
    clk: SignalType, rst: SignalType, walk: MemPort, data: MemPort, data_user: SignalType, data_fetch: SignalType,
    resp: MemResponse, bus: AxiManagerPort, config: MmuConfig,
):
    """Carry `walk` (priority) or `data` requests out on `bus` and report their completion in `resp`.

    `data_user`/`data_fetch` describe the data port's access (user mode, instruction fetch) for its AxPROT; the
    walker's transfers are privileged data accesses (hdl.protocol.AxiProt).
    """
    addr_width = len(bus.araddr)
    word_bits = len(walk.word_addr)
    pad_bits = addr_width - word_bits - 3  # address bits above the RAM's words: zero (validate: RAM <= 2**M bytes)
    walker_prot = int(AXI_PROT_WALKER)
    # The constants of every transfer, sized as their ports: Signals that nothing drives convert to constant wires.
    id_constant = Signal(intbv(0)[len(bus.arid):])
    len_one_beat = Signal(intbv(0)[len(bus.arlen):])
    size_eight_bytes = Signal(intbv(AXI_SIZE)[len(bus.arsize):])
    burst_incr = Signal(intbv(AXI_BURST_INCR)[len(bus.arburst):])
    resp_okay = Signal(intbv(int(AxiResp.OKAY))[len(bus.rresp):])

    address = Signal(intbv(0)[addr_width:])  # of the transfer in flight, on AWADDR and ARADDR
    prot = Signal(intbv(0)[len(bus.arprot):])
    request_address = Signal(intbv(0)[addr_width:])  # of the request this cycle, as a byte address
    r_handshake = Signal(bool(0))
    b_handshake = Signal(bool(0))
    r_bad = Signal(bool(0))  # the R beat on the bus is an error response
    b_bad = Signal(bool(0))
    in_flight = Signal(bool(0))

    if pad_bits > 0:

        @always_comb
        def place_address():
            # the request's word, as a byte address; registered in `issue`
            if walk.claims:
                request_address.next = concat(intbv(0)[pad_bits:], walk.word_addr, intbv(0)[3:])
            else:
                request_address.next = concat(intbv(0)[pad_bits:], data.word_addr, intbv(0)[3:])

    else:

        @always_comb
        def place_address():
            if walk.claims:
                request_address.next = concat(walk.word_addr, intbv(0)[3:])
            else:
                request_address.next = concat(data.word_addr, intbv(0)[3:])

    @always_comb
    def present_transfer():
        bus.awaddr.next = address
        bus.araddr.next = address
        bus.awprot.next = prot
        bus.arprot.next = prot
        bus.awid.next = id_constant
        bus.arid.next = id_constant
        bus.awlen.next = len_one_beat
        bus.arlen.next = len_one_beat
        bus.awsize.next = size_eight_bytes
        bus.arsize.next = size_eight_bytes
        bus.awburst.next = burst_incr
        bus.arburst.next = burst_incr
        bus.wlast.next = True

    @always_comb
    def track_transfer():
        # a transfer is in flight from its VALID to its response (READY is high until then)
        in_flight.next = bus.rready or bus.bready

    @always_comb
    def handshakes():
        r_handshake.next = bus.rvalid and bus.rready
        b_handshake.next = bus.bvalid and bus.bready
        r_bad.next = bus.rresp != resp_okay or bus.rid != id_constant or not bus.rlast
        b_bad.next = bus.bresp != resp_okay or bus.bid != id_constant

    @always_comb
    def report():
        resp.rvalid_next.next = r_handshake
        resp.wdone.next = b_handshake
        resp.error_next.next = (r_handshake and r_bad) or (b_handshake and b_bad)

    @always_seq(clk.posedge, reset=rst)
    def issue():
        # A request: VALID in the next cycle, and the READY of its response until that arrives.
        # The walker's and the data path's requests go out alike (MyHDL converts no choice between two
        # interfaces); only the protection bits differ.
        # The payload follows the clients' request in every cycle without a transfer in flight, so that it waits
        # for no decision of theirs; a VALID rises with it, and from then on it holds.
        if not in_flight:
            address.next = request_address
            if walk.claims:
                prot.next = walker_prot
                bus.wdata.next = walk.wdata
                bus.wstrb.next = walk.byte_enable
            else:
                prot.next = concat(data_fetch, True, not data_user)  # INSTRUCTION, NON_SECURE, PRIVILEGED
                bus.wdata.next = data.wdata
                bus.wstrb.next = data.byte_enable
        if walk.valid:
            if walk.write:
                bus.awvalid.next = True
                bus.wvalid.next = True
                bus.bready.next = True
            else:
                bus.arvalid.next = True
                bus.rready.next = True
        elif data.valid:
            if data.write:
                bus.awvalid.next = True
                bus.wvalid.next = True
                bus.bready.next = True
            else:
                bus.arvalid.next = True
                bus.rready.next = True
        else:
            if bus.awvalid and bus.awready:
                bus.awvalid.next = False
            if bus.wvalid and bus.wready:
                bus.wvalid.next = False
            if bus.arvalid and bus.arready:
                bus.arvalid.next = False
        if r_handshake:
            bus.rready.next = False
            resp.rdata.next = bus.rdata
            resp.rerror.next = r_bad
            resp.rvalid.next = True
        elif resp.rvalid:
            resp.rvalid.next = False
        if b_handshake:
            bus.bready.next = False

    return place_address, present_transfer, track_transfer, handshakes, report, issue
