"""Synthesizable: the TLB — `sets` × `ways` entries with PLRU, FIFO or RANDOM replacement per the behaviour contract.

Every entry compares its tag with the requested VPN at its own page size, all in parallel, as the MMU accepts the
request (hdl.interfaces.TlbLookup); in the lookup cycle the set's ways give the hit from that registered
comparison, and the same comparison finds every entry INVLPG (or a fault) must drop, in every set, since a huge
page may be splintered across several. Tags and translations are never reset (only the
valid and global bits are), so large TLBs can map to distributed RAM.
"""

from __future__ import annotations

from myhdl import Signal, SignalType, always, always_comb, always_seq, block, concat, downrange, intbv

from hdl.interfaces import PAGE_2M, PAGE_4K, PAGE_SIZE_CODE_WIDTH, TlbLookup, TlbUpdate, index_width
from hdl.protocol import LEVEL_BITS, LFSR_SEED, LFSR_TAPS, TlbPolicy

GROUP_WAYS = 4  # the lowest matching way is chosen within groups of this many ways, then among the groups


def tracks_hits(ways: int, policy: int) -> bool:
    """Whether the TLB reads `update.touch` (its hits): only PLRU with more than one way does."""
    return ways > 1 and policy == TlbPolicy.PLRU


@block
def tlb(
    clk: SignalType,
    rst: SignalType,
    lookup: TlbLookup,
    update: TlbUpdate,
    entries: int,
    ways: int,
    policy: int,
):
    """A TLB of `entries` in sets of `ways`, replacing by `policy` (a TlbPolicy): `lookup` answers for its VPN, and
    `update` changes the entries for that VPN (see the two bundles)."""
    vpn = lookup.vpn
    sets = entries // ways
    way_bits = index_width(ways)
    index_bits = index_width(entries)
    set_bits = (sets - 1).bit_length()  # log2(sets)
    way_shift = (ways - 1).bit_length()  # log2(ways): entry index = set << way_shift | way
    plru_levels = way_shift
    vpn_width = len(vpn)
    frame_bits = len(lookup.frame)
    last_way = ways - 1
    all_vpn_bits = (1 << vpn_width) - 1
    base_2m_mask = all_vpn_bits & ~((1 << LEVEL_BITS) - 1)  # the VPN bits that name a 2 MiB page
    base_1g_mask = all_vpn_bits & ~((1 << (2 * LEVEL_BITS)) - 1)
    huge_1g_bits = 2 * LEVEL_BITS  # VPN bits within a 1 GiB page
    is_fifo = policy == TlbPolicy.FIFO

    # Entry storage: tags and translations are plain memories; valid and global bits are vectors so flushes are
    # one AND each.
    tags = [Signal(intbv(0)[vpn_width:]) for _ in range(entries)]
    sizes = [Signal(intbv(0)[PAGE_SIZE_CODE_WIDTH:]) for _ in range(entries)]
    frames = [Signal(intbv(0)[frame_bits:]) for _ in range(entries)]
    # The permissions and the page-size class as vectors, one bit per entry: every entry's access check is a few
    # vector operations rather than a loop over the entries.
    writable = Signal(intbv(0)[entries:])
    user = Signal(intbv(0)[entries:])
    no_execute = Signal(intbv(0)[entries:])
    dirty = Signal(intbv(0)[entries:])
    in_ram = Signal(intbv(0)[entries:])
    is_4k = Signal(intbv(0)[entries:])
    is_2m = Signal(intbv(0)[entries:])
    valid = Signal(intbv(0)[entries:])
    global_ = Signal(intbv(0)[entries:])

    vpn_2m = Signal(intbv(0)[vpn_width:])  # `vpn` with the bits inside a 2 MiB page cleared
    vpn_1g = Signal(intbv(0)[vpn_width:])
    # The lookup of the request being accepted (`next_vpn`, and the access on the request port), registered with
    # it: per way of its set, whether the entry holds the page and what it would allow. `valid_after` is `valid` as
    # the flush or drop carried out at this edge leaves it, so that the registered matches hold in the next cycle.
    next_vpn = lookup.next_vpn
    next_set_index = Signal(intbv(0)[index_width(sets):])
    next_set_base = Signal(intbv(0)[index_bits:])  # index of way 0 of the set
    next_tag_matches = Signal(intbv(0)[entries:])  # entries whose tag holds `next_vpn`, valid or not
    next_permits = Signal(intbv(0)[entries:])  # entries that would allow the access asked for
    next_clean = Signal(intbv(0)[entries:])  # ... whose D a store would have to set
    next_in_ram = Signal(intbv(0)[entries:])  # ... whose translation of `next_vpn` lies within the RAM
    valid_after = Signal(intbv(0)[entries:])
    next_way_matches = Signal(intbv(0)[ways:])
    group_size = min(ways, GROUP_WAYS)  # (ways is a power of two: every group is full)
    groups = ways // group_size
    next_group_lowest = Signal(intbv(0)[ways:])  # per group of ways, its lowest-numbered way of next_way_matches
    next_group_any = Signal(intbv(0)[groups:])  # the groups with a way in next_way_matches
    next_way_permits = Signal(intbv(0)[ways:])
    next_way_dirty_first = Signal(intbv(0)[ways:])  # permits, but D must be set first
    next_way_usable = Signal(intbv(0)[ways:])  # permits as it is, in RAM: the access can start
    next_way_in_ram = Signal(intbv(0)[ways:])
    set_index = Signal(intbv(0)[index_width(sets):])  # registered: of `vpn`
    set_base = Signal(intbv(0)[index_bits:])
    tag_matches = Signal(intbv(0)[entries:])  # the entries whose tag holds `vpn`
    page_matches = Signal(intbv(0)[entries:])  # valid entries (of any set) whose page holds `vpn`
    group_lowest = Signal(intbv(0)[ways:])  # registered: of `vpn`
    group_any = Signal(intbv(0)[groups:])
    lowest_match = Signal(intbv(0)[ways:])  # the lowest-numbered of the set's valid ways that hold `vpn`, alone
    way_permits = Signal(intbv(0)[ways:])
    way_dirty_first = Signal(intbv(0)[ways:])
    way_usable = Signal(intbv(0)[ways:])
    way_in_ram = Signal(intbv(0)[ways:])
    hit_way = Signal(intbv(0)[way_bits:])
    hit_index = Signal(intbv(0)[index_bits:])
    kept_index = Signal(intbv(0)[index_bits:])  # hit_index, registered: the entry a refresh rewrites
    full = Signal(bool(0))
    free_way = Signal(intbv(0)[way_bits:])
    victim_way = Signal(intbv(0)[way_bits:])
    fill_way = Signal(intbv(0)[way_bits:])  # registered (update_entries)
    fill_index = Signal(intbv(0)[index_bits:])

    # Widths: constants are sized literals (intbv(value)[width:]), indices are concatenations, and each variant of
    # the geometry (one set, one way, both) gets its own block, so every expression in the Verilog has the width of
    # what receives it (verilator -Wall, without waivers).
    @always_comb
    def split_vpn():
        vpn_2m.next = vpn & intbv(base_2m_mask)[vpn_width:]
        vpn_1g.next = vpn & intbv(base_1g_mask)[vpn_width:]

    if sets > 1:

        @always_comb
        def select_set():
            # Bit by bit: `next_vpn` is a slice of the MMU's request port, which the Verilog cannot slice again.
            index = intbv(0)[set_bits:]
            for b in range(set_bits):
                index[b] = ((next_vpn >> b) & 1) == 1
            next_set_index.next = index

    else:
        select_set = ()  # one set: the set indices stay 0

    if sets > 1 and ways > 1:

        @always_comb
        def locate_set():
            next_set_base.next = concat(next_set_index, intbv(0)[way_shift:])

    elif sets > 1:

        @always_comb
        def locate_set():
            next_set_base.next = next_set_index

    else:
        locate_set = ()

    @always_comb
    def compare():
        # The request's page against every tag at the entry's page size (a tag's bits inside its page are zero).
        # One comparator per entry, in three parts: the bits above a 1 GiB page always count, those within one
        # only below 1 GiB, those within a 2 MiB page only at 4 KiB.
        found = intbv(0)[entries:]
        differing = intbv(0)[vpn_width:]
        for i in range(entries):
            entry_size = sizes[i]
            differing[:] = tags[i] ^ next_vpn
            huge_1g = entry_size != PAGE_4K and entry_size != PAGE_2M
            found[i] = (differing[vpn_width:huge_1g_bits] == 0
                        and (huge_1g or differing[huge_1g_bits:LEVEL_BITS] == 0)
                        and (entry_size != PAGE_4K or differing[LEVEL_BITS:0] == 0))
        next_tag_matches.next = found

    @always_comb
    def check_access():
        # Every entry checks the access as if it were the hit, in parallel with the comparison; the lookup cycle
        # only picks the hit's answers.
        permits = intbv(0)[entries:]
        permits[:] = ~intbv(0)[entries:]
        clean = intbv(0)[entries:]
        if lookup.next_store:
            permits[:] = permits & writable
            clean[:] = ~dirty
        if lookup.next_user:
            permits[:] = permits & user
        if lookup.next_fetch:
            permits[:] = permits & ~no_execute
        granule_in_ram = intbv(0)[entries:]
        granule_in_ram[:] = is_4k
        if lookup.next_in_ram_2m:
            granule_in_ram[:] = granule_in_ram | is_2m
        if lookup.next_in_ram_1g:
            granule_in_ram[:] = granule_in_ram | (~is_4k & ~is_2m)
        next_permits.next = permits
        next_clean.next = clean
        next_in_ram.next = granule_in_ram & in_ram

    @always_comb
    def invalidate():
        # What the maintenance command of this cycle, if any, leaves valid at the edge.
        if update.flush_all:
            valid_after.next = 0
        elif update.flush_non_global:
            valid_after.next = valid & global_
        elif update.drop:
            valid_after.next = valid & ~page_matches
        else:
            valid_after.next = valid

    if sets > 1:

        @always_comb
        def gather_set():
            # The set's ways, from the entries.
            found = intbv(0)[ways:]
            permits = intbv(0)[ways:]
            dirty_first = intbv(0)[ways:]
            usable = intbv(0)[ways:]
            granule_in_ram = intbv(0)[ways:]
            for w in range(ways):
                found[w] = (next_tag_matches[next_set_base + intbv(w)[index_bits:]]
                            and valid_after[next_set_base + intbv(w)[index_bits:]])
                permits[w] = next_permits[next_set_base + intbv(w)[index_bits:]]
                dirty_first[w] = (next_permits[next_set_base + intbv(w)[index_bits:]]
                                  and next_clean[next_set_base + intbv(w)[index_bits:]])
                usable[w] = (next_permits[next_set_base + intbv(w)[index_bits:]]
                             and not next_clean[next_set_base + intbv(w)[index_bits:]]
                             and next_in_ram[next_set_base + intbv(w)[index_bits:]])
                granule_in_ram[w] = next_in_ram[next_set_base + intbv(w)[index_bits:]]
            next_way_matches.next = found
            next_way_permits.next = permits
            next_way_dirty_first.next = dirty_first
            next_way_usable.next = usable
            next_way_in_ram.next = granule_in_ram

    else:

        @always_comb
        def gather_set():
            # One set: its ways are the entries (a loop per way would cost MyHDL's simulator a fifth of its time).
            next_way_matches.next = next_tag_matches & valid_after
            next_way_permits.next = next_permits
            next_way_dirty_first.next = next_permits & next_clean
            next_way_usable.next = next_permits & ~next_clean & next_in_ram
            next_way_in_ram.next = next_in_ram

    @always_comb
    def choose_lowest():
        # The lowest-numbered matching way wins (ways overlap after the tables change under a cached translation).
        # It is chosen in two steps, so that neither lengthens its cycle by more than a LUT: as the request is
        # accepted, the lowest matching way within each group of GROUP_WAYS ways (and whether the group matches),
        # registered with the rest of its lookup; in the lookup cycle, that of the lowest matching group
        # (finish_lowest). Written as AND trees, which synthesis balances (a chain of choices it would keep as a
        # chain): each way is the lowest if it matches and no way below it does.
        first = intbv(0)[ways:]
        found = intbv(0)[groups:]
        for g in range(groups):
            below = False
            for w in range(g * group_size, (g + 1) * group_size):
                first[w] = next_way_matches[w] and not below
                below = below or bool(next_way_matches[w])
            found[g] = below
        next_group_lowest.next = first
        next_group_any.next = found

    @always_comb
    def finish_lowest():
        # group_lowest with the ways of every group above the lowest matching one cleared (which only a group
        # that matches has set: the loop clears bits only when ways overlap, rare, as MyHDL's simulator pays per bit).
        lowest = intbv(0)[ways:]
        lowest[:] = group_lowest
        below = False
        for g in range(groups):
            clear = below and bool(group_any[g])
            for w in range(g * group_size, (g + 1) * group_size):  # (a loop run whole: Yosys infers no latch)
                if clear:
                    lowest[w] = False
            below = below or bool(group_any[g])
        lowest_match.next = lowest

    @always_comb
    def select_hit():
        # The hit way's number: the OR of the bits of the one way in lowest_match.
        way = intbv(0)[way_bits:]
        for b in range(way_bits):
            set_bit = False  # (`bit` is a SystemVerilog keyword)
            for w in range(ways):
                if ((w >> b) & 1) == 1:
                    set_bit = set_bit or bool(lowest_match[w])
            way[b] = set_bit
        hit_way.next = way

    @always_comb
    def answer_hit():
        lookup.hit.next = group_any != 0
        lookup.permitted.next = (lowest_match & way_permits) != 0
        lookup.needs_dirty.next = (lowest_match & way_dirty_first) != 0
        lookup.usable.next = (lowest_match & way_usable) != 0
        lookup.in_ram.next = (lowest_match & way_in_ram) != 0

    if sets > 1 and ways > 1 and policy != TlbPolicy.RANDOM:  # only PLRU's and FIFO's state is kept per set

        @always_seq(clk.posedge, reset=rst)
        def register_set():
            if lookup.accept:
                set_index.next = next_set_index

    else:
        register_set = ()

    @always_comb
    def match_valid():
        page_matches.next = tag_matches & valid

    # An entry's index: its set's base with the way in the low bits.
    if index_bits > way_bits:

        @always_comb
        def index_hit():
            hit_index.next = set_base | concat(intbv(0)[index_bits - way_bits:], hit_way)

    else:

        @always_comb
        def index_hit():
            hit_index.next = set_base | hit_way

    @always_comb
    def read_hit():
        lookup.frame.next = frames[hit_index]
        lookup.size.next = sizes[hit_index]

    @always_comb
    def find_free_way():
        is_full = True
        way = intbv(0)[way_bits:]
        for w in downrange(ways):
            if not valid[set_base + intbv(w)[index_bits:]]:
                is_full = False
                way[:] = intbv(w)[way_bits:]
        full.next = is_full
        free_way.next = way

    if index_bits > way_bits:

        @always_comb
        def index_fill():
            fill_index.next = set_base | concat(intbv(0)[index_bits - way_bits:], fill_way)

    else:

        @always_comb
        def index_fill():
            fill_index.next = set_base | fill_way

    @always_comb
    def report_eviction():
        update.evict.next = full
        update.evict_vpn.next = tags[fill_index]

    @always(clk.posedge)
    def update_entries():
        # One clocked block for the entries, with a synchronous reset (rst is active high) of the valid and global
        # bits alone: tags and translations are never reset, so a large TLB can map to RAM (always_seq would reset
        # every word).
        # The way a fill would take is registered in every cycle: nothing changes the set's valid bits or its
        # replacement state during a walk (fills end walks), so at the walk's end it is the way of the cycle before,
        # and the fill's write enables wait for no search of the set.
        if full:
            fill_way.next = victim_way
        else:
            fill_way.next = free_way
        kept_index.next = hit_index  # (a refresh ends a walk, long after the lookup that chose the entry)
        # The lookup of the request being accepted (never read before the first: no reset).
        if lookup.accept:
            tag_matches.next = next_tag_matches
            group_lowest.next = next_group_lowest
            group_any.next = next_group_any
            way_permits.next = next_way_permits
            way_dirty_first.next = next_way_dirty_first
            way_usable.next = next_way_usable
            way_in_ram.next = next_way_in_ram
            set_base.next = next_set_base
        if rst:
            valid.next = 0
            global_.next = 0
        elif update.flush_all or update.flush_non_global or update.drop:
            valid.next = valid_after
        elif update.fill or update.refresh:
            index = intbv(0)[index_bits:]
            if update.fill:
                index[:] = fill_index
            else:
                index[:] = kept_index
            # The tag is the VPN at the page's size, formed here: a combinational copy would follow every lookup.
            if update.fill_size == PAGE_4K:
                tags[index].next = vpn
            elif update.fill_size == PAGE_2M:
                tags[index].next = vpn_2m
            else:
                tags[index].next = vpn_1g
            sizes[index].next = update.fill_size
            frames[index].next = update.fill_frame
            bits = intbv(0)[entries:]
            bits[:] = writable
            bits[index] = update.fill_writable
            writable.next = bits
            bits[:] = user
            bits[index] = update.fill_user
            user.next = bits
            bits[:] = no_execute
            bits[index] = update.fill_no_execute
            no_execute.next = bits
            bits[:] = dirty
            bits[index] = update.fill_dirty
            dirty.next = bits
            bits[:] = in_ram
            bits[index] = update.fill_frame_in_ram
            in_ram.next = bits
            bits[:] = is_4k
            bits[index] = update.fill_size == PAGE_4K
            is_4k.next = bits
            bits[:] = is_2m
            bits[index] = update.fill_size == PAGE_2M
            is_2m.next = bits
            valid_bits = intbv(0)[entries:]
            valid_bits[:] = valid
            valid_bits[index] = True
            valid.next = valid_bits
            global_bits = intbv(0)[entries:]
            global_bits[:] = global_
            global_bits[index] = update.fill_global
            global_.next = global_bits

    # The victim of a full set, and the policy's state updates; a one-way set has no choice to make.
    replacement = []
    if tracks_hits(ways, policy):
        plru = [Signal(intbv(0)[ways:]) for _ in range(sets)]  # tree bits per set, heap-ordered from bit 1
        touched_way = Signal(intbv(0)[way_bits:])
        touched_plru = Signal(intbv(0)[ways:])  # the set's tree bits after a touch or fill of touched_way

        # Heap indices of the inner nodes are 1..ways-1, so `node` has log2(ways) bits; a node's child is the node
        # shifted left with the chosen half in bit 0, and at the last level that is the way itself (the leaf's heap
        # index minus `ways`: the top bit, always 1, falls off).
        if ways > 2:

            @always_comb
            def choose_plru_victim():
                # Follow the tree bits from the root: each node points at the half holding the victim.
                bits = intbv(0)[ways:]
                bits[:] = plru[set_index]
                node = intbv(1)[way_shift:]
                for _ in range(plru_levels):
                    node[:] = concat(node[way_shift - 1:0], bits[node])
                victim_way.next = node

        else:

            @always_comb
            def choose_plru_victim():
                victim_way.next = plru[set_index][1]  # the root is the only node

        @always_comb
        def choose_touched_way():
            if update.fill:
                touched_way.next = fill_way
            else:
                touched_way.next = hit_way

        if ways > 2:

            @always_comb
            def point_plru_away():
                # Walk from the root to the touched way's leaf, pointing each node at the other half.
                bits = intbv(0)[ways:]
                bits[:] = plru[set_index]
                node = intbv(1)[way_shift:]
                for level in range(plru_levels):
                    went_right = touched_way[way_shift - 1 - level]
                    bits[node] = not went_right
                    node[:] = concat(node[way_shift - 1:0], went_right)
                touched_plru.next = bits

        else:

            @always_comb
            def point_plru_away():
                bits = intbv(0)[ways:]
                bits[:] = plru[set_index]
                bits[1] = not touched_way[0]
                touched_plru.next = bits

        @always_seq(clk.posedge, reset=rst)
        def update_plru():
            if update.touch or update.fill:
                plru[set_index].next = touched_plru

        replacement = [choose_plru_victim, choose_touched_way, point_plru_away, update_plru]

    elif ways > 1 and is_fifo:
        fifo = [Signal(intbv(0)[way_bits:]) for _ in range(sets)]  # the oldest fill's way, per set

        @always_comb
        def choose_fifo_victim():
            victim_way.next = fifo[set_index]

        @always_seq(clk.posedge, reset=rst)
        def advance_fifo():
            if update.fill and full:
                if fifo[set_index] == last_way:
                    fifo[set_index].next = 0
                else:
                    fifo[set_index].next = fifo[set_index] + 1

        replacement = [choose_fifo_victim, advance_fifo]

    elif ways > 1:
        lfsr = Signal(intbv(LFSR_SEED)[16:])  # one for all sets

        @always_comb
        def choose_random_victim():
            victim_way.next = lfsr[way_bits:]  # lfsr & (ways - 1)

        @always_seq(clk.posedge, reset=rst)
        def step_lfsr():
            if update.fill and full:
                if lfsr[0]:
                    lfsr.next = (lfsr >> 1) ^ LFSR_TAPS
                else:
                    lfsr.next = lfsr >> 1

        replacement = [choose_random_victim, step_lfsr]

    return (split_vpn, select_set, locate_set, compare, check_access, invalidate, gather_set, choose_lowest,
            finish_lowest, select_hit, answer_hit, register_set, match_valid, index_hit, read_hit, find_free_way,
            index_fill, report_eviction, update_entries, replacement)
