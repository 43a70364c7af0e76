"""The paging-structure cache (hdl/pwc.py) against a model of the contract: entries tagged by level and address
prefix, the deepest matching level wins, an insert takes the lowest invalid entry or else the FIFO pointer's (which
advances after each evicting insert), and a flush empties the cache but keeps the pointer.

The environment drives the cache as hdl/mmu.py and the walker do. A request is accepted (`lookup_accept` with its
page on `lookup_next_vpn`): the entries are compared at that edge, a flush carried out there included; the next
cycle (LOOKUP) chooses the deepest match and registers it, and the answer holds from the cycle after (the walker's
START) until the cache next changes. A walk starts
below the answer (or at the PML4) and inserts each non-leaf entry it reads, `insert_valid` in the cycle t the entry
arrives; the cache registers the insert and writes it at the end of cycle t+1, tagged with `lookup_vpn` (the
registered request's page), so that lookups accepted at the end of cycle t+2 or later see it (the MMU's next request
comes later still: the walk reads another entry first). A flush (INVLPG, FLUSH, a CR3 write) is carried out at the
end of the cycle after LOOKUP, which may be the next request's accepting cycle.

Both the cocotb module and its pytest entry `test_pwc_runner` (Verilator, Icarus, and MyHDL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import DEFAULT_MAXPHYADDR, LEVEL_BITS, VPN_WIDTH, frame_width

PWC_LEVELS = (2, 3, 4)  # PDE, PDPTE, PML4E: the non-leaf entries a walk can skip to
LOOKUP_OUTPUTS = ("lookup_hit", "lookup_next_level", "lookup_table", "lookup_table_in_ram", "lookup_writable",
                  "lookup_user", "lookup_no_execute")
DEEPER_WINS = "a deeper level's entry answering over a shallower one's"


def prefix(vpn: int, level: int) -> int:
    """The VPN bits that select the entry of `level`: addr[47:21] for a PDE, [47:30] a PDPTE, [47:39] a PML4E."""
    return vpn >> (LEVEL_BITS * (level - 1))


@dataclasses.dataclass(frozen=True)
class Entry:
    level: int
    prefix: int
    table: int  # frame number of the table the entry points at
    table_in_ram: bool  # as the walker found it: the cache keeps the bit and answers it
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

    def insert(self, entry: Entry) -> None:
        if None in self.slots:
            self.slots[self.slots.index(None)] = entry
        else:
            self.slots[self.oldest] = entry
            self.oldest = (self.oldest + 1) % len(self.slots)

    def flush(self) -> None:
        self.slots = [None] * len(self.slots)


class PwcEnvironment(tb.ScriptedEnvironment):
    """`requests` requests over VPNs in a few 512 GiB and 1 GiB regions (so that entries of different levels hold
    the same addresses), `repeat` of them of the previous request's page; each walks (`weights["walk"]`), flushes
    (`"flush"`) or neither (`"lookup"`). Checks the answer in every cycle it is defined.

    As in the MMU, an insert never duplicates an entry the cache holds: a walk inserts only the levels below its
    lookup's hit, so which of two equal entries answers is never asked.
    """

    outputs = LOOKUP_OUTPUTS

    def __init__(self, params: dict[str, Any], seed: int, requests: int, pool: int, weights: dict[str, int],
                 idle: float, repeat: float, latency: int, required: tuple[str, ...]) -> None:
        super().__init__(seed, set(required) - ({DEEPER_WINS} if params["entries"] == 1 else set()))  # (two entries)
        self.model = PwcModel(params["entries"])
        self.frame_bits = frame_width(params.get("maxphyaddr", DEFAULT_MAXPHYADDR))
        self.weights, self.idle, self.repeat, self.latency = weights, idle, repeat, latency
        pml4_regions = [self.rng.getrandbits(LEVEL_BITS) << 3 * LEVEL_BITS for _ in range(2)]
        pdpt_regions = [self.rng.choice(pml4_regions) | self.rng.getrandbits(LEVEL_BITS) << 2 * LEVEL_BITS
                        for _ in range(3)]
        self.pool = [self.rng.choice(pdpt_regions) | self.rng.getrandbits(2 * LEVEL_BITS) for _ in range(pool)]
        # The cache as the block holds it: the registered VPN, the answer registered with it (valid while
        # `answered`: until an insert or flush changes an entry), and the insert registered at the last edge.
        self.vpn = 0
        self.answer: Entry | None = None
        self.answered = False  # (the registered lookup has no reset: it answers from the first request on)
        self.chosen = False  # the answer has been chosen (in the cycle after the accepting one)
        self.pending: Entry | None = None
        self.flushed = False
        self.cycles = self._cycles(requests)

    def _entry(self, level: int) -> Entry:
        """An entry of `level` as the walker offers it (the cache takes the prefix from the registered VPN)."""
        in_ram, writable, user, no_execute = (bool(self.rng.getrandbits(1)) for _ in range(4))
        return Entry(level, 0, self.rng.getrandbits(self.frame_bits), in_ram, writable, user, no_execute)

    def _cycle(self, accept: int | None = None, flush: bool = False, insert: Entry | None = None) -> dict[str, int]:
        """One cycle's inputs: the request port's page (accepted, or whatever is on it), the registered page, and
        the walker's insert (its fields follow the walker when no insert is valid: any value)."""
        inputs = {"lookup_vpn": self.vpn, "lookup_accept": accept is not None, "flush": flush,
                  "lookup_next_vpn": self.rng.getrandbits(VPN_WIDTH) if accept is None else accept,
                  "insert_valid": insert is not None}
        if insert is None:
            insert = self._entry(self.rng.randint(0, 7))
        return inputs | {"insert_level": insert.level, "insert_table": insert.table,
                         "insert_table_in_ram": insert.table_in_ram, "insert_writable": insert.writable,
                         "insert_user": insert.user,
                         "insert_no_execute": insert.no_execute}

    def _cycles(self, requests: int) -> Iterator[dict[str, int]]:
        """The scenario, cycle by cycle, as the MMU runs requests: idle cycles, the accepting one, LOOKUP, and then
        a walk, or a flush carried out in the next cycle."""
        flush = False  # decided in the last LOOKUP, carried out at the end of the next cycle
        vpn = self.rng.choice(self.pool)
        for _ in range(requests):
            for _ in range(self.gap(3, self.idle)):
                yield self._cycle(flush=flush)
                flush = False
            if self.rng.random() >= self.repeat:
                vpn = self.rng.choice(self.pool)
            yield self._cycle(accept=vpn, flush=flush)
            flush = False
            yield self._cycle()  # LOOKUP
            command = self.rng.choices(list(self.weights), weights=list(self.weights.values()))[0]
            if command == "walk":
                yield from self._walk()
            flush = command == "flush"

    def _walk(self) -> Iterator[dict[str, int]]:
        """The walker's cycles: START takes the answer; per level READ, then WAIT until the entry arrives, when a
        non-leaf entry is inserted; DONE. Some walks end early (a huge page, a fault) and insert no more."""
        yield self._cycle()  # START
        level = self.answer.level - 1 if self.answer is not None else 4
        while True:
            yield self._cycle()  # READ
            for _ in range(self.rng.randint(1, self.latency) - 1):
                yield self._cycle()  # WAIT
            if level == 1 or self.rng.random() < 0.15:
                break
            yield self._cycle(insert=self._entry(level))  # WAIT: the entry arrives
            level -= 1
        yield self._cycle()  # the leaf's (or the fault's) WAIT
        yield self._cycle()  # DONE

    def sample(self, values: dict[str, int | None]) -> None:
        if self.answered and self.chosen:
            hit = self.answer
            self.expect("hit", values["lookup_hit"], hit is not None)
            if hit is not None:
                for port, want in (("lookup_next_level", hit.level - 1), ("lookup_table", hit.table),
                                   ("lookup_table_in_ram", hit.table_in_ram), ("lookup_writable", hit.writable),
                                   ("lookup_user", hit.user),
                                   ("lookup_no_execute", hit.no_execute)):
                    self.expect(port, values[port], want)
        # The clock edge: the comparison with the accepted page (which a flush at this edge leaves empty), the flush
        # or the write of the pending insert (tagged with the registered page), and this cycle's insert registered.
        inputs = self.inputs
        if inputs["lookup_accept"]:
            vpn = inputs["lookup_next_vpn"]
            held = self.model.lookup(vpn)
            answer = None if inputs["flush"] else held
            if held is not None and answer is None:
                self.seen.add("a flush at the accepting edge")
            if answer is not None and any(e is not None and e.level > answer.level and
                                          e.prefix == prefix(vpn, e.level) for e in self.model.slots):
                self.seen.add(DEEPER_WINS)
        if inputs["flush"]:
            self.model.flush()
            self.answered, self.flushed = False, True
        elif self.pending is not None:
            if None not in self.model.slots:
                self.seen.add("an insert into a full cache")
                if self.flushed:
                    self.seen.add("an evicting insert after a flush")
            self.model.insert(dataclasses.replace(self.pending, prefix=prefix(self.vpn, self.pending.level)))
            self.answered = False
        self.pending = None
        if inputs["insert_valid"]:
            self.pending = Entry(inputs["insert_level"], 0, inputs["insert_table"],
                                 bool(inputs["insert_table_in_ram"]), bool(inputs["insert_writable"]),
                                 bool(inputs["insert_user"]), bool(inputs["insert_no_execute"]))
        self.chosen = self.answered  # the cycle after the accepting one chooses the answer: it holds from the next
        if inputs["lookup_accept"]:
            self.vpn, self.answer, self.answered, self.chosen = vpn, answer, True, False


def _scenario(seed: int, requests: int, pool: int, idle: float = 0.3, repeat: float = 0.2, latency: int = 2,
              required: tuple[str, ...] = (), **weights: int) -> Any:
    return lambda params: PwcEnvironment(params, params["seed"] * 100 + seed, requests, pool, weights, idle, repeat,
                                         latency, required)


SCENARIOS = {
    # more table entries than cache entries: the cache fills, then inserts replace the oldest
    "inserts_fill_then_replace_the_oldest": _scenario(1, 120, 40, walk=3, lookup=1,
                                                      required=("an insert into a full cache",)),
    # few addresses in two PML4 and three PDPT regions: entries of all levels hold the same VPNs, the deepest wins
    "the_deepest_level_answers": _scenario(2, 150, 6, idle=0.0, latency=1, walk=2, lookup=3,
                                           required=(DEEPER_WINS,)),
    # flushes between walks, some at the next request's accepting edge: the cache refills from entry 0 while the
    # FIFO pointer stays where it was, and a request accepted with a flush finds nothing
    "flushes_keep_the_fifo_pointer": _scenario(
        3, 160, 24, repeat=0.4, walk=5, lookup=2, flush=1,
        required=("a flush at the accepting edge", "an evicting insert after a flush"),
    ),
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
