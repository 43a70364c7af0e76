"""Synthesizable: the hardware page walker for x86_64 4-level paging (4 KiB, 2 MiB and 1 GiB pages).

Starts (START, one cycle) from the paging-structure cache's longest-prefix hit or from CR3, and per level: reads
the entry (READ issues the read, WAIT receives it and checks it: present, reserved bits, W/U/NX combined, the
access at a leaf), then takes the registered outcome (CHECK) and either descends — writing A back when it was clear
and caching the entry in the PWC — or, at the leaf, writes A (and D for a store) back when that changes the entry
and finishes. DONE presents the result one cycle. With the AXI memory a write-back is awaited (its B response)
before the entry's outcome is taken, and an error response to a read or a write-back ends the walk with a BUS
fault, with nothing cached."""

from __future__ import annotations

from myhdl import Signal, SignalType, always_comb, always_seq, block, concat, enum, intbv

from hdl.interfaces import (
    PAGE_1G,
    PAGE_2M,
    PAGE_4K,
    WORD_BYTES,
    MemPort,
    MemResponse,
    PwcInsert,
    PwcLookup,
    WalkResult,
    ram_address_width,
)
from hdl.protocol import (
    HUGE_1G_RESERVED,
    HUGE_1G_SHIFT,
    HUGE_2M_RESERVED,
    HUGE_2M_SHIFT,
    LEVEL_BITS,
    PAGE_SHIFT,
    MmuConfig,
    Pte,
    frame_width,
    pte_reserved_mask,
)

WalkState = enum("IDLE", "START", "READ", "WAIT", "CHECK", "WRITE", "DONE")


@block
def page_walker(
    clk: SignalType,
    rst: SignalType,
    start: SignalType,
    vaddr: SignalType,
    is_store: SignalType,
    is_user: SignalType,
    is_fetch: SignalType,
    cr3: SignalType,
    pwc: PwcLookup,
    pwc_insert: PwcInsert,
    mem: MemPort,
    mem_resp: MemResponse,
    result: WalkResult,
    config: MmuConfig,
):
    """Walk the tables for `vaddr` when `start` pulses.

    `is_store`/`is_user`/`is_fetch` describe the access the leaf must permit; the walker keeps them and `vaddr`'s
    page number from `start` on, so that nothing here follows the MMU's next requests between walks (in MyHDL's
    simulator, what changes is what costs). `pwc` is the PWC's lookup of `vaddr` (the walker reads its answer at
    `start`, never its `vpn`) and `pwc_insert` the walker's insert for it, which the PWC applies to `vaddr` (held
    until `result.done`); `mem`/`mem_resp` the walker's port on the memory controller.
    """
    maxphyaddr = config.maxphyaddr
    ram_bits = ram_address_width(config.mem_bytes)
    frame_bits = frame_width(maxphyaddr)
    reserved_mask = pte_reserved_mask(maxphyaddr)
    accessed_dirty = Pte.ACCESSED | Pte.DIRTY
    full_word = (1 << WORD_BYTES) - 1
    all_frame_bits = (1 << frame_bits) - 1
    huge_2m_frame_mask = all_frame_bits & ~((1 << (HUGE_2M_SHIFT - PAGE_SHIFT)) - 1)  # frame bits of a 2 MiB base
    huge_1g_frame_mask = all_frame_bits & ~((1 << (HUGE_1G_SHIFT - PAGE_SHIFT)) - 1)
    accessed = Pte.ACCESSED
    present_bit = Pte.PRESENT.bit_length() - 1
    writable_bit = Pte.WRITABLE.bit_length() - 1
    user_bit = Pte.USER_ACCESSIBLE.bit_length() - 1
    accessed_bit = Pte.ACCESSED.bit_length() - 1
    dirty_bit = Pte.DIRTY.bit_length() - 1
    huge_bit = Pte.HUGE_PAGE.bit_length() - 1
    global_bit = Pte.GLOBAL.bit_length() - 1
    no_execute_bit = Pte.NO_EXECUTE.bit_length() - 1
    addr_width = maxphyaddr

    state = Signal(WalkState.IDLE)
    walk_vpn = Signal(intbv(0)[4 * LEVEL_BITS:])  # the page number walked, and the access checked at the leaf
    walk_store = Signal(bool(0))
    walk_user = Signal(bool(0))
    walk_fetch = Signal(bool(0))
    level = Signal(intbv(4, min=0, max=5))
    table_frame = Signal(intbv(0)[frame_bits:])  # frame of the table being read (`table` is a Verilog keyword)
    writable = Signal(bool(0))  # permissions combined above the current level
    user = Signal(bool(0))
    no_execute = Signal(bool(0))
    entry_addr = Signal(intbv(0)[addr_width:])  # physical address of the entry this level reads
    entry_addr_reg = Signal(intbv(0)[addr_width:])
    table_in_ram = Signal(bool(0))  # the table being read lies within the RAM: registered with table_frame, so
    # that the read's request comes from registers (the controller's write enables sit beside the block RAM)
    index = Signal(intbv(0)[LEVEL_BITS:])

    entry = Signal(intbv(0)[64:])
    present = Signal(bool(0))
    reserved = Signal(bool(0))
    leaf = Signal(bool(0))
    combined_writable = Signal(bool(0))
    combined_user = Signal(bool(0))
    combined_no_execute = Signal(bool(0))
    permitted = Signal(bool(0))
    updated_entry = Signal(intbv(0)[64:])  # the entry with A (and, for a store's leaf, D) set
    write_back = Signal(bool(0))
    arrived = Signal(bool(0))  # the entry is on mem_resp.rdata this cycle
    # The entry's checks, registered as it arrives: CHECK decides from these alone, so that no path runs from the
    # RAM's word through the checks into the walker's state (issue 10's timing closure, a cycle per entry read).
    checked_present = Signal(bool(0))
    checked_reserved = Signal(bool(0))  # present, with a reserved bit set (the error code's RSVD)
    checked_fault = Signal(bool(0))  # not present, reserved, or a leaf that does not permit the access
    checked_ends = Signal(bool(0))  # the walk ends at this entry: a fault or a leaf
    checked_write_back = Signal(bool(0))  # present, not reserved, and A (or A/D) must be set
    # An entry that needs A (or A/D) set is written back from WRITE, the cycle after CHECK, so that the request
    # leaves from the walker's state. With the bram the write completes at once and the entry's outcome is taken in
    # WRITE; on AXI it completes when its B response arrives, and a response may be an error (the three AXI-only
    # signals stay constant 0 with the bram).
    write_first = Signal(bool(0))  # CHECK: the entry must be written back before its outcome is taken
    decide = Signal(bool(0))  # the entry's outcome is taken this cycle: descend, fault or finish
    wb_pending = Signal(bool(0))  # AXI: the entry's write-back is on the bus; it is decided at its B response
    wb_issued = Signal(bool(0))  # AXI: WRITE issued the write-back, which the walker now awaits in WAIT
    wb_done = Signal(bool(0))  # a write-back completes this cycle (counted in ad_writes)
    bus_error = Signal(bool(0))  # AXI: the entry's read or its write-back ended in an error response
    if config.memory == "axi":

        @always_comb
        def sequence_entry():
            checking = state == WalkState.CHECK
            write_first.next = checking and checked_write_back
            wb_issued.next = state == WalkState.WRITE
            wb_done.next = wb_pending and mem_resp.wdone and not mem_resp.error_next
            decide.next = ((checking and not checked_write_back)
                           or (wb_pending and mem_resp.wdone and not mem_resp.error_next))
            bus_error.next = (arrived and mem_resp.rerror) or (wb_pending and mem_resp.wdone and mem_resp.error_next)

    else:  # (the bram's walker reads none of MemResponse's AXI signals: they are no ports of its block)

        @always_comb
        def sequence_entry():
            checking = state == WalkState.CHECK
            write_first.next = checking and checked_write_back
            wb_done.next = state == WalkState.WRITE
            decide.next = (checking and not checked_write_back) or state == WalkState.WRITE

    @always_comb
    def address_entry():
        if level == 4:
            index.next = walk_vpn[4 * LEVEL_BITS:3 * LEVEL_BITS]
        elif level == 3:
            index.next = walk_vpn[3 * LEVEL_BITS:2 * LEVEL_BITS]
        elif level == 2:
            index.next = walk_vpn[2 * LEVEL_BITS:LEVEL_BITS]
        else:
            index.next = walk_vpn[LEVEL_BITS:0]

    @always_comb
    def place_entry():
        entry_addr.next = concat(table_frame, index, intbv(0)[3:])

    @always_comb
    def examine_entry():
        # The read port is shared with the data path: outside WAIT, CHECK and WRITE its words are not entries, and
        # passing them on would re-run every check below on each data load (in MyHDL's simulator, where that is the
        # cost).
        waiting = state == WalkState.WAIT
        if waiting or state == WalkState.CHECK or state == WalkState.WRITE:
            entry.next = mem_resp.rdata
        else:
            entry.next = 0
        arrived.next = waiting and mem_resp.rvalid

    @always_comb
    def check_entry():
        present.next = entry[present_bit]
        is_huge = entry[huge_bit]
        bad = (entry & intbv(reserved_mask)[64:]) != 0  # a sized literal: as wide as the entry
        if level == 4 and is_huge:
            bad = True
        if level == 3 and is_huge and (entry & HUGE_1G_RESERVED) != 0:
            bad = True
        if level == 2 and is_huge and (entry & HUGE_2M_RESERVED) != 0:
            bad = True
        reserved.next = bad
        leaf.next = level == 1 or ((level == 2 or level == 3) and is_huge)

    @always_comb
    def combine_permissions():
        combined_writable.next = writable and entry[writable_bit]
        combined_user.next = user and entry[user_bit]
        combined_no_execute.next = no_execute or entry[no_execute_bit]

    @always_comb
    def check_access():
        permitted.next = ((not walk_store or combined_writable) and (not walk_user or combined_user)
                          and (not walk_fetch or not combined_no_execute))
        if leaf and walk_store:
            updated_entry.next = entry | accessed_dirty
        else:
            updated_entry.next = entry | accessed
        if leaf:
            write_back.next = permitted and (not entry[accessed_bit] or (walk_store and not entry[dirty_bit]))
        else:
            write_back.next = not entry[accessed_bit]

    @always_comb
    def drive_memory():
        mem.byte_enable.next = full_word
        mem.wdata.next = updated_entry
        # (the data path waits for DONE)
        mem.claims.next = (state == WalkState.READ or state == WalkState.WAIT or state == WalkState.CHECK
                           or state == WalkState.WRITE)
        if state == WalkState.READ:
            mem.valid.next = table_in_ram
            mem.write.next = False
            mem.word_addr.next = entry_addr[ram_bits:3]
        else:
            mem.valid.next = state == WalkState.WRITE
            mem.write.next = True
            mem.word_addr.next = entry_addr_reg[ram_bits:3]

    # Without a paging-structure cache nothing reads the insert: it is not driven either (no unused logic).
    @always_comb
    def drive_pwc():
        # From what the entry's arrival loaded: the table it points to, and the permissions combined down to it.
        pwc_insert.valid.next = decide and not checked_ends
        pwc_insert.level.next = level
        pwc_insert.table.next = table_frame
        pwc_insert.table_in_ram.next = table_in_ram
        pwc_insert.writable.next = writable
        pwc_insert.user.next = user
        pwc_insert.no_execute.next = no_execute

    @always_comb
    def report_done():
        result.done.next = state == WalkState.DONE

    @always_seq(clk.posedge, reset=rst)
    def walk():
        if state == WalkState.IDLE:
            if start:
                state.next = WalkState.START
        elif state == WalkState.START:
            # A cycle of its own for the PWC's answer (its longest prefix and the entry's frame): from the request's
            # registered comparison to the walker's registers, nothing else in the path.
            walk_vpn.next = vaddr[PAGE_SHIFT + 4 * LEVEL_BITS:PAGE_SHIFT]
            walk_store.next = is_store
            walk_user.next = is_user
            walk_fetch.next = is_fetch
            result.fault_page.next = False
            result.fault_bus.next = False
            result.present.next = False
            result.reserved.next = False
            result.levels.next = 0
            result.cycles.next = 0
            result.ad_writes.next = 0
            result.pwc_hit.next = pwc.hit
            if pwc.hit:
                level.next = pwc.next_level
                table_frame.next = pwc.table
                table_in_ram.next = pwc.table_in_ram
                writable.next = pwc.writable
                user.next = pwc.user
                no_execute.next = pwc.no_execute
            else:
                level.next = 4
                table_frame.next = cr3[addr_width:PAGE_SHIFT]
                table_in_ram.next = cr3[addr_width:ram_bits] == 0
                writable.next = True
                user.next = True
                no_execute.next = False
            state.next = WalkState.READ
        elif state == WalkState.READ:
            result.cycles.next = result.cycles + 1
            result.levels.next = result.levels + 1
            entry_addr_reg.next = entry_addr
            if table_in_ram:
                state.next = WalkState.WAIT
            else:
                result.fault_bus.next = True
                state.next = WalkState.DONE
        elif state == WalkState.WAIT or state == WalkState.CHECK or state == WalkState.WRITE:
            result.cycles.next = result.cycles + 1
            if arrived:
                # What a descent takes from the entry, and what a leaf reports, is loaded as the entry arrives,
                # whatever it turns out to be (a walk that ends here never reads the one, a fault never reports the
                # other): only the level, the state and the fault bits wait for the entry's checks, which are
                # registered with them and decided in CHECK.
                checked_present.next = present
                checked_reserved.next = present and reserved
                checked_fault.next = not present or reserved or (leaf and not permitted)
                checked_ends.next = not present or reserved or leaf
                checked_write_back.next = present and not reserved and write_back
                writable.next = combined_writable
                user.next = combined_user
                no_execute.next = combined_no_execute
                table_frame.next = entry[addr_width:PAGE_SHIFT]
                table_in_ram.next = entry[addr_width:ram_bits] == 0
                result.writable.next = combined_writable
                result.user.next = combined_user
                result.no_execute.next = combined_no_execute
                result.global_.next = entry[global_bit]
                result.dirty.next = updated_entry[dirty_bit]  # as written back on success
                if level == 3:
                    result.size.next = PAGE_1G
                    result.frame.next = entry[addr_width:PAGE_SHIFT] & intbv(huge_1g_frame_mask)[frame_bits:]
                elif level == 2:
                    result.size.next = PAGE_2M
                    result.frame.next = entry[addr_width:PAGE_SHIFT] & intbv(huge_2m_frame_mask)[frame_bits:]
                else:
                    result.size.next = PAGE_4K
                    result.frame.next = entry[addr_width:PAGE_SHIFT]
            if wb_done:
                result.ad_writes.next = result.ad_writes + 1
            if bus_error:
                wb_pending.next = False
                result.fault_bus.next = True
                state.next = WalkState.DONE
            elif arrived:
                state.next = WalkState.CHECK
            elif write_first:
                state.next = WalkState.WRITE
            elif wb_issued:
                wb_pending.next = True
                state.next = WalkState.WAIT
            elif decide:
                if wb_pending:
                    wb_pending.next = False
                level.next = level - 1
                # The fault bits too are taken at every decision (P for a reserved bit or a permission, RSVD): only
                # the state's next value chooses between them.
                result.fault_page.next = checked_fault
                result.present.next = checked_present
                result.reserved.next = checked_reserved
                if checked_ends:
                    state.next = WalkState.DONE
                else:
                    state.next = WalkState.READ
        else:
            state.next = WalkState.IDLE

    return (address_entry, place_entry, examine_entry, check_entry, combine_permissions, check_access,
            drive_memory, drive_pwc if config.pwc_entries else (), report_done, walk, sequence_entry)
