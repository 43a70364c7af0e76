"""Synthesizable: the paging-structure cache — non-leaf entries that let a walk skip the upper levels.

Fully associative, FIFO replacement (the lowest-numbered invalid entry first). An entry is tagged by the level of
the table it was read from and by the address bits that select it (PML4E: addr[47:39], PDPTE: addr[47:30],
PDE: addr[47:21]), and holds the next table's frame with the permissions combined from the root down to it.
A lookup returns the longest-prefix hit, so the walk reads as few entries as possible.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always, always_comb, block, downrange, intbv

from hdl.interfaces import LEVEL_WIDTH, PwcInsert, PwcLookup, index_width
from hdl.protocol import LEVEL_BITS


@block
def pwc(clk: SignalType, rst: SignalType, lookup: PwcLookup, insert: PwcInsert, flush: SignalType, entries: int):
    """A cache of `entries` non-leaf entries: `lookup` answers for its VPN, `insert` adds an entry for that VPN, and
    `flush` empties the cache. With `entries` = 0 it never hits."""
    if entries == 0:
        return ()  # the outputs stay at their reset value: no hit

    index_bits = index_width(entries)
    last_entry = entries - 1
    vpn = lookup.vpn
    vpn_width = len(vpn)
    table_width = len(lookup.table)
    all_vpn_bits = (1 << vpn_width) - 1
    pde_prefix = all_vpn_bits & ~((1 << LEVEL_BITS) - 1)  # the VPN bits that select each kind of entry
    pdpte_prefix = all_vpn_bits & ~((1 << (2 * LEVEL_BITS)) - 1)
    pml4e_prefix = all_vpn_bits & ~((1 << (3 * LEVEL_BITS)) - 1)

    levels = [Signal(intbv(0)[LEVEL_WIDTH:]) for _ in range(entries)]
    tags = [Signal(intbv(0)[vpn_width:]) for _ in range(entries)]
    tables = [Signal(intbv(0)[table_width:]) for _ in range(entries)]
    tables_in_ram = [Signal(bool(0)) for _ in range(entries)]
    writable = [Signal(bool(0)) for _ in range(entries)]
    user = [Signal(bool(0)) for _ in range(entries)]
    no_execute = [Signal(bool(0)) for _ in range(entries)]
    valid = Signal(intbv(0)[entries:])
    oldest = Signal(intbv(0)[index_bits:])

    # The entries that match the request being accepted (`next_vpn`), registered with it, as the TLB's comparison
    # is: no entry is inserted between the two edges, and a flush at the accepting edge leaves none valid. The
    # walker reads the answer a cycle later still (in its START).
    next_vpn = lookup.next_vpn
    next_vpn_pde = Signal(intbv(0)[vpn_width:])
    next_vpn_pdpte = Signal(intbv(0)[vpn_width:])
    next_vpn_pml4e = Signal(intbv(0)[vpn_width:])
    next_matches = Signal(intbv(0)[entries:])
    prefix_hits = Signal(intbv(0)[entries:])  # the valid entries whose prefix holds `vpn` (`matches`: an SV keyword)
    choosing = Signal(bool(0))  # prefix_hits was loaded at the last edge: this is the MMU's LOOKUP
    next_hit_entry = Signal(intbv(0)[entries:])  # the entry hit, as one bit, or none, and its level below
    next_level = Signal(intbv(0)[LEVEL_WIDTH:])
    next_hit = Signal(bool(0))
    hit_entry = Signal(intbv(0)[entries:])  # ... registered as LOOKUP ends (the walker reads them in its START)
    pending = Signal(bool(0))  # the insert registered at the last edge, written at the next
    pending_level = Signal(intbv(0)[LEVEL_WIDTH:])
    pending_table = Signal(intbv(0)[table_width:])
    pending_table_in_ram = Signal(bool(0))
    pending_writable = Signal(bool(0))
    pending_user = Signal(bool(0))
    pending_no_execute = Signal(bool(0))
    full = Signal(bool(0))
    free_index = Signal(intbv(0)[index_bits:])
    insert_index = Signal(intbv(0)[index_bits:])
    pending_index = Signal(intbv(0)[index_bits:])  # insert_index, registered with the pending insert

    @always_comb
    def next_prefixes():
        # Sized literals (intbv(value)[width:]) and sized indices (intbv(i)[width:]) keep every expression of the
        # Verilog as wide as what receives it.
        next_vpn_pde.next = next_vpn & intbv(pde_prefix)[vpn_width:]
        next_vpn_pdpte.next = next_vpn & intbv(pdpte_prefix)[vpn_width:]
        next_vpn_pml4e.next = next_vpn & intbv(pml4e_prefix)[vpn_width:]

    @always_comb
    def compare():
        found = intbv(0)[entries:]
        for i in range(entries):
            if levels[i] == 2:
                found[i] = valid[i] and not flush and tags[i] == next_vpn_pde  # (a flush at this edge empties)
            elif levels[i] == 3:
                found[i] = valid[i] and not flush and tags[i] == next_vpn_pdpte
            else:
                found[i] = valid[i] and not flush and tags[i] == next_vpn_pml4e
        next_matches.next = found

    @always_comb
    def find_longest_prefix():
        # The deepest level that matches wins. One entry at most matches per level: an entry is inserted only for
        # a level below the walk's start, where no valid entry matched (else the walk would have started below
        # it), and only a flush removes entries. So the hit entry is one bit of `prefix_hits`, read as an OR of
        # the entries it selects, without an encoder or a priority chain.
        at_pde = intbv(0)[entries:]
        at_pdpte = intbv(0)[entries:]
        for i in range(entries):
            at_pde[i] = prefix_hits[i] and levels[i] == 2
            at_pdpte[i] = prefix_hits[i] and levels[i] == 3
        if at_pde != 0:
            next_hit_entry.next = at_pde
            next_level.next = 1
        elif at_pdpte != 0:
            next_hit_entry.next = at_pdpte
            next_level.next = 2
        else:
            next_hit_entry.next = prefix_hits  # PML4Es, if any
            next_level.next = 3
        next_hit.next = prefix_hits != 0

    @always_comb
    def read_hit():
        table_frame = intbv(0)[table_width:]  # (`table` is a Verilog keyword)
        in_ram = False
        entry_writable = False
        entry_user = False
        entry_no_execute = False
        for i in range(entries):
            if hit_entry[i]:
                table_frame[:] = table_frame | tables[i]
                in_ram = in_ram or bool(tables_in_ram[i])
                entry_writable = entry_writable or bool(writable[i])
                entry_user = entry_user or bool(user[i])
                entry_no_execute = entry_no_execute or bool(no_execute[i])
        lookup.table.next = table_frame
        lookup.table_in_ram.next = in_ram
        lookup.writable.next = entry_writable
        lookup.user.next = entry_user
        lookup.no_execute.next = entry_no_execute

    @always_comb
    def find_free_entry():
        is_full = True
        index = intbv(0)[index_bits:]
        for i in downrange(entries):
            if not valid[i]:
                is_full = False
                index[:] = intbv(i)[index_bits:]
        full.next = is_full
        free_index.next = index

    @always_comb
    def place_insert():
        if full:
            insert_index.next = oldest
        else:
            insert_index.next = free_index

    @always(clk.posedge)
    def update_entries():
        # One clocked block, with a synchronous reset (rst is active high) of the valid bits, the FIFO pointer, the
        # pending insert and `choosing` alone: the entries' contents are never reset, so they can map to RAM
        # (always_seq would reset every word). An insert is registered on its way in and written at the next edge,
        # so that nothing of the walker's decision reaches the entries' write enables in its cycle; the walk reads at
        # least one more entry before it ends, so the entry is there for the next lookup.
        if lookup.accept:  # the lookup of the request being accepted (never read before the first: no reset)
            prefix_hits.next = next_matches
        # The answer, chosen in the lookup cycle from the matches and registered: the walker starts a cycle later
        # and reads it then alone. It is loaded in that cycle only (an enable from a register; the registers a flag
        # sets and clears are assigned only then too), since MyHDL's simulator pays for every assignment.
        if choosing:
            hit_entry.next = next_hit_entry
            lookup.next_level.next = next_level
            lookup.hit.next = next_hit
        if rst:
            valid.next = 0
            oldest.next = 0
            pending.next = False
            choosing.next = False
        else:
            if lookup.accept:
                choosing.next = True
            elif choosing:
                choosing.next = False
            # (the walker's insert comes from its registers and its registered checks, two LUTs deep: a fine enable)
            if insert.valid:
                pending.next = True
                pending_level.next = insert.level
                pending_table.next = insert.table
                pending_table_in_ram.next = insert.table_in_ram
                pending_writable.next = insert.writable
                pending_user.next = insert.user
                pending_no_execute.next = insert.no_execute
                # (the entry it takes, from the valid bits and the FIFO pointer, which no walk changes: the entries'
                # write enables decode a register)
                pending_index.next = insert_index
            elif pending:
                pending.next = False
            if flush:
                valid.next = 0
            elif pending:
                levels[pending_index].next = pending_level
                # The tag is the VPN prefix of the entry's level, formed here: a combinational copy would follow every
                # lookup.
                if pending_level == 2:
                    tags[pending_index].next = vpn & intbv(pde_prefix)[vpn_width:]
                elif pending_level == 3:
                    tags[pending_index].next = vpn & intbv(pdpte_prefix)[vpn_width:]
                else:
                    tags[pending_index].next = vpn & intbv(pml4e_prefix)[vpn_width:]
                tables[pending_index].next = pending_table
                tables_in_ram[pending_index].next = pending_table_in_ram
                writable[pending_index].next = pending_writable
                user[pending_index].next = pending_user
                no_execute[pending_index].next = pending_no_execute
                valid_bits = intbv(0)[entries:]
                valid_bits[:] = valid
                valid_bits[pending_index] = True
                valid.next = valid_bits
                if full and oldest == last_entry:
                    oldest.next = 0
                elif full:
                    oldest.next = oldest + 1

    return next_prefixes, compare, find_longest_prefix, read_hit, find_free_entry, place_insert, update_entries
