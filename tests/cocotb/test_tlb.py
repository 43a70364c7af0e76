"""The TLB block (hdl/tlb.py) against a Python model of the contract's lookup, fill and replacement rules.

The environment drives the TLB as hdl/mmu.py does, deciding from the TLB's answers as the MMU would. A request is
accepted (`lookup_accept`, with its page on `lookup_next_vpn` and its access on `lookup_next_store`, `_user`,
`_fetch`, `_in_ram_2m`, `_in_ram_1g`; all random in other cycles): the tags are compared and every entry checks the
access at that edge, after the drop or flush carried out there. From the next cycle (LOOKUP) on, with `lookup_vpn`
the accepted page, the lowest-numbered matching way answers (hit, permitted, needs_dirty, in_ram, usable, frame,
size) until a command other than a touch changes the entries; before the first accept nothing is defined (the
registered lookup has no reset). In LOOKUP a hit is touched; a miss walks and fills in the walk's last cycle; a hit
that needs D set walks and refreshes it in place; a denied hit drops. A walk lasts six cycles or more, as the
MMU's do, so that the fill way and the refreshed entry, registered in every cycle, are those of the lookup. A drop
(INVLPG, a denied hit, a failed walk) or a flush (FLUSH, a CR3 write) is decided in LOOKUP or the walk's last cycle
and carried out at the end of the next, which may be the next request's accepting cycle. Fills, refreshes and
touches never fall in an accepting cycle. The eviction answer is checked in every cycle after the first accept, and
the evicted page whenever the previous edge changed nothing (the fill way is registered).

Both the cocotb module (run inside the simulator) and its pytest entry `test_tlb_runner`, which converts the block
for each parameter point, runs these scenarios on Verilator and Icarus, and again on the MyHDL block.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import DEFAULT_MAXPHYADDR, LFSR_SEED, LFSR_TAPS, VPN_WIDTH, TlbPolicy, frame_width

SIZE_SHIFT = (0, 9, 18)  # VPN bits inside a page of each TLB size code (4 KiB, 2 MiB, 1 GiB)
SIZE_NAMES = ("4 KiB", "2 MiB", "1 GiB")
COMMANDS = ("touch", "fill", "refresh", "drop", "flush_all", "flush_non_global")
MAINTENANCE = ("drop", "flush_all", "flush_non_global")  # carried out at the end of the cycle after their decision
FILL_FIELDS = ("frame", "size", "writable", "user", "no_execute", "global", "dirty", "frame_in_ram")
ANSWERS = ("permitted", "needs_dirty", "in_ram", "usable")
# How often an entry's flags (writable, user, no_execute, global, dirty, in_ram) and an access's (store, user, fetch,
# in_ram_2m, in_ram_1g) are set: mostly permissive, as page tables are, so that hits are often usable as well as
# denied, outside the RAM, or in need of D.
ENTRY_FLAG_CHANCES = (0.75, 0.75, 0.25, 0.5, 0.5, 0.75)
ACCESS_CHANCES = (0.5, 0.5, 0.25, 0.75, 0.75)


@dataclasses.dataclass(frozen=True)
class Access:
    """The access of a request, as the MMU decodes it from its port for the TLB's checks."""

    store: bool
    user: bool
    fetch: bool
    in_ram_2m: bool  # the offset of the address inside its 2 MiB page is below the RAM's size
    in_ram_1g: bool

    @classmethod
    def of(cls, inputs: dict[str, int]) -> Access:
        """The access on the `lookup_next_*` inputs."""
        return cls(*(bool(inputs[f"lookup_next_{field.name}"]) for field in dataclasses.fields(cls)))

    def inputs(self) -> dict[str, int]:
        """The access as the `lookup_next_*` inputs."""
        return {f"lookup_next_{field.name}": getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass
class Entry:
    tag: int  # base VPN of the page
    size: int
    frame: int
    writable: bool
    user: bool
    no_execute: bool
    global_: bool
    dirty: bool
    in_ram: bool  # the frame lies within the RAM, as the fill found it

    def holds(self, vpn: int) -> bool:
        return vpn >> SIZE_SHIFT[self.size] == self.tag >> SIZE_SHIFT[self.size]

    def answers(self, access: Access) -> dict[str, bool]:
        """What the entry, as the hit, says of `access` (the `lookup_*` answers of ANSWERS)."""
        permitted = ((not access.store or self.writable) and (not access.user or self.user)
                     and (not access.fetch or not self.no_execute))
        needs_dirty = permitted and access.store and not self.dirty
        in_ram = self.in_ram and (True, access.in_ram_2m, access.in_ram_1g)[self.size]
        usable = permitted and not needs_dirty and in_ram
        return {"permitted": permitted, "needs_dirty": needs_dirty, "in_ram": in_ram, "usable": usable}

    def fill_inputs(self) -> dict[str, int]:
        """The entry as the `update_fill_*` inputs."""
        fields = (self.frame, self.size, self.writable, self.user, self.no_execute, self.global_, self.dirty,
                  self.in_ram)
        return {f"update_fill_{name}": value for name, value in zip(FILL_FIELDS, fields, strict=True)}


class TlbModel:
    """The contract's TLB: sets x ways, lowest invalid way first, then PLRU / FIFO / RANDOM."""

    def __init__(self, entries: int, ways: int, policy: int) -> None:
        self.ways, self.sets, self.policy = ways, entries // ways, policy
        self.slots: list[list[Entry | None]] = [[None] * ways for _ in range(self.sets)]
        self.plru = [0] * self.sets  # tree bits, node n at bit n (node 1 is the root)
        self.fifo = [0] * self.sets
        self.lfsr = LFSR_SEED

    def set_of(self, vpn: int) -> list[Entry | None]:
        return self.slots[vpn & (self.sets - 1)]

    def matches(self, vpn: int) -> list[int]:
        """The ways of `vpn`'s set whose page holds it, lowest first."""
        return [w for w, e in enumerate(self.set_of(vpn)) if e is not None and e.holds(vpn)]

    def lookup(self, vpn: int) -> int | None:
        """The way of the hit (lowest-numbered match), or None."""
        return next(iter(self.matches(vpn)), None)

    def victim(self, vpn: int) -> int | None:
        """The way a fill replaces when the set is full; None when a way is free."""
        if None in self.set_of(vpn):
            return None
        if self.ways == 1:
            return 0
        index = vpn & (self.sets - 1)
        if self.policy == TlbPolicy.FIFO:
            return self.fifo[index]
        if self.policy == TlbPolicy.RANDOM:
            return self.lfsr & (self.ways - 1)
        node = 1
        while node < self.ways:
            node = 2 * node + (self.plru[index] >> node & 1)
        return node - self.ways

    def point_away(self, vpn: int, way: int) -> None:
        if self.policy != TlbPolicy.PLRU or self.ways == 1:
            return
        index, node, levels = vpn & (self.sets - 1), 1, self.ways.bit_length() - 1
        for level in range(levels):
            went_right = way >> (levels - 1 - level) & 1
            self.plru[index] = self.plru[index] & ~(1 << node) | (1 - went_right) << node
            node = 2 * node + went_right

    def fill(self, vpn: int, entry: Entry) -> None:
        ways = self.set_of(vpn)
        victim = self.victim(vpn)
        way = ways.index(None) if victim is None else victim
        ways[way] = entry
        self.point_away(vpn, way)
        if victim is not None and self.policy == TlbPolicy.FIFO:
            index = vpn & (self.sets - 1)
            self.fifo[index] = (self.fifo[index] + 1) % self.ways
        elif victim is not None and self.policy == TlbPolicy.RANDOM:
            self.lfsr = self.lfsr >> 1 ^ (LFSR_TAPS if self.lfsr & 1 else 0)

    def drop(self, vpn: int) -> None:
        for ways in self.slots:
            for w, e in enumerate(ways):
                if e is not None and e.holds(vpn):
                    ways[w] = None

    def flush(self, keep_global: bool) -> None:
        for ways in self.slots:
            for w, e in enumerate(ways):
                if e is not None and not (keep_global and e.global_):
                    ways[w] = None


class TlbEnvironment(tb.ScriptedEnvironment):
    """`requests` requests with idle gaps over a small pool of VPNs (so sets fill and evict; within a 1 GiB region
    they differ in the VPN bits of the mask `spread`), `repeat` of them in the previous request's page or its 2 MiB
    page, each of a kind drawn from `weights` and with a random access:

    `access` translates, and the TLB's answers decide what follows, as in the MMU: a usable hit, or one outside the
    RAM, is touched; a denied hit is touched and dropped; a hit that needs D set is touched, walks and is refreshed;
    a miss walks and fills, with a page of 4 KiB, 2 MiB or 1 GiB drawn from the weights `sizes`. A walk fails (and
    drops) with probability `failing`. `invlpg` is a drop, `flush_all` and `flush_non_global` (a FLUSH, a CR3 write)
    the flushes; `other` a request that neither translates nor maintains.

    Checks the lookup in every cycle it is defined, and the eviction answer, against TlbModel.
    """

    outputs = ("lookup_hit", "lookup_frame", "lookup_size", *(f"lookup_{answer}" for answer in ANSWERS),
               "update_evict", "update_evict_vpn")

    def __init__(self, params: dict[str, Any], seed: int, requests: int, pool: int, weights: dict[str, int],
                 idle: float, repeat: float, failing: float, sizes: tuple[int, int, int], spread: int,
                 required: tuple[str, ...]) -> None:
        super().__init__(seed, set(required))
        self.model = TlbModel(params["entries"], params["ways"], params["policy"])
        self.frame_bits = frame_width(DEFAULT_MAXPHYADDR)
        self.weights, self.idle, self.repeat, self.failing, self.sizes = weights, idle, repeat, failing, sizes
        # VPNs in a few 1 GiB regions, differing in the bits of `spread`, so 2 MiB and 1 GiB pages overlap some of
        # the 4 KiB ones
        regions = [self.rng.getrandbits(VPN_WIDTH - 18) << 18 for _ in range(3)]
        self.pool = [self.rng.choice(regions) | self.rng.getrandbits(18) & spread for _ in range(pool)]
        # The lookup as the block holds it: the registered VPN and access, and the way it hit, registered with them
        # (valid while `answered`: from the first accept until a command other than a touch changes the entries).
        self.vpn = 0
        self.access = self._access()
        self.way: int | None = None
        self.answered = False
        self.accepted_once = False  # before the first accept, the registered set (and so the eviction) is undefined
        self.settled = False  # the last edge accepted nothing and carried out no command (the fill way holds)
        self.entry: Entry | None = None  # on the fill inputs this cycle
        self.cycles = self._cycles(requests)

    def _entry(self, vpn: int) -> Entry:
        size = self.rng.choices((0, 1, 2), weights=self.sizes)[0]
        frame = self.rng.getrandbits(self.frame_bits) >> SIZE_SHIFT[size] << SIZE_SHIFT[size]
        flags = (self.rng.random() < chance for chance in ENTRY_FLAG_CHANCES)
        return Entry(vpn >> SIZE_SHIFT[size] << SIZE_SHIFT[size], size, frame, *flags)

    def _access(self) -> Access:
        return Access(*(self.rng.random() < chance for chance in ACCESS_CHANCES))

    def _cycle(self, accept: int | None = None, command: str | None = None) -> dict[str, int]:
        """One cycle's inputs: the request port's page and access (accepted, or whatever is on it), the registered
        page, at most one command, and the fill inputs (the walker's result: any value outside a fill or refresh)."""
        inputs = {f"update_{name}": name == command for name in COMMANDS}
        self.entry = self._entry(self.vpn)
        inputs |= {"lookup_vpn": self.vpn, "lookup_accept": accept is not None,
                   "lookup_next_vpn": self.rng.getrandbits(VPN_WIDTH) if accept is None else accept}
        return inputs | self._access().inputs() | self.entry.fill_inputs()

    def _hit(self) -> Entry | None:
        return None if self.way is None else self.model.set_of(self.vpn)[self.way]

    def _cycles(self, requests: int) -> Iterator[dict[str, int]]:
        """The scenario, cycle by cycle, as the MMU runs requests: idle cycles, the accepting one, LOOKUP, maybe a
        walk, and the maintenance command carried out in the cycle after the decision."""
        carried = None  # a drop or flush decided, to be carried out at the end of the next cycle
        vpn = self.rng.choice(self.pool)
        for _ in range(requests):
            for _ in range(self.gap(2, self.idle)):
                yield self._cycle(command=carried)
                carried = None
            if self.rng.random() >= self.repeat:
                vpn = self.rng.choice(self.pool)
            elif self.rng.random() < 0.5:
                vpn ^= self.rng.getrandbits(SIZE_SHIFT[1])  # another 4 KiB page of the same 2 MiB one
            yield self._cycle(accept=vpn, command=carried)
            carried = None
            kind = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            hit = self._hit()
            answers = None if hit is None else hit.answers(self.access)
            translates = kind == "access"
            yield self._cycle(command="touch" if translates and hit else None)  # LOOKUP
            if translates and (hit is None or answers["needs_dirty"]):
                for _ in range(self.rng.randint(5, 8)):  # START, READ, WAIT, ...
                    yield self._cycle()
                if self.rng.random() < self.failing:  # DONE, of a failed walk
                    yield self._cycle()
                    carried = "drop"
                else:
                    yield self._cycle(command="fill" if hit is None else "refresh")
            elif kind == "invlpg" or (translates and not answers["permitted"]):  # INVLPG, or a denied hit
                carried = "drop"
            elif kind in MAINTENANCE:
                carried = kind

    def sample(self, values: dict[str, int | None]) -> None:
        model, vpn = self.model, self.vpn
        if self.answered:
            hit = self._hit()
            self.expect("hit", values["lookup_hit"], hit is not None)
            if hit is not None:
                for port, want in (("lookup_frame", hit.frame), ("lookup_size", hit.size),
                                   *((f"lookup_{name}", want) for name, want in hit.answers(self.access).items())):
                    self.expect(port, values[port], want)
        victim = model.victim(vpn)
        if self.accepted_once:
            self.expect("evict", values["update_evict"], victim is not None)
        if victim is not None and self.settled:
            self.expect("evict_vpn", values["update_evict_vpn"], model.set_of(vpn)[victim].tag)
        # The clock edge: the command, for the registered page; then the comparison with the accepted page, which
        # sees what a drop or flush at this edge leaves.
        inputs = self.inputs
        command = next((name for name in COMMANDS if inputs[f"update_{name}"]), None)
        accepted = inputs["lookup_next_vpn"] if inputs["lookup_accept"] else None
        if command == "touch":
            model.point_away(vpn, self.way)
        elif command == "fill":
            if victim is not None:
                self.seen.add("an evicting fill")
            model.fill(vpn, self.entry)
        elif command == "refresh":
            self.seen.add("a refresh")
            model.set_of(vpn)[self.way] = self.entry
        elif command in MAINTENANCE:
            held = accepted is not None and model.lookup(accepted) is not None
            if command == "drop":
                model.drop(vpn)
            else:
                model.flush(keep_global=command == "flush_non_global")
            if held and model.lookup(accepted) is None:
                self.seen.add(f"a hit removed by a {command} at the accepting edge")
        if command not in (None, "touch"):
            self.answered = False
        self.settled = command is None and accepted is None
        if accepted is not None:
            self.vpn, self.way, self.answered, self.accepted_once = accepted, model.lookup(accepted), True, True
            self.access = Access.of(inputs)
            self._note_hit()

    def _note_hit(self) -> None:
        """Record the situations the accepted lookup meets (for `required`)."""
        hit = self._hit()
        if hit is None:
            return
        answers = hit.answers(self.access)
        self.seen.add(f"a {SIZE_NAMES[hit.size]} page's hit")
        if hit.size and hit.in_ram and not answers["in_ram"]:
            self.seen.add("a huge page's hit whose offset lies beyond the RAM")
        if not answers["permitted"]:
            self.seen.add("a denied hit")
        if answers["needs_dirty"]:
            self.seen.add("a hit that needs D set")
        if answers["permitted"] and not answers["needs_dirty"] and not answers["in_ram"]:
            self.seen.add("a permitted hit outside the RAM")
        if answers["usable"]:
            self.seen.add("a usable hit")
        ways = self.model.set_of(self.vpn)
        if any(ways[w].answers(self.access) != answers or ways[w].frame != hit.frame
               for w in self.model.matches(self.vpn)):
            self.seen.add("a hit among matching ways that answer differently")


# The situations of the lookup's answers a scenario can require (TlbEnvironment._note_hit)
EVERY_ANSWER = (*(f"a {name} page's hit" for name in SIZE_NAMES), "a denied hit", "a hit that needs D set",
                "a permitted hit outside the RAM", "a huge page's hit whose offset lies beyond the RAM", "a usable hit")


def _scenario(requests: int, pool: int, idle: float = 0.3, repeat: float = 0.2, failing: float = 0.1, seed: int = 1,
              sizes: tuple[int, int, int] = (6, 2, 1), spread: int = 0xFFF, required: tuple[str, ...] = (),
              **weights: int) -> Any:
    return lambda params: TlbEnvironment(params, params.get("seed", 0) * 1000 + seed, requests, pool, weights, idle,
                                         repeat, failing, sizes, spread, required)


SCENARIOS = {
    # more pages than entries: sets fill up, and the policy picks victims again and again
    # (and every page size and answer is met)
    "fills_evict_by_policy": _scenario(200, 40, access=6, other=1, required=("an evicting fill", *EVERY_ANSWER)),
    # hits reorder PLRU; touches between fills decide the next victim
    "hits_steer_the_victim": _scenario(200, 12, idle=0.0, repeat=0.4, seed=2, access=6, other=1,
                                       required=("an evicting fill",)),
    # INVLPG-style drops of every entry holding a page, refreshes in place, and both flushes (globals survive one),
    # many at the next request's accepting edge, whose lookup must not hit what they removed
    "drops_refreshes_and_flushes": _scenario(
        400, 24, idle=0.1, repeat=0.5, seed=3, access=6, invlpg=1, flush_all=1, flush_non_global=2,
        required=("a refresh", *(f"a hit removed by a {command} at the accepting edge" for command in MAINTENANCE)),
    ),
    # huge pages filled over 4 KiB ones (a region's pages in one 2 MiB page, and in one set of up to four): ways
    # overlap and the lowest answers, until a flush starts over
    "overlapping_pages_hit_the_lowest_way": _scenario(
        400, 12, repeat=0.0, seed=4, spread=0x1FC, access=8, flush_all=1,
        required=("a hit among matching ways that answer differently",),
    ),
}


@cocotb.test()
@cocotb.parametrize(scenario=list(SCENARIOS))
async def tlb_scenario(dut: Any, scenario: str) -> None:
    """One scenario on the Verilog TLB; the runner runs it on the MyHDL block too."""
    env = SCENARIOS[scenario](tb.job()["params"])
    await tb.run_cocotb(dut, env)


PARAMS = [
    {"entries": 4, "ways": 4, "policy": int(TlbPolicy.PLRU), "seed": 1},  # fully associative, tree PLRU
    {"entries": 8, "ways": 2, "policy": int(TlbPolicy.FIFO), "seed": 2},  # 4 sets: splintered huge pages
    {"entries": 8, "ways": 4, "policy": int(TlbPolicy.RANDOM), "seed": 3},
]  # direct-mapped TLBs run in tests/test_random_translation.py (one build per point is the cost to watch)


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "params"), tb.matrix(
    PARAMS, lambda p: f"e{p['entries']}w{p['ways']}{TlbPolicy(p['policy']).name}", verilator=(0, 2)))
def test_tlb_runner(simulator: str, params: dict[str, Any]) -> None:
    from conftest import require_simulator

    require_simulator(f"cocotb-{simulator}")
    tb.check_block(tb.BlockDesign("tlb", params), simulator, "test_tlb", SCENARIOS)
