"""The CSR file (hdl/csr.py) against a model of the contract's CSR map: CR0 (PG alone writable, PE and WP read as
1), CR2 and CR3 read back as written, PFEC and CR2 set by page faults, the read-only configuration, and the
performance counters, each counting what protocol.Counter says from the access event of every response.

The environment plays hdl/mmu.py around the block. A request is accepted (`accept`, with its address and CPL on
`next_addr` and `next_user`, and `next_csr` for a CSR_READ or CSR_WRITE), and the block decodes a CSR operation's
address then: `known`, `writable` and `names_cr0`/`names_cr3` hold from the next cycle until the next CSR operation
is accepted, and at CPL 3 none is set. Its lookup cycle follows (`in_lookup`, with the registered
request on `op`, `addr` and `wdata`: a CSR_READ takes its value, a CSR_WRITE commits), then a memory operation's
walk or wait, then the response cycle (its access event is counted). The next request is accepted in that response
cycle or in an idle one after it. Both the cocotb module and its pytest entry `test_csr_runner` (Verilator, Icarus,
and MyHDL).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cocotb
import pytest
import tb

from hdl.protocol import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CSR_ADDR_WIDTH,
    ERRCODE_WIDTH,
    Counter,
    Csr,
    Fault,
    MmuConfig,
    Op,
    TlbPolicy,
)

READ_ONLY = (Csr.PFEC, Csr.CFG_TLB_ENTRIES, Csr.CFG_TLB_WAYS, Csr.CFG_TLB_POLICY, Csr.CFG_PWC_ENTRIES,
             Csr.CFG_MEM_BYTES, Csr.CFG_MAXPHYADDR, Csr.CFG_MEM_LATENCY)
COUNTER_ADDRESSES = tuple(Csr.COUNTER_BASE + counter for counter in Counter)
# Addresses outside the map: between its CSRs, past the last counter, and with bits 63..12 set (decision 7).
UNKNOWN = (0x001, 0x005, 0x00F, 0x017, 0x0FF, Csr.COUNTER_BASE + len(Counter), 0xFFF, 1 << CSR_ADDR_WIDTH,
           1 << 63 | Csr.CR3)


def config_of(params: dict[str, Any]) -> MmuConfig:
    return MmuConfig(**{key: value for key, value in params.items() if key != "seed"})


class CsrModel:
    """The CSRs and counters as the contract defines them, from reset."""

    def __init__(self, config: MmuConfig) -> None:
        self.config = config
        self.paging = False
        self.cr2 = self.cr3 = self.pfec = 0
        self.counters = dict.fromkeys(Counter, 0)

    def known(self, addr: int, user: bool) -> bool:
        """A CSR exists for supervisor requests only: at CPL 3 every CSR access is GP (x86's `mov cr`)."""
        return not user and (addr in set(Csr) - {Csr.COUNTER_BASE} or addr in COUNTER_ADDRESSES)

    def writable(self, addr: int, user: bool) -> bool:
        return not user and addr in (Csr.CR0, Csr.CR2, Csr.CR3)

    def read(self, addr: int, user: bool, cycle: int) -> int:
        """What a CSR_READ of `addr` in `cycle` returns: zero for an address outside the map, or from user mode."""
        if user:
            return 0
        if addr == Csr.CR0:
            return CR0_PE | CR0_WP | (CR0_PG if self.paging else 0)
        if addr in (Csr.CR2, Csr.CR3, Csr.PFEC):
            return {Csr.CR2: self.cr2, Csr.CR3: self.cr3, Csr.PFEC: self.pfec}[addr]
        if addr in READ_ONLY:
            return self.config.csr_value(Csr(addr))
        if addr == Csr.COUNTER_BASE + Counter.CYCLES:
            return cycle
        if addr in COUNTER_ADDRESSES:
            return self.counters[Counter(addr - Csr.COUNTER_BASE)]
        return 0

    def write(self, addr: int, value: int) -> None:
        if addr == Csr.CR0:
            self.paging = bool(value & CR0_PG)  # PE and WP are fixed; every other bit is dropped
        elif addr == Csr.CR2:
            self.cr2 = value
        elif addr == Csr.CR3:
            self.cr3 = value

    def count(self, op: int, addr: int, event: dict[str, int]) -> None:
        """The response of `op` at `addr` with its access event: CR2/PFEC on a page fault, and every counter."""
        fault = event["event_fault"]
        if fault == Fault.PAGE:
            self.cr2, self.pfec = addr, event["event_errcode"]
        c = self.counters
        c[Counter.LOADS] += op == Op.LOAD and fault == Fault.NONE
        c[Counter.STORES] += op == Op.STORE and fault == Fault.NONE
        c[Counter.TLB_HITS] += event["event_tlb_hit"]
        c[Counter.TLB_MISSES] += event["event_tlb_miss"]
        c[Counter.TLB_EVICTIONS] += event["event_evict"]
        c[Counter.WALKS] += event["event_walk_levels"] > 0
        c[Counter.WALK_CYCLES] += event["event_walk_cycles"]
        c[Counter.PTE_READS] += event["event_walk_levels"]
        c[Counter.PWC_HITS] += event["event_pwc_hits"]
        c[Counter.AD_WRITES] += event["event_ad_writes"]
        c[Counter.INVLPGS] += op == Op.INVLPG and fault == Fault.NONE  # executed ones: at CPL 3 it is GP
        c[Counter.FLUSHES] += event["event_flush"]
        for counter, code in ((Counter.FAULTS_PAGE, Fault.PAGE), (Counter.FAULTS_GP, Fault.GP),
                              (Counter.FAULTS_ALIGN, Fault.ALIGN), (Counter.FAULTS_BUS, Fault.BUS)):
            c[counter] += fault == code


NO_EVENT = {"event_valid": 0, "event_fault": 0, "event_errcode": 0, "event_flush": 0, "event_tlb_hit": 0,
            "event_tlb_miss": 0, "event_evict": 0, "event_walk_levels": 0, "event_walk_cycles": 0,
            "event_pwc_hits": 0, "event_ad_writes": 0}


class CsrEnvironment(tb.Environment):
    """`operations` random operations, `csr_share` of them CSR reads and writes of any address (in the map or
    not, writable or not), the rest memory operations, INVLPGs and FLUSHes with random access events; checks every
    output every cycle against CsrModel."""

    outputs = ("rdata", "known", "writable", "names_cr0", "names_cr3", "paging", "cr3", "cycles")

    def __init__(self, params: dict[str, Any], seed: int, operations: int, csr_share: float, max_idle: int) -> None:
        super().__init__(seed)
        self.model = CsrModel(config_of(params))
        self.csr_share, self.max_idle = csr_share, max_idle
        self.decoded: tuple[int, int] | None = None  # the address and CPL of the last CSR operation accepted
        self.rdata = 0  # the last CSR_READ's value, which the block holds
        self.inputs: dict[str, int] = {}
        self.cycles = self._cycles(operations)

    def drive(self) -> dict[str, int]:
        inputs = next(self.cycles, None)
        if inputs is None:  # the scenario is over: one idle cycle more
            self.done = True
            inputs = self._cycle(self.inputs)
        self.inputs = inputs
        return inputs

    def _csr_request(self) -> dict[str, int]:
        op = int(self.rng.choice((Op.CSR_READ, Op.CSR_WRITE)))
        addr = self.rng.choice((*Csr, *COUNTER_ADDRESSES, *UNKNOWN))
        wdata = self.rng.choice((self.rng.getrandbits(64), CR0_PG, 0, self.rng.getrandbits(64) & ~CR0_PG))
        return {"op": op, "user": int(self.rng.random() < 0.25), "addr": int(addr), "wdata": wdata}

    def _csr_event(self, request: dict[str, int]) -> dict[str, int]:
        """The response event of a CSR operation: GP for an address outside the map or a read-only write, and a
        flush for a successful CR3 write."""
        op, addr, user = request["op"], request["addr"], request["user"]
        allowed = self.model.known(addr, user) if op == Op.CSR_READ else self.model.writable(addr, user)
        return NO_EVENT | {"event_valid": 1, "event_fault": int(Fault.NONE if allowed else Fault.GP),
                           "event_flush": op == Op.CSR_WRITE and allowed and addr == Csr.CR3}

    def _other_request(self) -> tuple[dict[str, int], dict[str, int]]:
        """A memory operation, INVLPG, FLUSH or undefined op, and a random access event for its response that a
        real one could have: hit or miss or neither, and the walk's figures (eviction, PWC hit, A/D writes) only
        with a walk."""
        op = self.rng.choice((Op.LOAD, Op.LOAD, Op.STORE, Op.STORE, Op.INVLPG, Op.FLUSH, 6, 7))
        fault = self.rng.choice((Fault.NONE,) * 4 + (Fault.PAGE, Fault.GP, Fault.ALIGN, Fault.BUS))
        tlb_hit, tlb_miss = self.rng.choice(((1, 0), (0, 1), (0, 0)))
        walk_levels = self.rng.choice((0, 0, 1, 2, 3, 4))
        event = NO_EVENT | {
            "event_valid": 1, "event_fault": int(fault), "event_flush": op == Op.FLUSH,
            "event_errcode": self.rng.getrandbits(ERRCODE_WIDTH) if fault == Fault.PAGE else 0,
            "event_tlb_hit": tlb_hit, "event_tlb_miss": tlb_miss, "event_walk_levels": walk_levels,
        }  # fmt: skip
        if walk_levels:
            event |= {"event_evict": self.rng.random() < 0.3, "event_walk_cycles": self.rng.randrange(1 << 16),
                      "event_pwc_hits": self.rng.getrandbits(1), "event_ad_writes": self.rng.randint(0, walk_levels)}
        request = {"op": int(op), "user": self.rng.getrandbits(1), "addr": self.rng.getrandbits(64),
                   "wdata": self.rng.getrandbits(64)}
        return request, event

    def _next_request(self) -> tuple[dict[str, int], dict[str, int]]:
        """A request, and the access event of its response."""
        if self.rng.random() < self.csr_share:
            request = self._csr_request()
            return request, self._csr_event(request)
        return self._other_request()

    def _cycle(self, request: dict[str, int], accept: dict[str, int] | None = None, **inputs: int) -> dict[str, int]:
        """One cycle's inputs: the registered `request` (the MMU's registers, of which fault_addr is the address),
        the request port (`accept`ed, or whatever is on it), and `inputs` (in_lookup, the event)."""
        if accept is None:
            port = {"accept": 0, "next_addr": self.rng.getrandbits(64), "next_user": self.rng.getrandbits(1),
                    "next_csr": self.rng.getrandbits(1)}
        else:
            port = {"accept": 1, "next_addr": accept["addr"], "next_user": accept["user"],
                    "next_csr": int(accept["op"] in (Op.CSR_READ, Op.CSR_WRITE))}
        registered = {name: request[name] for name in ("op", "addr", "wdata")} | {"fault_addr": request["addr"]}
        return {"in_lookup": 0, **NO_EVENT, **registered, **port, **inputs}

    def _cycles(self, operations: int) -> Iterator[dict[str, int]]:
        """The scenario, cycle by cycle: each operation's accepting cycle (an idle one, or the last response),
        lookup, the cycles a memory operation waits, and response."""
        request = {"op": 0, "user": 0, "addr": 0, "wdata": 0}  # as the MMU's registers hold it from reset
        accepted, event = self._next_request()
        yield self._cycle(request, accept=accepted)
        for left in reversed(range(operations)):
            request, response = accepted, event
            yield self._cycle(request, in_lookup=1)
            if request["op"] not in (Op.CSR_READ, Op.CSR_WRITE):
                for _ in range(self.rng.randint(0, 2)):  # a walk, a memory access
                    yield self._cycle(request)
            idle = self.gap(self.max_idle, 0.5)
            accepted, event = self._next_request() if left else (None, {})
            yield self._cycle(request, accept=None if idle else accepted, **response)
            for cycle in range(idle):
                yield self._cycle(request, accept=accepted if cycle == idle - 1 else None)

    def sample(self, values: dict[str, int | None]) -> None:
        inputs, model = self.inputs, self.model
        op, addr, wdata = inputs["op"], inputs["addr"], inputs["wdata"]
        if self.decoded is None:  # from reset until the first CSR operation: nothing decoded, nothing known
            for output in ("known", "writable", "names_cr0", "names_cr3"):
                self.expect(output, values[output], 0)
        else:
            decoded, user = self.decoded
            self.expect(f"known({decoded:#x}, user={user})", values["known"], model.known(decoded, user))
            self.expect(f"writable({decoded:#x}, user={user})", values["writable"], model.writable(decoded, user))
            for output, csr in (("names_cr0", Csr.CR0), ("names_cr3", Csr.CR3)):
                self.expect(f"{output}({decoded:#x}, user={user})", values[output], int(not user and decoded == csr))
        self.expect("paging", values["paging"], model.paging)
        self.expect("cr3", values["cr3"], model.cr3)
        self.expect("cycles", values["cycles"], self.cycle)
        self.expect("rdata", values["rdata"], self.rdata)
        # what the clock edge that ends this cycle does (a lookup's request is the one decoded)
        if inputs["in_lookup"] and op in (Op.CSR_READ, Op.CSR_WRITE):
            user = self.decoded[1]  # (decoded as the operation was accepted)
            if op == Op.CSR_READ:
                self.rdata = model.read(addr, user, self.cycle)
            elif model.writable(addr, user):
                model.write(addr, wdata)
        elif inputs["event_valid"]:
            model.count(op, addr, inputs)
        if inputs["accept"] and inputs["next_csr"]:
            self.decoded = inputs["next_addr"], inputs["next_user"]


def _scenario(seed: int, operations: int, csr_share: float, max_idle: int) -> Any:
    return lambda params: CsrEnvironment(params, params["seed"] * 100 + seed, operations, csr_share, max_idle)


SCENARIOS = {
    # reads of every CSR, writes of every one (read-only and unknown ones change nothing), CR0.PG on and off;
    # a quarter of them from user mode (GP: nothing read, nothing written)
    "every_csr_read_and_written": _scenario(1, 300, 1.0, 0),
    # operations of every kind with random events, and reads of the counters between them, after random stalls
    "counters_count_every_event": _scenario(2, 400, 0.4, 3),
    # long idle stretches: CYCLES counts them, nothing else moves
    "counters_hold_between_operations": _scenario(3, 100, 0.5, 12),
}


@cocotb.test()
@cocotb.parametrize(scenario=list(SCENARIOS))
async def csr_scenario(dut: Any, scenario: str) -> None:
    env = SCENARIOS[scenario](tb.job()["params"])
    await tb.run_cocotb(dut, env)


PARAMS = [
    {"tlb_entries": 16, "seed": 1},  # the default configuration
    {"tlb_entries": 32, "tlb_ways": 4, "tlb_policy": int(TlbPolicy.RANDOM), "pwc_entries": 0, "mem_bytes": 1 << 26,
     "mem_latency": 3, "maxphyaddr": 36, "seed": 2},
]


@pytest.mark.rtl
@pytest.mark.parametrize(("simulator", "params"), tb.matrix(PARAMS, lambda p: f"config{p['seed']}", verilator=(0,)))
def test_csr_runner(simulator: str, params: dict[str, Any]) -> None:
    from conftest import require_simulator

    require_simulator(f"cocotb-{simulator}")
    tb.check_block(tb.BlockDesign("csr", params), simulator, "test_csr", SCENARIOS)
