"""The TLB block (hdl/tlb.py) against a Python model of the contract's lookup, fill and replacement rules.

Both the cocotb module (run inside the simulator) and its pytest entry `test_tlb_runner`, which converts the block
for each parameter point, runs these scenarios on Verilator and Icarus, and again on the MyHDL block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import DEFAULT_MAXPHYADDR, LFSR_SEED, LFSR_TAPS, VPN_WIDTH, TlbPolicy, frame_width

SIZE_SHIFT = (0, 9, 18)  # VPN bits inside a page of each TLB size code (4 KiB, 2 MiB, 1 GiB)
COMMANDS = ("touch", "fill", "refresh", "drop", "flush_all", "flush_non_global")


@dataclass
class Entry:
    tag: int  # base VPN of the page
    size: int
    frame: int
    writable: bool
    user: bool
    no_execute: bool
    global_: bool
    dirty: bool

    def holds(self, vpn: int) -> bool:
        return vpn >> SIZE_SHIFT[self.size] == self.tag >> SIZE_SHIFT[self.size]


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
    """Issues `steps` random commands with idle gaps over a small pool of VPNs (so sets fill and evict), checking
    the combinational outputs each cycle against TlbModel."""

    outputs = ("lookup_hit", "lookup_frame", "lookup_size", "lookup_writable", "lookup_user", "lookup_no_execute",
               "lookup_dirty", "update_evict", "update_evict_vpn")

    def __init__(self, params: dict[str, Any], seed: int, steps: int, pool: int, weights: dict[str, int],
                 idle: float = 0.3) -> None:
        super().__init__(seed)
        self.model = TlbModel(params["entries"], params["ways"], params["policy"])
        self.frame_bits = frame_width(DEFAULT_MAXPHYADDR)
        self.steps, self.weights, self.idle = steps, weights, idle
        # VPNs in a few 1 GiB regions, so 2 MiB and 1 GiB pages overlap some of the 4 KiB ones
        regions = [self.rng.getrandbits(VPN_WIDTH - 18) << 18 for _ in range(3)]
        self.pool = [self.rng.choice(regions) | self.rng.getrandbits(12) for _ in range(pool)]
        self.pending: tuple[str, int, Entry | None] | None = None

    def _entry(self, vpn: int) -> Entry:
        size = self.rng.choices((0, 1, 2), weights=(6, 2, 1))[0]
        frame = self.rng.getrandbits(self.frame_bits) >> SIZE_SHIFT[size] << SIZE_SHIFT[size]
        r = self.rng.getrandbits(5)
        return Entry(vpn >> SIZE_SHIFT[size] << SIZE_SHIFT[size], size, frame, *(bool(r >> i & 1) for i in range(5)))

    def drive(self) -> dict[str, int]:
        inputs = {f"update_{name}": 0 for name in COMMANDS}
        vpn = self.rng.choice(self.pool)
        command = None
        if self.steps and not self.gap(1, self.idle):
            self.steps -= 1
            command = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            hit = self.model.lookup(vpn) is not None
            if command in ("touch", "refresh") and not hit:
                command = "fill"  # the MMU touches and refreshes only hits, and fills only misses
            elif command == "fill" and hit:
                command = "touch"
        elif not self.steps:
            self.done = True
        entry = self._entry(vpn) if command in ("fill", "refresh") else None
        self.pending = (command, vpn, entry)
        if command:
            inputs[f"update_{command}"] = 1
        inputs["lookup_vpn"] = vpn
        if entry is not None:
            inputs.update(update_fill_frame=entry.frame, update_fill_size=entry.size,
                          update_fill_writable=entry.writable, update_fill_user=entry.user,
                          update_fill_no_execute=entry.no_execute, update_fill_global=entry.global_,
                          update_fill_dirty=entry.dirty)
        return inputs

    def sample(self, values: dict[str, int | None]) -> None:
        command, vpn, entry = self.pending
        way = self.model.lookup(vpn)
        self.expect("hit", values["lookup_hit"], way is not None)
        if way is not None:
            hit = self.model.set_of(vpn)[way]
            for port, want in (("lookup_frame", hit.frame), ("lookup_size", hit.size),
                               ("lookup_writable", hit.writable), ("lookup_user", hit.user),
                               ("lookup_no_execute", hit.no_execute), ("lookup_dirty", hit.dirty)):
                self.expect(port, values[port], want)
        victim = self.model.victim(vpn)
        self.expect("evict", values["update_evict"], victim is not None)
        if victim is not None:
            self.expect("evict_vpn", values["update_evict_vpn"], self.model.set_of(vpn)[victim].tag)
        if command == "touch":
            self.model.point_away(vpn, way)
        elif command == "fill":
            self.model.fill(vpn, entry)
        elif command == "refresh":
            self.model.set_of(vpn)[way] = entry
        elif command == "drop":
            self.model.drop(vpn)
        elif command in ("flush_all", "flush_non_global"):
            self.model.flush(keep_global=command == "flush_non_global")


def _scenario(steps: int, pool: int, idle: float = 0.3, seed: int = 1, **weights: int) -> Any:
    return lambda params: TlbEnvironment(params, params.get("seed", 0) * 1000 + seed, steps, pool, weights, idle)


SCENARIOS = {
    # more pages than entries: sets fill up, and the policy picks victims again and again
    "fills_evict_by_policy": _scenario(300, 40, fill=6, touch=3),
    # hits reorder PLRU; touches between fills decide the next victim
    "hits_steer_the_victim": _scenario(300, 12, idle=0.0, seed=2, fill=3, touch=6),
    # INVLPG-style drops of every entry holding a page, refreshes in place, and both flushes (globals survive one)
    "drops_refreshes_and_flushes": _scenario(
        400, 24, seed=3, fill=6, touch=3, refresh=2, drop=2, flush_all=1, flush_non_global=1,
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
