"""Synthesizable: the `mmu` top — request handshake, the access checks, and the wiring of every block.

One request at a time: IDLE/RESP accept it (req_ready), LOOKUP checks it against the registered request in one
cycle (canonical, alignment, TLB hit and permissions, RAM bounds) and starts the data access or a walk, WALK
waits for the page walker, MEMWAIT for a read slower than one cycle, RESP pulses resp_valid with the access event.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always_comb, always_seq, block, concat, enum, intbv

from hdl.csr import csr
from hdl.interfaces import WORD_BYTES, MemPort, MemResponse
from hdl.memory_controller import memory_controller
from hdl.protocol import (
    DATA_WIDTH,
    ERRCODE_WIDTH,
    FAULT_WIDTH,
    Csr,
    Fault,
    MmuConfig,
    Op,
)

State = enum("IDLE", "LOOKUP", "WALK", "MEMWAIT", "RESP")


@block
def mmu(
    clk: SignalType,
    rst: SignalType,
    req_valid: SignalType,
    req_op: SignalType,
    req_size: SignalType,
    req_user: SignalType,
    req_fetch: SignalType,
    req_addr: SignalType,
    req_wdata: SignalType,
    req_ready: SignalType,
    resp_valid: SignalType,
    resp_rdata: SignalType,
    resp_fault: SignalType,
    resp_errcode: SignalType,
    ev_cycle: SignalType,
    ev_paddr: SignalType,
    ev_tlb_hit: SignalType,
    ev_tlb_miss: SignalType,
    ev_evict: SignalType,
    ev_evict_vpn: SignalType,
    ev_walk_levels: SignalType,
    ev_walk_cycles: SignalType,
    ev_pwc_hits: SignalType,
    ev_ad_writes: SignalType,
    config: MmuConfig,
    ram_words: int | None = None,
):
    """The MMU with its RAM, built for `config`; ports as in hdl.protocol.PORTS_IN / PORTS_OUT.

    `ram_words` materialises fewer RAM words than `config.mem_bytes` holds (hdl.export writes the real depth into
    the Verilog); simulation needs the default, every word.
    """
    config.validate()
    ram_bits = (config.mem_bytes - 1).bit_length()  # byte-address bits of the RAM
    word_addr_width = ram_bits - (WORD_BYTES - 1).bit_length()
    single_cycle_read = config.mem_latency == 1
    paddr_width = len(ev_paddr)
    vaddr_width = len(req_addr)

    # -- the registered request ---------------------------------------------------------------------------------
    state = Signal(State.IDLE)
    op = Signal(intbv(0)[len(req_op):])
    size = Signal(intbv(0)[len(req_size):])
    user = Signal(bool(0))
    fetch = Signal(bool(0))
    vaddr = Signal(intbv(0)[len(req_addr):])
    wdata = Signal(intbv(0)[len(req_wdata):])

    # -- checks on it, combinational ----------------------------------------------------------------------------
    aligned = Signal(bool(0))
    lane = Signal(intbv(0)[3:])  # byte lane of the access within its 64-bit word
    lane_shift = Signal(intbv(0)[6:])
    lane_enable = Signal(intbv(0)[WORD_BYTES:])
    store_data = Signal(intbv(0)[DATA_WIDTH:])
    load_shifted = Signal(intbv(0)[DATA_WIDTH:])
    load_data = Signal(intbv(0)[DATA_WIDTH:])
    phys_in_ram = Signal(bool(0))
    do_access = Signal(bool(0))  # start the data access this cycle

    # -- response registers not on ports --------------------------------------------------------------------------
    rdata_from_memory = Signal(bool(0))
    rdata_reg = Signal(intbv(0)[DATA_WIDTH:])
    event_flush = Signal(bool(0))

    # -- blocks ---------------------------------------------------------------------------------------------------
    walk_port = MemPort(word_addr_width)
    data_port = MemPort(word_addr_width)
    mem_resp = MemResponse()
    memory = memory_controller(clk, rst, walk_port, data_port, mem_resp, config, ram_words)

    csr_rdata = Signal(intbv(0)[DATA_WIDTH:])
    csr_known = Signal(bool(0))
    csr_writable = Signal(bool(0))
    csr_write = Signal(bool(0))
    paging = Signal(bool(0))
    cr3 = Signal(intbv(0)[DATA_WIDTH:])
    page_fault = Signal(bool(0))
    fault_code = Signal(intbv(0)[ERRCODE_WIDTH:])
    registers = csr(clk, rst, vaddr, wdata, csr_write, csr_rdata, csr_known, csr_writable, paging, cr3,
                    page_fault, vaddr, fault_code, resp_valid, op, resp_fault, event_flush, ev_tlb_hit,
                    ev_tlb_miss, ev_evict, ev_walk_levels, ev_walk_cycles, ev_pwc_hits, ev_ad_writes, ev_cycle,
                    config=config)

    op_load, op_store, op_invlpg, op_flush, op_csr_read, op_csr_write = (
        int(Op.LOAD), int(Op.STORE), int(Op.INVLPG), int(Op.FLUSH), int(Op.CSR_READ), int(Op.CSR_WRITE))
    fault_gp, fault_align, fault_bus, fault_page = int(Fault.GP), int(Fault.ALIGN), int(Fault.BUS), int(Fault.PAGE)
    csr_cr3 = int(Csr.CR3)
    assert len(resp_fault) == FAULT_WIDTH

    @always_comb
    def check_alignment():
        if size == 0:
            aligned.next = True
            lane.next = vaddr[3:0]
            lane_enable.next = 0x01
        elif size == 1:
            aligned.next = not vaddr[0]
            lane.next = concat(vaddr[3:1], False)
            lane_enable.next = 0x03
        elif size == 2:
            aligned.next = vaddr[2:0] == 0
            lane.next = concat(vaddr[2], intbv(0)[2:])
            lane_enable.next = 0x0F
        else:
            aligned.next = vaddr[3:0] == 0
            lane.next = 0
            lane_enable.next = 0xFF

    @always_comb
    def place_lanes():
        lane_shift.next = concat(lane, intbv(0)[3:])
        if size == 0:
            store_data.next = wdata[8:0]
        elif size == 1:
            store_data.next = wdata[16:0]
        elif size == 2:
            store_data.next = wdata[32:0]
        else:
            store_data.next = wdata

    @always_comb
    def shift_load():
        load_shifted.next = mem_resp.rdata >> lane_shift

    @always_comb
    def size_load():
        if size == 0:
            load_data.next = load_shifted[8:0]
        elif size == 1:
            load_data.next = load_shifted[16:0]
        elif size == 2:
            load_data.next = load_shifted[32:0]
        else:
            load_data.next = load_shifted

    @always_comb
    def check_bounds():
        phys_in_ram.next = vaddr[vaddr_width:ram_bits] == 0

    @always_comb
    def decide_access():
        do_access.next = False
        if state == State.LOOKUP and (op == op_load or op == op_store):
            if not paging:
                do_access.next = aligned and phys_in_ram

    @always_comb
    def drive_data_port():
        data_port.valid.next = do_access
        data_port.write.next = op == op_store
        data_port.word_addr.next = vaddr[ram_bits:3]
        data_port.byte_enable.next = lane_enable << lane
        data_port.wdata.next = store_data << lane_shift

    @always_comb
    def drive_csr_write():
        csr_write.next = state == State.LOOKUP and op == op_csr_write and csr_writable

    @always_comb
    def drive_handshake():
        req_ready.next = state == State.IDLE or state == State.RESP
        if rdata_from_memory:
            resp_rdata.next = load_data
        else:
            resp_rdata.next = rdata_reg

    @always_seq(clk.posedge, reset=rst)
    def control():
        resp_valid.next = False
        if state == State.IDLE or state == State.RESP:
            if req_valid:
                op.next = req_op
                size.next = req_size
                user.next = req_user
                fetch.next = req_fetch
                vaddr.next = req_addr
                wdata.next = req_wdata
                rdata_from_memory.next = False
                rdata_reg.next = 0
                event_flush.next = False
                resp_fault.next = 0
                resp_errcode.next = 0
                ev_paddr.next = 0
                ev_tlb_hit.next = False
                ev_tlb_miss.next = False
                ev_evict.next = False
                ev_evict_vpn.next = 0
                ev_walk_levels.next = 0
                ev_walk_cycles.next = 0
                ev_pwc_hits.next = 0
                ev_ad_writes.next = 0
                state.next = State.LOOKUP
            else:
                state.next = State.IDLE
        elif state == State.LOOKUP:
            state.next = State.RESP
            resp_valid.next = True
            if op == op_load or op == op_store:
                if paging:
                    resp_fault.next = fault_page  # translation comes with the TLB and the walker
                    resp_errcode.next = concat(fetch and op == op_load, user, op == op_store, False, False)
                elif not aligned:
                    resp_fault.next = fault_align
                elif not phys_in_ram:
                    resp_fault.next = fault_bus
                else:
                    ev_paddr.next = vaddr[paddr_width:]
                    if op == op_load:
                        rdata_from_memory.next = True
                        if not single_cycle_read:
                            state.next = State.MEMWAIT
                            resp_valid.next = False
            elif op == op_invlpg:
                pass
            elif op == op_flush:
                event_flush.next = True
            elif op == op_csr_read:
                if csr_known:
                    rdata_reg.next = csr_rdata
                else:
                    resp_fault.next = fault_gp
            elif op == op_csr_write:
                if csr_writable:
                    event_flush.next = vaddr == csr_cr3
                else:
                    resp_fault.next = fault_gp
            else:
                resp_fault.next = fault_gp
        elif state == State.MEMWAIT:
            if mem_resp.rvalid_next:
                state.next = State.RESP
                resp_valid.next = True
        else:
            state.next = State.IDLE

    return (memory, registers, check_alignment, place_lanes, shift_load, size_load, check_bounds, decide_access,
            drive_data_port, drive_csr_write, drive_handshake, control)
