"""Synthesizable: the control and status registers — CR0.PG, CR2, CR3, PFEC, configuration, performance counters.

A CSR_READ takes its value at the clock edge that ends its lookup cycle, into `rdata`, from which the MMU answers in
the next (response) cycle. Reading at the edge, rather than through a combinational multiplexer, matters to MyHDL's
simulator: the CYCLES counter changes every cycle and would re-run a multiplexer over all the counters every cycle.
Every counter is derived from the access event the MMU reports with each response (`event_valid`), so the
counters and the ev_* ports cannot disagree.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always_comb, always_seq, block, concat, intbv

from hdl.protocol import CR0_PE, CR0_PG, CR0_PG_BIT, CR0_WP, CSR_ADDR_WIDTH, Counter, Csr, Fault, MmuConfig, Op

COUNTER_WIDTH = 64


@block
def csr(
    clk: SignalType,
    rst: SignalType,
    accept: SignalType,
    next_addr: SignalType,
    next_user: SignalType,
    next_csr: SignalType,
    in_lookup: SignalType,
    op: SignalType,
    addr: SignalType,
    wdata: SignalType,
    rdata: SignalType,
    known: SignalType,
    writable: SignalType,
    names_cr0: SignalType,
    names_cr3: SignalType,
    paging: SignalType,
    cr3: SignalType,
    fault_addr: SignalType,
    event_valid: SignalType,
    event_fault: SignalType,
    event_errcode: SignalType,
    event_flush: SignalType,
    event_tlb_hit: SignalType,
    event_tlb_miss: SignalType,
    event_evict: SignalType,
    event_walk_levels: SignalType,
    event_walk_cycles: SignalType,
    event_pwc_hits: SignalType,
    event_ad_writes: SignalType,
    cycles: SignalType,
    config: MmuConfig,
):
    """The CSR file.

    `in_lookup` is high in the MMU's lookup cycle of the registered request `op` at `addr`: a CSR_WRITE of `wdata`
    commits at its end when `writable`, a CSR_READ loads `rdata` (zero for an unknown CSR). The address is decoded
    as the MMU accepts a CSR_READ or CSR_WRITE (`accept` with `next_csr`, the request's `next_addr` and `next_user`
    on its ports), into registers, in two independent parts: whether the address lies in the CSR space (its bits
    above the CSR address width zero) and which register its low bits name. `known`, `writable` and
    `names_cr0`/`names_cr3` (the address is CR0's, CR3's: the MMU flushes on their writes) are the AND of the two,
    from the lookup cycle on, and mean nothing for other operations. For a user request (`next_user`: CPL 3) no CSR
    is known or writable, so its reads and writes are GP, as `mov cr` at CPL 3 is on x86. `paging` is CR0.PG and
    `cr3` the raw CR3 for the walker. `event_*`: the access event of the response being given (`event_flush`: a
    FLUSH or a CR3 write), counted when `event_valid`; a page fault's response records `fault_addr` (the request's
    address) in CR2 and `event_errcode` in PFEC at the edge that ends it, in time for the next request's lookup.
    `cycles` is the register of Counter.CYCLES itself.
    """
    # Counter.CYCLES is `cycles`, a port; the event counters (Counter.LOADS onwards) are a memory, indexed from 0.
    assert Counter.CYCLES == 0, "CYCLES must be the first counter: the event counters follow it"
    counters = [Signal(intbv(0)[COUNTER_WIDTH:]) for _ in range(len(Counter) - 1)]
    cr2 = Signal(intbv(0)[len(addr):])
    pfec = Signal(intbv(0)[len(event_errcode):])

    # Constants as plain ints: the converter inlines them as Verilog literals.
    # (sized, intbv(value)[width:], where a value could be wider than 32 bits or a narrow register is read: every
    # expression of the Verilog is as wide as what receives it)
    cr0_fixed = CR0_PE | CR0_WP
    cr0_paging = cr0_fixed | CR0_PG
    data_width = len(rdata)
    pfec_pad = data_width - len(event_errcode)
    addr_width = len(addr)
    csr_cr0, csr_cr2, csr_cr3, csr_pfec = int(Csr.CR0), int(Csr.CR2), int(Csr.CR3), int(Csr.PFEC)
    counter_base = int(Csr.COUNTER_BASE)
    cfg_tlb_entries, cfg_tlb_ways, cfg_tlb_policy, cfg_pwc_entries, cfg_mem_bytes, cfg_maxphyaddr, cfg_latency = (
        int(Csr.CFG_TLB_ENTRIES), int(Csr.CFG_TLB_WAYS), int(Csr.CFG_TLB_POLICY), int(Csr.CFG_PWC_ENTRIES),
        int(Csr.CFG_MEM_BYTES), int(Csr.CFG_MAXPHYADDR), int(Csr.CFG_MEM_LATENCY))
    tlb_entries, tlb_ways, tlb_policy, pwc_entries, mem_bytes, maxphyaddr, latency = (
        config.csr_value(Csr(c)) for c in (cfg_tlb_entries, cfg_tlb_ways, cfg_tlb_policy, cfg_pwc_entries,
                                           cfg_mem_bytes, cfg_maxphyaddr, cfg_latency))
    op_load, op_store, op_invlpg, op_csr_read, op_csr_write = (
        int(Op.LOAD), int(Op.STORE), int(Op.INVLPG), int(Op.CSR_READ), int(Op.CSR_WRITE))
    fault_none, fault_page, fault_gp, fault_align, fault_bus = (
        int(Fault.NONE), int(Fault.PAGE), int(Fault.GP), int(Fault.ALIGN), int(Fault.BUS))
    # Each event counter's place in `counters`, bound by name: a reordered Counter keeps every count in its place,
    # and a counter added without a rule below fails here rather than reading 0 forever.
    unbound = {counter: int(counter) - 1 for counter in Counter if counter != Counter.CYCLES}
    c_loads, c_stores = unbound.pop(Counter.LOADS), unbound.pop(Counter.STORES)
    c_tlb_hits, c_tlb_misses = unbound.pop(Counter.TLB_HITS), unbound.pop(Counter.TLB_MISSES)
    c_evictions = unbound.pop(Counter.TLB_EVICTIONS)
    c_walks, c_walk_cycles = unbound.pop(Counter.WALKS), unbound.pop(Counter.WALK_CYCLES)
    c_pte_reads, c_pwc_hits = unbound.pop(Counter.PTE_READS), unbound.pop(Counter.PWC_HITS)
    c_ad_writes = unbound.pop(Counter.AD_WRITES)
    c_invlpgs, c_flushes = unbound.pop(Counter.INVLPGS), unbound.pop(Counter.FLUSHES)
    c_faults_page, c_faults_gp = unbound.pop(Counter.FAULTS_PAGE), unbound.pop(Counter.FAULTS_GP)
    c_faults_align, c_faults_bus = unbound.pop(Counter.FAULTS_ALIGN), unbound.pop(Counter.FAULTS_BUS)
    assert not unbound, f"counters that nothing increments: {', '.join(c.name for c in unbound)}"

    cycles_pad, levels_pad = COUNTER_WIDTH - len(event_walk_cycles), COUNTER_WIDTH - len(event_walk_levels)
    pwc_hits_pad, ad_writes_pad = COUNTER_WIDTH - len(event_pwc_hits), COUNTER_WIDTH - len(event_ad_writes)

    # The decoded address, in two parts registered as the request is accepted, so that no path runs from the
    # request's 64 address bits through one decode (a wide compare per CSR, which synthesis builds as one shared
    # chain): `space`, the address lies in the CSR space (and the request is privileged), and from its low bits
    # alone which register they name (one of the codes below), and whether that is known, writable, or a counter.
    target_cr0, target_cr2, target_cr3, target_pfec = range(1, 5)  # 0: none of them, 5: a configuration CSR
    next_target = Signal(intbv(0, min=0, max=6))
    next_known = Signal(bool(0))
    next_writable = Signal(bool(0))
    next_constant = Signal(intbv(0)[data_width:])  # the value of a configuration CSR
    space = Signal(bool(0))
    target = Signal(intbv(0, min=0, max=6))
    named_known = Signal(bool(0))  # the low bits name a CSR
    named_writable = Signal(bool(0))
    constant = Signal(intbv(0)[data_width:])
    # The counter named, one bit per counter: bit 0 CYCLES (the `cycles` port), bit i+1 counters[i]; a read ORs
    # what it selects (so a wide multiplexer by number becomes AND-OR trees).
    counter_count = len(Counter)
    number_bits = (counter_count - 1).bit_length()
    counter_end = counter_base + counter_count
    assert counter_base % (1 << number_bits) == 0, "the counters' base must be aligned to their number"
    next_counter_read = Signal(intbv(0)[counter_count:])
    counter_read = Signal(intbv(0)[counter_count:])

    @always_comb
    def decode_address():
        # The low bits in parallel rather than as a chain of choices: the addresses are distinct, so at most one
        # compare holds and every output is an OR of compares (a chain of elifs synthesizes as a chain).
        low = intbv(0)[CSR_ADDR_WIDTH:]  # (sliced once: MyHDL's simulator pays for every slice)
        low[:] = next_addr[CSR_ADDR_WIDTH:]
        at_cr0 = low == csr_cr0
        at_cr2 = low == csr_cr2
        at_cr3 = low == csr_cr3
        at_pfec = low == csr_pfec
        at_config = False
        value = intbv(0)[data_width:]
        if low == cfg_tlb_entries:
            at_config = True
            value[:] = value | intbv(tlb_entries)[data_width:]
        if low == cfg_tlb_ways:
            at_config = True
            value[:] = value | intbv(tlb_ways)[data_width:]
        if low == cfg_tlb_policy:
            at_config = True
            value[:] = value | intbv(tlb_policy)[data_width:]
        if low == cfg_pwc_entries:
            at_config = True
            value[:] = value | intbv(pwc_entries)[data_width:]
        if low == cfg_mem_bytes:
            at_config = True
            value[:] = value | intbv(mem_bytes)[data_width:]
        if low == cfg_maxphyaddr:
            at_config = True
            value[:] = value | intbv(maxphyaddr)[data_width:]
        if low == cfg_latency:
            at_config = True
            value[:] = value | intbv(latency)[data_width:]
        at_counter = low >= counter_base and low < counter_end
        if at_counter:
            # (the base is aligned: the address's low bits are the counter's number)
            next_counter_read.next = intbv(1)[counter_count:] << low[number_bits:]
        else:
            next_counter_read.next = 0
        next_constant.next = value
        next_writable.next = at_cr0 or at_cr2 or at_cr3
        next_known.next = at_cr0 or at_cr2 or at_cr3 or at_pfec or at_config or at_counter
        code = intbv(0)[3:]  # the target's code (1..5 above): each bit the OR of the registers whose code has it
        code[0] = at_cr0 or at_cr3 or at_config
        code[1] = at_cr2 or at_cr3
        code[2] = at_pfec or at_config
        next_target.next = code

    @always_comb
    def qualify():
        # What the low bits name counts only in the CSR space (and at CPL 0).
        known.next = space and named_known
        writable.next = space and named_writable
        names_cr0.next = space and target == target_cr0
        names_cr3.next = space and target == target_cr3

    @always_seq(clk.posedge, reset=rst)
    def update():
        if accept and next_csr:  # the decoded address of the CSR_READ or CSR_WRITE being accepted
            space.next = not next_user and next_addr[addr_width:CSR_ADDR_WIDTH] == 0
            target.next = next_target
            named_known.next = next_known
            named_writable.next = next_writable
            constant.next = next_constant
            counter_read.next = next_counter_read
        if in_lookup:
            if op == op_csr_read:
                # Outside the CSR space (or at CPL 3) the read is 0; a configuration CSR's `constant` is 0 for any
                # other address, and counter_read 0 for any but a counter's.
                value = intbv(0)[data_width:]
                if space:
                    if target == target_cr0:
                        if paging:
                            value[:] = intbv(cr0_paging)[data_width:]
                        else:
                            value[:] = intbv(cr0_fixed)[data_width:]
                    elif target == target_cr2:
                        value[:] = cr2
                    elif target == target_cr3:
                        value[:] = cr3
                    elif target == target_pfec:
                        value[:] = concat(intbv(0)[pfec_pad:], pfec)
                    else:
                        value[:] = constant
                    if counter_read[0]:
                        value[:] = value | cycles
                    for i in range(counter_count - 1):
                        if counter_read[i + 1]:
                            value[:] = value | counters[i]
                rdata.next = value
            elif op == op_csr_write and writable:
                if target == target_cr0:
                    paging.next = wdata[CR0_PG_BIT]
                elif target == target_cr2:
                    cr2.next = wdata
                elif target == target_cr3:
                    cr3.next = wdata
        if event_valid and event_fault == fault_page:
            cr2.next = fault_addr
            pfec.next = event_errcode

        cycles.next = cycles + 1
        if event_valid:
            if op == op_load and event_fault == fault_none:
                counters[c_loads].next = counters[c_loads] + 1
            if op == op_store and event_fault == fault_none:
                counters[c_stores].next = counters[c_stores] + 1
            if event_tlb_hit:
                counters[c_tlb_hits].next = counters[c_tlb_hits] + 1
            if event_tlb_miss:
                counters[c_tlb_misses].next = counters[c_tlb_misses] + 1
            if event_evict:
                counters[c_evictions].next = counters[c_evictions] + 1
            if event_walk_levels != 0:  # a walk (it reads at least one entry); the other walk figures are 0 without
                counters[c_walks].next = counters[c_walks] + 1
                counters[c_walk_cycles].next = (counters[c_walk_cycles]
                                                + concat(intbv(0)[cycles_pad:], event_walk_cycles))
                counters[c_pte_reads].next = counters[c_pte_reads] + concat(intbv(0)[levels_pad:], event_walk_levels)
                counters[c_pwc_hits].next = counters[c_pwc_hits] + concat(intbv(0)[pwc_hits_pad:], event_pwc_hits)
                counters[c_ad_writes].next = counters[c_ad_writes] + concat(intbv(0)[ad_writes_pad:], event_ad_writes)
            if op == op_invlpg and event_fault == fault_none:  # executed: a user INVLPG is GP
                counters[c_invlpgs].next = counters[c_invlpgs] + 1
            if event_flush:
                counters[c_flushes].next = counters[c_flushes] + 1
            if event_fault == fault_page:
                counters[c_faults_page].next = counters[c_faults_page] + 1
            if event_fault == fault_gp:
                counters[c_faults_gp].next = counters[c_faults_gp] + 1
            if event_fault == fault_align:
                counters[c_faults_align].next = counters[c_faults_align] + 1
            if event_fault == fault_bus:
                counters[c_faults_bus].next = counters[c_faults_bus] + 1

    return decode_address, qualify, update
