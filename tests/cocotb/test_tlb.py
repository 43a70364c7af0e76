"""The TLB block (hdl/tlb.py) against a Python model of the contract's lookup, fill and replacement rules.

The environment drives the TLB as hdl/mmu.py does. A request is accepted (`lookup_accept` with its page on
`lookup_next_vpn`): the tags are compared at that edge, after the drop or flush carried out there, and from the next
cycle (LOOKUP) on, with `lookup_vpn` the accepted page, the hit and its translation hold until a command changes the
entries. In LOOKUP a hit is touched; a miss walks and fills in the walk's last cycle; a store's hit on a clean entry
walks again and refreshes it. A drop (INVLPG, a denied hit, a failed walk) or a flush (FLUSH, a CR3 write) is decided
in LOOKUP or the walk's last cycle and carried out at the end of the next, which may be the next request's
accepting cycle. Fills, refreshes and touches never fall in an accepting cycle. The eviction answer is checked in
every cycle, for the registered page.

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
COMMANDS = ("touch", "fill", "refresh", "drop", "flush_all", "flush_non_global")
MAINTENANCE = ("drop", "flush_all", "flush_non_global")  # carried out at the end of the cycle after their decision
FILL_FIELDS = ("frame", "size", "writable", "user", "no_execute", "global", "dirty", "frame_in_ram")


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

    def lookup(self, vpn: int) -> int | None:
        """The way of the hit (lowest-numbered match), or None."""
        return next((w for w, e in enumerate(self.set_of(vpn)) if e is not None and e.holds(vpn)), None)

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


class TlbEnvironment(tb.Environment):
    """`requests` requests with idle gaps over a small pool of VPNs (so sets fill and evict), `repeat` of them in the
    previous request's page or its 2 MiB page, each with an outcome drawn from `weights`:

    `access` hits (a touch) or misses (a walk and a fill); `refresh` is a store's hit on a clean entry (a touch, a
    walk and a refresh); `fault` a denied hit (a touch) or a failed walk, and a drop; `invlpg` a drop, `flush_all`
    and `flush_non_global` (a FLUSH, a CR3 write) the flushes; `other` a request that neither translates nor maintains.

    Checks the lookup in every cycle it is defined, and the eviction answer in every cycle, against TlbModel.
    """

    outputs = ("lookup_hit", "lookup_frame", "lookup_size", "lookup_writable", "lookup_user", "lookup_no_execute",
               "lookup_dirty", "lookup_frame_in_ram", "update_evict", "update_evict_vpn")

    def __init__(self, params: dict[str, Any], seed: int, requests: int, pool: int, weights: dict[str, int],
                 idle: float, repeat: float, required: tuple[str, ...]) -> None:
        super().__init__(seed)
        self.model = TlbModel(params["entries"], params["ways"], params["policy"])
        self.frame_bits = frame_width(DEFAULT_MAXPHYADDR)
        self.weights, self.idle, self.repeat = weights, idle, repeat
        # VPNs in a few 1 GiB regions, so 2 MiB and 1 GiB pages overlap some of the 4 KiB ones
        regions = [self.rng.getrandbits(VPN_WIDTH - 18) << 18 for _ in range(3)]
        self.pool = [self.rng.choice(regions) | self.rng.getrandbits(12) for _ in range(pool)]
        self.required = set(required)
        self.seen: set[str] = set()  # the situations met, of those the scenario must meet
        # The lookup as the block holds it: the registered VPN, and the way it hit, registered with it (valid while
        # `answered`: until a command other than a touch changes the entries).
        self.vpn = 0
        self.way: int | None = None
        self.answered = True  # from reset: no hit
        self.inputs: dict[str, int] = {}
        self.entry: Entry | None = None  # on the fill inputs this cycle
        self.cycles = self._cycles(requests)

    def drive(self) -> dict[str, int]:
        inputs = next(self.cycles, None)
        if inputs is None:  # the scenario is over: one idle cycle more
            self.done = True
            missing = self.required - self.seen
            if missing:
                raise AssertionError(f"the scenario never met: {', '.join(sorted(missing))}")
            inputs = self._cycle()
        self.inputs = inputs
        return inputs

    def _entry(self, vpn: int) -> Entry:
        size = self.rng.choices((0, 1, 2), weights=(6, 2, 1))[0]
        frame = self.rng.getrandbits(self.frame_bits) >> SIZE_SHIFT[size] << SIZE_SHIFT[size]
        r = self.rng.getrandbits(6)
        return Entry(vpn >> SIZE_SHIFT[size] << SIZE_SHIFT[size], size, frame, *(bool(r >> i & 1) for i in range(6)))

    def _cycle(self, accept: int | None = None, command: str | None = None) -> dict[str, int]:
        """One cycle's inputs: the request port's page (accepted, or whatever is on it), the registered page, at most
        one command, and the fill inputs (the walker's result: any value outside a fill or refresh)."""
        inputs = {f"update_{name}": name == command for name in COMMANDS}
        self.entry = self._entry(self.vpn)
        inputs |= {"lookup_vpn": self.vpn, "lookup_accept": accept is not None,
                   "lookup_next_vpn": self.rng.getrandbits(VPN_WIDTH) if accept is None else accept}
        return inputs | self.entry.fill_inputs()

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
            outcome = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            hit = self.way is not None
            translates = outcome in ("access", "refresh", "fault")
            yield self._cycle(command="touch" if translates and hit else None)  # LOOKUP
            if translates and (not hit or outcome == "refresh"):
                for _ in range(self.rng.randint(1, 4)):  # START, READ, WAIT, ...
                    yield self._cycle()
                if outcome == "fault":  # DONE, of a failed walk
                    yield self._cycle()
                else:
                    yield self._cycle(command="refresh" if hit else "fill")
            if outcome in ("fault", "invlpg"):
                carried = "drop"
            elif outcome in MAINTENANCE:
                carried = outcome

    def sample(self, values: dict[str, int | None]) -> None:
        model, vpn = self.model, self.vpn
        if self.answered:
            self.expect("hit", values["lookup_hit"], self.way is not None)
            if self.way is not None:
                hit = model.set_of(vpn)[self.way]
                for port, want in (("lookup_frame", hit.frame), ("lookup_size", hit.size),
                                   ("lookup_writable", hit.writable), ("lookup_user", hit.user),
                                   ("lookup_no_execute", hit.no_execute), ("lookup_dirty", hit.dirty),
                                   ("lookup_frame_in_ram", hit.in_ram)):
                    self.expect(port, values[port], want)
        victim = model.victim(vpn)
        self.expect("evict", values["update_evict"], victim is not None)
        if victim is not None:
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
        if accepted is not None:
            self.vpn, self.way, self.answered = accepted, model.lookup(accepted), True
            if self.way is not None and model.set_of(accepted)[self.way].size:
                self.seen.add("a huge page's hit")


def _scenario(requests: int, pool: int, idle: float = 0.3, repeat: float = 0.2, seed: int = 1,
              required: tuple[str, ...] = (), **weights: int) -> Any:
    return lambda params: TlbEnvironment(params, params.get("seed", 0) * 1000 + seed, requests, pool, weights, idle,
                                         repeat, required)


SCENARIOS = {
    # more pages than entries: sets fill up, and the policy picks victims again and again
    "fills_evict_by_policy": _scenario(200, 40, access=6, other=1, required=("an evicting fill", "a huge page's hit")),
    # hits reorder PLRU; touches between fills decide the next victim
    "hits_steer_the_victim": _scenario(200, 12, idle=0.0, repeat=0.4, seed=2, access=6, other=1,
                                       required=("an evicting fill",)),
    # INVLPG-style drops of every entry holding a page, refreshes in place, and both flushes (globals survive one),
    # many at the next request's accepting edge, whose lookup must not hit what they removed
    "drops_refreshes_and_flushes": _scenario(
        250, 24, idle=0.2, repeat=0.5, seed=3, access=6, refresh=2, fault=1, invlpg=1, flush_all=1,
        flush_non_global=1, required=tuple(f"a hit removed by a {command} at the accepting edge"
                                           for command in MAINTENANCE),
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
