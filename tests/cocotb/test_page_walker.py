"""The page walker block (hdl/page_walker.py) on random page tables, against the x86 model of
tests/test_random_translation.py: the entries it reads, in order; the A/D write-backs; the PWC inserts; and the
result (fault, P/RSVD, frame, size, combined permissions, G, D, entries read, A/D writes). Walks start from CR3 or
from a paging-structure-cache hit the environment offers, and the memory answers with a latency knob.

Both the cocotb module and its pytest entry `test_page_walker_runner` (Verilator, Icarus, and MyHDL).
"""

from __future__ import annotations

import random
from typing import Any

import cocotb
import pytest
import tb
from x86_model import LEVEL_PAGE_SHIFT, Access, Memory, TableBuilder, Walk, walk

from hdl.protocol import PAGE_SHIFT, ErrorCode, Fault, pte_addr_mask

MEM_BYTES = 1 << 20


class WalkerEnvironment(tb.Environment):
    """`walks` walks over two random address spaces, with idle gaps between them and a memory `latency`."""

    outputs = (
        "mem_valid", "mem_write", "mem_word_addr", "mem_wdata", "mem_byte_enable", "pwc_insert_valid",
        "pwc_insert_level", "pwc_insert_table", "pwc_insert_table_in_ram", "pwc_insert_writable", "pwc_insert_user",
        "pwc_insert_no_execute",
        "result_done",
        "result_fault_page", "result_fault_bus", "result_present", "result_reserved", "result_frame", "result_size",
        "result_writable", "result_user", "result_no_execute", "result_global_", "result_dirty", "result_levels",
        "result_cycles", "result_pwc_hit", "result_ad_writes",
    )  # fmt: skip

    def __init__(self, params: dict[str, Any], seed: int, walks: int, latency: int, pwc_hits: float) -> None:
        super().__init__(seed)
        self.maxphyaddr = params["maxphyaddr"]
        self.ram = Memory(params["mem_bytes"])
        self.tables = TableBuilder(random.Random(seed), self.ram, self.maxphyaddr)
        self.tables.build()
        self.walks, self.latency, self.pwc_hits = walks, latency, pwc_hits
        self.inputs: dict[str, int] = {"start": 0}
        self.expected: Walk | None = None
        self.pending_ops: list[tuple[str, int, int]] = []
        self.pending_inserts: list[tuple[int, int, bool, bool, bool]] = []
        self.arrivals: list[int] = []  # cycles in which reads in flight arrive (rvalid)
        self.rdata = 0
        self.next_rdata: tuple[int, int] | None = None  # (cycle, word): the RAM's word shows the cycle after a read
        self.idle = 0

    def _new_walk(self) -> dict[str, int]:
        """Choose an access and a starting point, and work out with the model what the walker must do."""
        mappings = self.tables.mappings
        target = self.rng.choice([m for m in mappings if m.leaf] if self.rng.random() < 0.75 else mappings)
        span = 1 << LEVEL_PAGE_SHIFT.get(target.level, PAGE_SHIFT)
        vaddr = target.vaddr + self.rng.choice((0, self.rng.randrange(span), span - 8))
        if self.rng.random() < 0.05:
            vaddr = self.rng.getrandbits(48)  # mostly absent
        store = self.rng.random() < 0.4
        access = Access(store, self.rng.random() < 0.4, not store and self.rng.random() < 0.3)
        cr3 = target.root if target.root is not None and self.rng.random() < 0.9 else self.rng.choice(self.tables.roots)
        start = {"level": 4, "table": cr3}
        inputs = {"pwc_hit": 0, "pwc_next_level": 0, "pwc_table": 0, "pwc_table_in_ram": 0, "pwc_writable": 0,
                  "pwc_user": 0, "pwc_no_execute": 0}
        scratch = Memory(self.ram.size)
        scratch.data[:] = self.ram.data
        inserts = walk(scratch, vaddr, access, cr3, self.maxphyaddr).inserts
        if inserts and self.rng.random() < self.pwc_hits:
            level, table, writable, user, no_execute = self.rng.choice(inserts)
            start = {"level": level - 1, "table": table, "writable": writable, "user": user,
                     "no_execute": no_execute}
            inputs |= {"pwc_hit": 1, "pwc_next_level": level - 1, "pwc_table": table >> PAGE_SHIFT,
                       "pwc_table_in_ram": table < self.ram.size, "pwc_writable": writable, "pwc_user": user,
                       "pwc_no_execute": no_execute}
        model = Memory(self.ram.size)
        model.data[:] = self.ram.data
        self.expected = walk(model, vaddr, access, maxphyaddr=self.maxphyaddr, **start)
        self.pending_ops = list(self.expected.memory_ops)
        self.pending_inserts = list(self.expected.inserts)
        cr3_flags = self.rng.getrandbits(12) & ~1  # CR3's low bits are not part of the address
        return inputs | {"start": 1, "vaddr": vaddr, "is_store": access.write, "is_user": access.user,
                         "is_fetch": access.fetch, "cr3": cr3 | cr3_flags}

    def drive(self) -> dict[str, int]:
        self.inputs["start"] = 0
        if self.expected is None:
            if self.idle:
                self.idle -= 1
            elif self.walks:
                self.walks -= 1
                self.inputs |= self._new_walk()
            else:
                self.done = True
        if self.next_rdata is not None and self.next_rdata[0] == self.cycle:
            self.rdata = self.next_rdata[1]  # and it holds until the next read
        return self.inputs | {"mem_resp_rvalid": self.cycle in self.arrivals, "mem_resp_rdata": self.rdata}

    def sample(self, values: dict[str, int | None]) -> None:
        if values["mem_valid"]:
            self._check_memory(values)
        if values["pwc_insert_valid"]:
            self.expect("an expected PWC insert", 1, 1 if self.pending_inserts else 0)
            level, table, writable, user, no_execute = self.pending_inserts.pop(0)
            for port, want in (("pwc_insert_level", level), ("pwc_insert_table", table >> PAGE_SHIFT),
                               ("pwc_insert_table_in_ram", table < self.ram.size),
                               ("pwc_insert_writable", writable), ("pwc_insert_user", user),
                               ("pwc_insert_no_execute", no_execute)):
                self.expect(port, values[port], want)
        if values["result_done"]:
            self._check_result(values)
            self.expected = None
            self.idle = self.gap(3, 0.5)
        self.arrivals = [at for at in self.arrivals if at > self.cycle]

    def _check_memory(self, values: dict[str, int | None]) -> None:
        if not self.pending_ops:
            raise AssertionError(f"cycle {self.cycle}: a memory request the walk should not make")
        kind, addr, value = self.pending_ops.pop(0)
        self.expect(f"mem_write ({kind} of {addr:#x})", values["mem_write"], kind == "write")
        self.expect("mem_word_addr", values["mem_word_addr"], addr >> 3)
        if kind == "write":
            self.expect("mem_byte_enable", values["mem_byte_enable"], 0xFF)
            self.expect("mem_wdata", values["mem_wdata"], value)
            self.ram.write(addr, value)
        else:
            self.arrivals.append(self.cycle + self.latency)
            self.next_rdata = (self.cycle + 1, self.ram.read(addr))

    def _check_result(self, values: dict[str, int | None]) -> None:
        want = self.expected
        if self.pending_ops or self.pending_inserts:
            missing = self.pending_ops or self.pending_inserts
            raise AssertionError(f"cycle {self.cycle}: the walk ended before {missing}")
        # READ, WAIT and CHECK cycles per entry read, a WRITE cycle per write-back; a read outside RAM ends the
        # walk in its READ cycle (hardware.md)
        writes = sum(kind == "write" for kind, _, _ in want.memory_ops)
        cycles = want.reads * (2 + self.latency) - (1 + self.latency if want.fault == Fault.BUS else 0) + writes
        checks = [("result_fault_page", want.fault == Fault.PAGE), ("result_fault_bus", want.fault == Fault.BUS),
                  ("result_levels", want.reads), ("result_cycles", cycles), ("result_ad_writes", writes),
                  ("result_pwc_hit", self.inputs["pwc_hit"])]
        if want.fault == Fault.PAGE:
            checks += [("result_present", bool(want.errcode & ErrorCode.P)),
                       ("result_reserved", bool(want.errcode & ErrorCode.RSVD))]
        if want.fault == Fault.NONE:
            checks += [("result_frame", (want.frame & pte_addr_mask(self.maxphyaddr)) >> PAGE_SHIFT),
                       ("result_size", want.level - 1), ("result_writable", want.writable),
                       ("result_user", want.user), ("result_no_execute", want.no_execute),
                       ("result_global_", want.global_), ("result_dirty", want.dirty)]
        for port, expected in checks:
            self.expect(port, values[port], int(expected))


def _scenario(seed: int, walks: int, latency: int, pwc_hits: float) -> Any:
    return lambda params: WalkerEnvironment(params, params["seed"] * 100 + seed, walks, latency, pwc_hits)


SCENARIOS = {
    "walks_from_cr3_with_single_cycle_memory": _scenario(1, 60, 1, 0.0),
    "walks_from_pwc_hits_with_slow_memory": _scenario(2, 60, 3, 0.6),
    "mixed_starts_with_two_cycle_memory": _scenario(3, 60, 2, 0.3),
}


@cocotb.test()
@cocotb.parametrize(scenario=list(SCENARIOS))
async def walker_scenario(dut: Any, scenario: str) -> None:
    env = SCENARIOS[scenario](tb.job()["params"])
    await tb.run_cocotb(dut, env)


PARAMS = [{"mem_bytes": MEM_BYTES, "maxphyaddr": 40, "seed": 1}, {"mem_bytes": MEM_BYTES, "maxphyaddr": 36, "seed": 2}]


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "params"), tb.matrix(PARAMS, lambda p: f"pa{p['maxphyaddr']}", verilator=(0,)))
def test_page_walker_runner(simulator: str, params: dict[str, Any]) -> None:
    from conftest import require_simulator

    require_simulator(f"cocotb-{simulator}")
    tb.check_block(tb.BlockDesign("page_walker", params), simulator, "test_page_walker", SCENARIOS)
