"""The paging-structure cache (hdl/pwc.py) against a model of the contract: entries tagged by level and address
prefix, the deepest matching level wins, an insert takes the lowest invalid entry or else the FIFO pointer's (which
advances after each evicting insert), and a flush empties the cache but keeps the pointer.

Both the cocotb module and its pytest entry `test_pwc_runner` (Verilator, Icarus, and MyHDL).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import DEFAULT_MAXPHYADDR, LEVEL_BITS, frame_width

PWC_LEVELS = (2, 3, 4)  # PDE, PDPTE, PML4E: the non-leaf entries a walk can skip to
LOOKUP_OUTPUTS = ("lookup_hit", "lookup_next_level", "lookup_table", "lookup_writable", "lookup_user",
                  "lookup_no_execute")


def prefix(vpn: int, level: int) -> int:
    """The VPN bits that select the entry of `level`: addr[47:21] for a PDE, [47:30] a PDPTE, [47:39] a PML4E."""
    return vpn >> (LEVEL_BITS * (level - 1))


@dataclass(frozen=True)
class Entry:
    level: int
    prefix: int
    table: int  # frame number of the table the entry points at
    writable: bool
    user: bool
    no_execute: bool


class PwcModel:
    """The contract's PWC: `entries` slots, FIFO replacement over all of them."""

    def __init__(self, entries: int) -> None:
        self.slots: list[Entry | None] = [None] * entries
        self.oldest = 0  # the FIFO pointer: the slot an insert into a full cache replaces

    def lookup(self, vpn: int) -> Entry | None:
        """The deepest-level entry that holds `vpn`, or None."""
        for level in PWC_LEVELS:
            for entry in self.slots:
                if entry is not None and entry.level == level and entry.prefix == prefix(vpn, level):
                    return entry
        return None

    def holds(self, vpn: int, level: int) -> bool:
        return any(e is not None and e.level == level and e.prefix == prefix(vpn, level) for e in self.slots)

    def insert(self, entry: Entry) -> None:
        if None in self.slots:
            self.slots[self.slots.index(None)] = entry
        else:
            self.slots[self.oldest] = entry
            self.oldest = (self.oldest + 1) % len(self.slots)

    def flush(self) -> None:
        self.slots = [None] * len(self.slots)


class PwcEnvironment(tb.Environment):
    """`steps` commands (insert, flush, or a plain lookup) with idle gaps, over VPNs in a few 512 GiB and 1 GiB
    regions, so that entries of different levels hold the same addresses; checks the lookup every cycle.

    As in the MMU, an insert never duplicates an entry the cache holds (a walk inserts only the levels below its
    lookup's hit), so which of two equal entries answers is never asked.
    """

    outputs = LOOKUP_OUTPUTS

    def __init__(self, params: dict[str, Any], seed: int, steps: int, pool: int, weights: dict[str, int],
                 idle: float) -> None:
        super().__init__(seed)
        self.model = PwcModel(params["entries"])
        self.frame_bits = frame_width(params.get("maxphyaddr", DEFAULT_MAXPHYADDR))
        self.steps, self.weights, self.idle = steps, weights, idle
        pml4_regions = [self.rng.getrandbits(LEVEL_BITS) << 3 * LEVEL_BITS for _ in range(2)]
        pdpt_regions = [self.rng.choice(pml4_regions) | self.rng.getrandbits(LEVEL_BITS) << 2 * LEVEL_BITS
                        for _ in range(3)]
        self.pool = [self.rng.choice(pdpt_regions) | self.rng.getrandbits(2 * LEVEL_BITS) for _ in range(pool)]
        self.pending: tuple[str | None, int, Entry | None] = (None, 0, None)

    def _new_entry(self, vpn: int) -> Entry | None:
        """An entry for `vpn` at a level the cache does not hold yet (None if it holds all three)."""
        levels = [level for level in PWC_LEVELS if not self.model.holds(vpn, level)]
        if not levels:
            return None
        level = self.rng.choice(levels)
        writable, user, no_execute = (bool(self.rng.getrandbits(1)) for _ in range(3))
        return Entry(level, prefix(vpn, level), self.rng.getrandbits(self.frame_bits), writable, user, no_execute)

    def drive(self) -> dict[str, int]:
        vpn = self.rng.choice(self.pool)
        command, entry = None, None
        if self.steps and not self.gap(2, self.idle):
            self.steps -= 1
            command = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            if command == "insert":
                entry = self._new_entry(vpn)
                command = "insert" if entry is not None else None
        elif not self.steps:
            self.done = True
        self.pending = (command, vpn, entry)
        inputs = {"lookup_vpn": vpn, "insert_valid": command == "insert", "flush": command == "flush"}
        if entry is not None:
            inputs |= {"insert_level": entry.level, "insert_table": entry.table, "insert_writable": entry.writable,
                       "insert_user": entry.user, "insert_no_execute": entry.no_execute}
        return inputs

    def sample(self, values: dict[str, int | None]) -> None:
        command, vpn, entry = self.pending
        hit = self.model.lookup(vpn)
        self.expect("hit", values["lookup_hit"], hit is not None)
        if hit is not None:
            for port, want in (("lookup_next_level", hit.level - 1), ("lookup_table", hit.table),
                               ("lookup_writable", hit.writable), ("lookup_user", hit.user),
                               ("lookup_no_execute", hit.no_execute)):
                self.expect(port, values[port], want)
        if command == "insert":
            self.model.insert(entry)
        elif command == "flush":
            self.model.flush()


def _scenario(seed: int, steps: int, pool: int, idle: float = 0.3, **weights: int) -> Any:
    return lambda params: PwcEnvironment(params, params["seed"] * 100 + seed, steps, pool, weights, idle)


SCENARIOS = {
    # more table entries than cache entries: the cache fills, then inserts replace the oldest
    "inserts_fill_then_replace_the_oldest": _scenario(1, 300, 40, insert=3, lookup=2),
    # few addresses in two PML4 and three PDPT regions: entries of all levels hold the same VPNs, the deepest wins
    "the_deepest_level_answers": _scenario(2, 300, 6, idle=0.0, insert=2, lookup=3),
    # flushes between inserts: the cache refills from entry 0 while the FIFO pointer stays where it was
    "flushes_keep_the_fifo_pointer": _scenario(3, 400, 24, insert=5, lookup=2, flush=1),
}


@cocotb.test()
@cocotb.parametrize(scenario=list(SCENARIOS))
async def pwc_scenario(dut: Any, scenario: str) -> None:
    env = SCENARIOS[scenario](tb.job()["params"])
    await tb.run_cocotb(dut, env)


PARAMS = [
    {"entries": 1, "seed": 1},  # one entry: every insert replaces it
    {"entries": 2, "seed": 2},
    {"entries": 8, "maxphyaddr": 52, "seed": 3},  # the default size, with the widest table frames
]


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "params"), tb.matrix(PARAMS, lambda p: f"e{p['entries']}", verilator=(2,)))
def test_pwc_runner(simulator: str, params: dict[str, Any]) -> None:
    from conftest import require_simulator

    require_simulator(f"cocotb-{simulator}")
    tb.check_block(tb.BlockDesign("pwc", params), simulator, "test_pwc", SCENARIOS)
