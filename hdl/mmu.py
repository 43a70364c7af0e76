"""Synthesizable: the `mmu` top — request handshake, the access checks, and the wiring of every block.

One request at a time: IDLE/RESP accept it (req_ready), LOOKUP checks it against the registered request in one
cycle (canonical, alignment, TLB hit and permissions, RAM bounds) and starts the data access or a walk, WALK
waits for the page walker, MEMWAIT for a read slower than one cycle (with the AXI memory, for every data access's
response), RESP pulses resp_valid with the access event.

Only what must act within LOOKUP is combinational. The request is decoded as it is registered, and the commands
that can act a cycle later (the TLB's drop and flushes, the PWC's flush) are registers that `control` sets: a
shorter LOOKUP path in hardware, and fewer signal changes per cycle for MyHDL's simulator, which pays for each
(docs/hardware.md, "Written for the simulator too").
"""

from __future__ import annotations

from collections.abc import Callable

from myhdl import ConcatSignal, Signal, SignalType, always_comb, always_seq, block, concat, enum, intbv

from hdl.axi_manager import axi_manager
from hdl.csr import csr
from hdl.interfaces import (
    PAGE_1G,
    PAGE_2M,
    PAGE_SIZE_CODE_WIDTH,
    AxiManagerPort,
    MemPort,
    MemResponse,
    PwcInsert,
    PwcLookup,
    TlbLookup,
    TlbUpdate,
    WalkResult,
    ram_address_width,
    word_addr_width,
)
from hdl.memory_controller import memory_controller
from hdl.page_walker import page_walker
from hdl.protocol import (
    CR0_PG_BIT,
    DATA_WIDTH,
    LEVEL_BITS,
    PAGE_SHIFT,
    VPN_WIDTH,
    Fault,
    MmuConfig,
    Op,
    frame_width,
)
from hdl.pwc import pwc
from hdl.ram import ram
from hdl.tlb import tlb, tracks_hits

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
    ram_model: Callable[..., object] = ram,
    m_axi: AxiManagerPort | None = None,
):
    """The MMU with its RAM, built for `config`; ports as in hdl.protocol.PORTS_IN / PORTS_OUT.

    `ram_words` materialises fewer RAM words than `config.mem_bytes` holds (the exporter writes the real depth into the
    Verilog); simulation needs the default, every word. `ram_model` is the RAM block: hdl.ram, or for MyHDL's
    simulator alone the behavioural hdl.sim_ram, which never converts. With `config.memory` "axi" the RAM is outside:
    `m_axi` is the AXI4 manager port every RAM access goes out on (hdl.axi_manager), and the RAM arguments are unused.
    """
    config.validate()
    if not req_ready.val:
        raise ValueError("req_ready must start at 1, its value at reset (hdl.interfaces.top_ports builds it so)")
    ram_bits = ram_address_width(config.mem_bytes)
    on_axi = config.memory == "axi"  # every data access waits for its AXI response in MEMWAIT (a constant)
    if on_axi != (m_axi is not None):
        raise ValueError("an MMU with memory 'axi' needs its m_axi port, and only it has one")
    maxphyaddr = config.maxphyaddr
    frame_bits = frame_width(maxphyaddr)
    paddr_width = len(ev_paddr)
    vaddr_width = len(req_addr)
    pad_8, pad_16, pad_32 = DATA_WIDTH - 8, DATA_WIDTH - 16, DATA_WIDTH - 32  # zero-extension of narrow data
    huge_2m_bits, huge_1g_bits = LEVEL_BITS, 2 * LEVEL_BITS  # VPN bits that index into a 2 MiB, 1 GiB page
    huge_2m_shift, huge_1g_shift = PAGE_SHIFT + huge_2m_bits, PAGE_SHIFT + huge_1g_bits
    upper_ones = (1 << (vaddr_width - 47)) - 1  # bits 63..47 of a canonical upper-half address
    # the offset bits of a 2 MiB (1 GiB) page at or above the RAM's size: none when the RAM is as large
    beyond_ram_2m = ((1 << huge_2m_shift) - 1) & ~((1 << ram_bits) - 1)
    beyond_ram_1g = ((1 << huge_1g_shift) - 1) & ~((1 << ram_bits) - 1)

    # -- the registered request ---------------------------------------------------------------------------
    state = Signal(State.IDLE)
    op = Signal(intbv(0)[len(req_op):])
    size = Signal(intbv(0)[len(req_size):])
    user = Signal(bool(0))
    vaddr = Signal(intbv(0)[vaddr_width:])
    wdata = Signal(intbv(0)[len(req_wdata):])
    vpn = vaddr(PAGE_SHIFT + VPN_WIDTH, PAGE_SHIFT)  # addr[47:12], a view of vaddr (no register of its own)
    rewalk = Signal(bool(0))  # the walk in progress re-walks a hit entry for a store (to set D)
    # ... and decoded as it is registered (the data port's byte_enable and wdata too)
    is_load = Signal(bool(0))
    is_store = Signal(bool(0))
    is_fetch = Signal(bool(0))  # a LOAD marked as instruction fetch
    canonical = Signal(bool(0))
    aligned = Signal(bool(0))
    below_ram = Signal(bool(0))  # the address, as a physical one, lies within the RAM (paging off)
    offset_in_ram_2m = Signal(bool(0))  # the offset within a 2 MiB page lies within the RAM's size
    offset_in_ram_1g = Signal(bool(0))
    lane_shift = Signal(intbv(0)[6:])  # bit position of the access within its 64-bit word

    # -- derived, combinational -------------------------------------------------------------------------------
    load_shifted = Signal(intbv(0)[DATA_WIDTH:])
    load_data = Signal(intbv(0)[DATA_WIDTH:])
    frame = Signal(intbv(0)[frame_bits:])  # the translation in use: the TLB's hit, or the walk's result
    page_size = Signal(intbv(0)[PAGE_SIZE_CODE_WIDTH:])
    walk_frame_in_ram = Signal(bool(0))  # the walk's frame lies within the RAM (the TLB keeps this with its entry)
    page_frame = Signal(intbv(0)[frame_bits:])  # the frame of the accessed 4 KiB granule
    phys_address = Signal(intbv(0)[maxphyaddr:])  # and zero-extended to ev_paddr's width:
    phys = ConcatSignal(intbv(0)[paddr_width - maxphyaddr:], phys_address) if paddr_width > maxphyaddr else phys_address
    walk_in_ram = Signal(bool(0))  # the walk's translation of the address lies within the RAM

    # -- decisions, combinational ---------------------------------------------------------------------------
    # Two kinds, kept apart for MyHDL's simulator, whose cost is per signal change and per block woken: what the
    # registered request asks for (settles once per request), and that plan gated by `in_lookup` (toggles every
    # cycle of a TLB hit, so the blocks it wakes are small). Commands that can wait a cycle are registers set by
    # `control` instead (the TLB's drop and flushes, the PWC's flush), so a TLB hit assigns none of them.
    # state == LOOKUP, and req_ready (state IDLE or RESP), are registers set with the state: MyHDL runs no block to
    # decode them each time the state changes, and req_ready leaves the MMU from a flip-flop
    in_lookup = Signal(bool(0))
    accepting = Signal(bool(0))  # a request is accepted at the end of this cycle
    data_access = Signal(bool(0))  # an aligned LOAD/STORE
    translatable = Signal(bool(0))  # ... with paging on and a canonical address: it looks up the TLB
    access_ready = Signal(bool(0))  # LOOKUP can start the data access (paging off, or a usable TLB hit)
    walk_needed = Signal(bool(0))  # LOOKUP starts a walk: a TLB miss, or a store's hit whose D must be set
    access_decided = Signal(bool(0))  # LOOKUP (or a walk's last cycle) decides the data access
    walk_start = Signal(bool(0))
    walk_ok = Signal(bool(0))

    # -- response registers not on ports ----------------------------------------------------------------------
    rdata_from_memory = Signal(bool(0))  # resp_rdata is the load's data
    rdata_from_csr = Signal(bool(0))  # resp_rdata is the CSR file's registered read
    event_flush = Signal(bool(0))
    # ev_paddr is `paddr` when the operation made its data access, else 0: the address is registered in every
    # lookup (and a walk's last cycle) whatever is decided, and only one bit waits for the decision.
    paddr = Signal(intbv(0)[paddr_width:])
    paddr_used = Signal(bool(0))
    lookup_fault = Signal(intbv(0)[len(resp_fault):])  # the fault LOOKUP ends with, if it ends the operation
    lookup_errcode = Signal(intbv(0)[len(resp_errcode):])

    # -- memory ---------------------------------------------------------------------------------------------
    walk_port = MemPort(word_addr_width(config.mem_bytes))
    data_port = MemPort(word_addr_width(config.mem_bytes))
    data_port.write = is_store  # the registered decode drives the port: a STORE writes, a LOAD reads
    mem_resp = MemResponse()
    if on_axi:
        memory = axi_manager(clk=clk, rst=rst, walk=walk_port, data=data_port, data_user=user, data_fetch=is_fetch,
                             resp=mem_resp, bus=m_axi, config=config)
    else:
        memory = memory_controller(clk=clk, rst=rst, walk=walk_port, data=data_port, resp=mem_resp, config=config,
                                   ram_words=ram_words, ram_model=ram_model)

    # -- CSRs -----------------------------------------------------------------------------------------------
    csr_rdata = Signal(intbv(0)[DATA_WIDTH:])
    csr_known = Signal(bool(0))
    csr_writable = Signal(bool(0))
    names_cr0 = Signal(bool(0))  # the address is that of CR0 (CR3), at CPL 0: a CSR_WRITE there flushes
    names_cr3 = Signal(bool(0))
    next_csr = Signal(bool(0))  # the request on the port is a CSR_READ or CSR_WRITE
    paging = Signal(bool(0))
    cr3 = Signal(intbv(0)[DATA_WIDTH:])
    registers = csr(
        clk=clk, rst=rst, accept=accepting, next_addr=req_addr, next_user=req_user, next_csr=next_csr,
        in_lookup=in_lookup, op=op,
        addr=vaddr, wdata=wdata, rdata=csr_rdata,
        known=csr_known, writable=csr_writable, names_cr0=names_cr0, names_cr3=names_cr3, paging=paging, cr3=cr3,
        fault_addr=vaddr, event_valid=resp_valid,
        event_fault=resp_fault, event_errcode=resp_errcode, event_flush=event_flush, event_tlb_hit=ev_tlb_hit,
        event_tlb_miss=ev_tlb_miss, event_evict=ev_evict, event_walk_levels=ev_walk_levels,
        event_walk_cycles=ev_walk_cycles, event_pwc_hits=ev_pwc_hits, event_ad_writes=ev_ad_writes,
        cycles=ev_cycle, config=config,
    )  # fmt: skip

    # -- TLB, page walker and paging-structure cache -----------------------------------------------------------
    walk = WalkResult(frame_bits)
    tlb_lookup = TlbLookup(frame_bits)
    tlb_lookup.vpn = vpn
    tlb_lookup.next_vpn = req_addr(PAGE_SHIFT + VPN_WIDTH, PAGE_SHIFT)
    tlb_lookup.accept = accepting
    tlb_lookup.next_user = req_user
    tlb_update = TlbUpdate(frame_bits)
    tlb_update.fill_from(walk)
    tlb_update.fill_frame_in_ram = walk_frame_in_ram
    translations = tlb(clk=clk, rst=rst, lookup=tlb_lookup, update=tlb_update, entries=config.tlb_entries,
                       ways=config.ways, policy=int(config.tlb_policy))
    pwc_lookup = PwcLookup(frame_bits)
    pwc_lookup.vpn = vpn
    pwc_lookup.next_vpn = tlb_lookup.next_vpn
    pwc_lookup.accept = accepting
    pwc_insert = PwcInsert(frame_bits)
    pwc_flush = Signal(bool(0))
    structure_cache = pwc(clk=clk, rst=rst, lookup=pwc_lookup, insert=pwc_insert, flush=pwc_flush,
                          entries=config.pwc_entries)
    walker = page_walker(clk=clk, rst=rst, start=walk_start, vaddr=vaddr, is_store=is_store,
                         is_user=user, is_fetch=is_fetch, cr3=cr3, pwc=pwc_lookup, pwc_insert=pwc_insert,
                         mem=walk_port, mem_resp=mem_resp, result=walk, config=config)

    op_load, op_store, op_invlpg, op_flush, op_csr_read, op_csr_write = (
        int(Op.LOAD), int(Op.STORE), int(Op.INVLPG), int(Op.FLUSH), int(Op.CSR_READ), int(Op.CSR_WRITE))
    fault_none, fault_gp, fault_align, fault_bus, fault_page = (
        int(Fault.NONE), int(Fault.GP), int(Fault.ALIGN), int(Fault.BUS), int(Fault.PAGE))

    @always_comb
    def shift_load():
        load_shifted.next = mem_resp.rdata >> lane_shift

    @always_comb
    def size_load():
        if size == 0:  # zero-extended, explicitly: every Verilog expression is as wide as what receives it
            load_data.next = concat(intbv(0)[pad_8:], load_shifted[8:0])
        elif size == 1:
            load_data.next = concat(intbv(0)[pad_16:], load_shifted[16:0])
        elif size == 2:
            load_data.next = concat(intbv(0)[pad_32:], load_shifted[32:0])
        else:
            load_data.next = load_shifted

    @always_comb
    def select_translation():
        # The walk's result is only looked at in its `done` cycle (the last of WALK); keying on `done` rather than
        # on `state` keeps this block asleep while the state alternates LOOKUP/RESP on TLB hits.
        if walk.done:
            frame.next = walk.frame
            page_size.next = walk.size
        else:
            frame.next = tlb_lookup.frame
            page_size.next = tlb_lookup.size

    @always_comb
    def bound_walk_frame():
        walk_frame_in_ram.next = walk.frame[frame_bits:ram_bits - PAGE_SHIFT] == 0

    @always_comb
    def translate_address():
        # A huge page's frame has zeros where the VPN's low bits select the 4 KiB granule within the page.
        if page_size == PAGE_1G:
            page_frame.next = frame | concat(intbv(0)[frame_bits - huge_1g_bits:], vaddr[huge_1g_shift:PAGE_SHIFT])
        elif page_size == PAGE_2M:
            page_frame.next = frame | concat(intbv(0)[frame_bits - huge_2m_bits:], vaddr[huge_2m_shift:PAGE_SHIFT])
        else:
            page_frame.next = frame

    @always_comb
    def locate_physical():
        # With paging the frame's address and the page offset, without it the address itself.
        if paging:
            phys_address.next = concat(page_frame, vaddr[PAGE_SHIFT:0])
        else:
            phys_address.next = vaddr[maxphyaddr:]  # (beyond, it is not in RAM and not reported)

    @always_comb
    def address_data():
        # The data access leaves from registers, a cycle after its decision: its RAM word is the registered `paddr`'s.
        data_port.word_addr.next = paddr[ram_bits:3]

    @always_comb
    def bound_walk_result():
        # A page's granule lies within the RAM when its frame does and the offset into a huge page is below the RAM
        # size (the two share no bit). The TLB answers this for its hit; for a walk's result it is from registers.
        if walk.size == PAGE_1G:
            walk_in_ram.next = walk_frame_in_ram and offset_in_ram_1g
        elif walk.size == PAGE_2M:
            walk_in_ram.next = walk_frame_in_ram and offset_in_ram_2m
        else:
            walk_in_ram.next = walk_frame_in_ram

    @always_comb
    def classify():
        data_access.next = (is_load or is_store) and aligned
        translatable.next = (is_load or is_store) and aligned and paging and canonical

    @always_comb
    def decode_access():
        # The access on the request port, for the TLB's checks as it is accepted (and registered below as well).
        tlb_lookup.next_store.next = req_op == op_store
        reads_csr = req_op == op_csr_read  # (MyHDL converts no `in`)
        next_csr.next = reads_csr or req_op == op_csr_write
        tlb_lookup.next_fetch.next = req_op == op_load and req_fetch
        tlb_lookup.next_in_ram_2m.next = (req_addr & intbv(beyond_ram_2m)[vaddr_width:]) == 0
        tlb_lookup.next_in_ram_1g.next = (req_addr & intbv(beyond_ram_1g)[vaddr_width:]) == 0

    @always_comb
    def plan_access():
        if paging:
            access_ready.next = translatable and tlb_lookup.usable
        else:
            access_ready.next = data_access and below_ram
        walk_needed.next = translatable and (not tlb_lookup.hit or tlb_lookup.needs_dirty)

    @always_comb
    def judge_lookup():
        # The fault an operation ends with in LOOKUP if it neither accesses the RAM nor walks: from the request and
        # the TLB's answers alone (a miss or a store to a clean entry walks; a usable hit accesses).
        fault = intbv(fault_none)[len(resp_fault):]
        errcode = intbv(0)[len(resp_errcode):]
        if is_load or is_store:
            if paging and not canonical:
                fault[:] = fault_gp
            elif not aligned:
                fault[:] = fault_align
            elif paging:
                if tlb_lookup.hit and not tlb_lookup.permitted:  # a hit's violation is a protection fault (P)
                    fault[:] = fault_page
                    errcode[:] = concat(is_fetch, False, user, is_store, True)
                elif tlb_lookup.hit and not tlb_lookup.needs_dirty and not tlb_lookup.in_ram:
                    fault[:] = fault_bus
            elif not below_ram:
                fault[:] = fault_bus
        elif op == op_csr_read:
            if not csr_known:
                fault[:] = fault_gp
        elif op == op_csr_write:
            if not csr_writable:
                fault[:] = fault_gp
        elif user or (op != op_invlpg and op != op_flush):  # CPL 3, or an undefined op
            fault[:] = fault_gp
        lookup_fault.next = fault
        lookup_errcode.next = errcode

    @always_comb
    def judge_walk():
        # walk.done only rises in WALK (a walk starts from LOOKUP, and the state leaves WALK when it is done), so
        # a walk's outcome needs no check of `state`.
        ok = walk.done and not walk.fault_page and not walk.fault_bus
        walk_ok.next = ok
        tlb_update.fill.next = ok and not rewalk
        tlb_update.refresh.next = ok and rewalk

    @always_comb
    def accept_request():
        accepting.next = req_ready and req_valid

    if tracks_hits(config.ways, config.tlb_policy):

        @always_comb
        def start_access():
            # The commands that must act in the LOOKUP cycle (or a walk's last): `control` starts the data access
            # (data_port.valid, from the next cycle) on `access_decided`, and the walk on `walk_start`.
            access_decided.next = (in_lookup and access_ready) or (walk_ok and walk_in_ram)
            walk_start.next = in_lookup and walk_needed
            tlb_update.touch.next = in_lookup and translatable and tlb_lookup.hit

    else:  # the same, without the hit signal a TLB that does not track hits would leave unused

        @always_comb
        def start_access():
            access_decided.next = (in_lookup and access_ready) or (walk_ok and walk_in_ram)
            walk_start.next = in_lookup and walk_needed

    @always_comb
    def report_paddr():
        if paddr_used:
            ev_paddr.next = paddr
        else:
            ev_paddr.next = 0

    @always_comb
    def drive_response_data():
        if rdata_from_memory:
            resp_rdata.next = load_data
        elif rdata_from_csr:
            resp_rdata.next = csr_rdata
        else:
            resp_rdata.next = 0

    @always_seq(clk.posedge, reset=rst)
    def control():
        # Registers are assigned only where they change (resp_valid falls after its one cycle, the accepted
        # request's registers are cleared only if set, and the physical address and the source of resp_rdata are
        # written once, where the operation's outcome is known): the same registers in Verilog, but MyHDL's
        # simulator pays for every assignment, and on a TLB hit most of them would assign the value they hold.
        if resp_valid:
            resp_valid.next = False
        if data_port.valid:  # a one-cycle request
            data_port.valid.next = False
        # The TLB's and PWC's maintenance commands last one cycle: decided at the end of LOOKUP (or of a failed
        # walk), carried out at the end of the next, before any later lookup or walk can see the TLB or PWC.
        if tlb_update.drop:
            tlb_update.drop.next = False
        if tlb_update.flush_all:
            tlb_update.flush_all.next = False
        if tlb_update.flush_non_global:
            tlb_update.flush_non_global.next = False
        if pwc_flush:
            pwc_flush.next = False
        if state == State.IDLE or state == State.RESP:
            if req_valid:
                op.next = req_op
                size.next = req_size
                user.next = req_user
                vaddr.next = req_addr
                wdata.next = req_wdata
                # Decoded on the way into the registers: LOOKUP starts from them, and MyHDL runs no
                # combinational decoder per request.
                is_load.next = req_op == op_load
                is_store.next = tlb_lookup.next_store
                is_fetch.next = tlb_lookup.next_fetch
                canonical.next = req_addr[vaddr_width:47] == 0 or req_addr[vaddr_width:47] == upper_ones
                below_ram.next = req_addr[vaddr_width:ram_bits] == 0
                offset_in_ram_2m.next = tlb_lookup.next_in_ram_2m
                offset_in_ram_1g.next = tlb_lookup.next_in_ram_1g
                # The lanes of the access within its 64-bit word: where a load's data sits, where a store's goes.
                if req_size == 3:
                    aligned.next = req_addr[3:0] == 0
                    lane_shift.next = 0
                    data_port.byte_enable.next = 0xFF
                    data_port.wdata.next = req_wdata
                elif req_size == 0:
                    aligned.next = True
                    lane_shift.next = concat(req_addr[3:0], intbv(0)[3:])
                    data_port.byte_enable.next = 0x01 << req_addr[3:0]
                    data_port.wdata.next = (concat(intbv(0)[pad_8:], req_wdata[8:0])
                                            << concat(req_addr[3:0], intbv(0)[3:]))
                elif req_size == 1:
                    aligned.next = not req_addr[0]
                    lane_shift.next = concat(req_addr[3:1], intbv(0)[4:])
                    data_port.byte_enable.next = 0x03 << concat(req_addr[3:1], False)
                    data_port.wdata.next = (concat(intbv(0)[pad_16:], req_wdata[16:0])
                                            << concat(req_addr[3:1], intbv(0)[4:]))
                else:
                    aligned.next = req_addr[2:0] == 0
                    lane_shift.next = concat(req_addr[2], intbv(0)[5:])
                    data_port.byte_enable.next = 0x0F << concat(req_addr[2], intbv(0)[2:])
                    data_port.wdata.next = (concat(intbv(0)[pad_32:], req_wdata[32:0])
                                            << concat(req_addr[2], intbv(0)[5:]))
                if rdata_from_csr:
                    rdata_from_csr.next = False
                if event_flush:
                    event_flush.next = False
                if ev_tlb_hit:
                    ev_tlb_hit.next = False
                if ev_tlb_miss:
                    ev_tlb_miss.next = False
                if ev_walk_levels != 0:  # the last operation walked (a walk reads at least one entry), maybe filled
                    ev_walk_levels.next = 0
                    ev_walk_cycles.next = 0
                    ev_pwc_hits.next = 0
                    ev_ad_writes.next = 0
                    ev_evict.next = False
                    ev_evict_vpn.next = 0
                state.next = State.LOOKUP
                req_ready.next = False
                in_lookup.next = True
            elif state == State.RESP:
                state.next = State.IDLE
        elif state == State.LOOKUP or state == State.WALK:
            if state == State.LOOKUP:  # (which every operation leaves after one cycle)
                in_lookup.next = False
                if translatable and tlb_lookup.hit:
                    ev_tlb_hit.next = True
                elif translatable:
                    ev_tlb_miss.next = True
                if op == op_csr_read:
                    rdata_from_csr.next = True
                elif user:  # INVLPG, FLUSH and CSR writes at CPL 3 are GP (below) and change nothing
                    pass
                elif op == op_invlpg and canonical:
                    tlb_update.drop.next = True
                    pwc_flush.next = True
                elif op == op_flush:
                    tlb_update.flush_all.next = True
                    pwc_flush.next = True
                    event_flush.next = True
                elif op == op_csr_write and names_cr3:
                    tlb_update.flush_non_global.next = True
                    pwc_flush.next = True
                    event_flush.next = True
                elif op == op_csr_write and names_cr0 and wdata[CR0_PG_BIT] != paging:  # paging switches
                    tlb_update.flush_all.next = True
                    pwc_flush.next = True
                if translatable and tlb_lookup.hit and not tlb_lookup.permitted:  # a failed translation drops (INVLPG)
                    tlb_update.drop.next = True
            elif walk.done:
                if not walk_ok:
                    tlb_update.drop.next = True
                ev_walk_levels.next = walk.levels
                ev_walk_cycles.next = walk.cycles
                ev_pwc_hits.next = concat(intbv(0)[1:], walk.pwc_hit)
                ev_ad_writes.next = walk.ad_writes
                if tlb_update.fill and tlb_update.evict:
                    ev_evict.next = True
                    ev_evict_vpn.next = tlb_update.evict_vpn
            if state == State.LOOKUP or walk.done:
                paddr.next = phys
            # The fault the operation ends with if it ends now (Fault.NONE when it goes on), taken whatever is
            # decided: only the state waits for the decision. resp_fault and resp_errcode stay until the next.
            if state == State.LOOKUP:
                resp_fault.next = lookup_fault
                resp_errcode.next = lookup_errcode
            elif walk.done:
                if walk.fault_page:  # the walker reports P and RSVD for the faults it finds
                    resp_fault.next = fault_page
                    resp_errcode.next = concat(is_fetch, walk.reserved, user, is_store, walk.present)
                elif walk.fault_bus or not walk_in_ram:
                    resp_fault.next = fault_bus
            # Order: the data access of a translated LOAD/STORE, else a walk, else the end of the operation.
            if access_decided:  # the data access starts next cycle, from `paddr`
                data_port.valid.next = True
                if not paddr_used:
                    paddr_used.next = True
                rdata_from_memory.next = is_load
                if on_axi or is_load:  # a load waits for its word; on AXI a store for its B response
                    state.next = State.MEMWAIT
                else:
                    state.next = State.RESP
                    req_ready.next = True
                    resp_valid.next = True
            elif walk_start:
                rewalk.next = tlb_lookup.hit
                state.next = State.WALK
            elif state == State.LOOKUP or walk.done:
                # The operation ends without a data access, with the fault taken below.
                if paddr_used:
                    paddr_used.next = False
                if rdata_from_memory:
                    rdata_from_memory.next = False
                state.next = State.RESP
                req_ready.next = True
                resp_valid.next = True
        elif state == State.MEMWAIT:
            # wdone and error_next are constant 0 with the bram: only AXI writes wait, and only AXI reports errors
            if mem_resp.rvalid_next or mem_resp.wdone:
                state.next = State.RESP
                req_ready.next = True
                resp_valid.next = True
                if mem_resp.error_next:  # SLVERR or DECERR: a BUS fault with no data, the translation kept
                    resp_fault.next = fault_bus
                    paddr_used.next = False
                    rdata_from_memory.next = False
        else:
            state.next = State.IDLE
            req_ready.next = True

    return (memory, registers, translations, structure_cache, walker, shift_load, size_load, select_translation,
            bound_walk_frame, translate_address, locate_physical, address_data, bound_walk_result, classify,
            decode_access, plan_access, judge_lookup, judge_walk, accept_request, start_access,
            report_paddr, drive_response_data, control)
