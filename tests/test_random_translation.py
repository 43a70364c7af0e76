"""Randomized translation: random page tables and random access streams, checked against tests/x86_model.py.

Every stream runs on the reference backend and on the verilator backend (a short one on myhdl): each response,
including CR2/PFEC reads after faults, must equal the model's, and the backends' access events must agree
(cosim.analysis.lockstep), so the TLB, PWC and replacement behaviour is cross-checked too. A failure names the seed
and the first divergent operation with the operations before it.
"""

from __future__ import annotations

import pytest
from x86_model import Access, Machine, first_model_divergence, generate_stream, run_stream

from cosim.analysis.lockstep import first_divergence
from hdl.protocol import ErrorCode, Fault, MmuConfig, Op, Pte, TlbPolicy

CONFIG = MmuConfig(tlb_entries=8, tlb_ways=2, tlb_policy=TlbPolicy.PLRU, pwc_entries=4)  # small: many evictions


def test_the_model_translates_a_hand_built_table():
    """The model itself, on a table worked out by hand: 4 KiB, 2 MiB and 1 GiB pages, A/D, faults."""
    machine = Machine(MmuConfig())
    memory = machine.memory
    p, w, u, a, d, ps, nx = (Pte.PRESENT, Pte.WRITABLE, Pte.USER_ACCESSIBLE, Pte.ACCESSED, Pte.DIRTY,
                             Pte.HUGE_PAGE, Pte.NO_EXECUTE)
    memory.write(0x1000, 0x2000 | p | w | u)  # PML4[0] -> PDPT at 0x2000
    memory.write(0x2000, 0x3000 | p | w | u)  # PDPT[0] -> PD at 0x3000
    memory.write(0x2008, 0x4000_0000 | p | ps)  # PDPT[1]: 1 GiB page at 1 GiB, supervisor read-only
    memory.write(0x3000, 0x4000 | p | w)  # PD[0] -> PT at 0x4000, supervisor only
    memory.write(0x3008, 0x20_0000 | p | w | u | ps | nx)  # PD[1]: 2 MiB page at 2 MiB
    memory.write(0x4000 + 8 * 5, 0x9000 | p | w)  # PT[5]: 0x5000 -> 0x9000
    machine.cr3, machine.paging = 0x1000, True
    assert machine.execute(Op.STORE, 0x5008, 3, 0x1122, False, False) == (0, Fault.NONE, 0)
    assert memory.read(0x9008) == 0x1122
    assert memory.read(0x4028) == 0x9000 | p | w | a | d  # the leaf got A and D
    assert memory.read(0x1000) & a and memory.read(0x2000) & a and memory.read(0x3000) & a
    assert machine.execute(Op.LOAD, 0x5008, 3, 0, True, False) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.U)
    assert machine.cr2 == 0x5008
    assert machine.execute(Op.LOAD, 0x6000, 2, 0, True, False) == (0, Fault.PAGE, ErrorCode.U)  # PT[6] absent
    assert machine.execute(Op.LOAD, 0x20_1234, 2, 0, True, True) == (0, Fault.PAGE,
                                                                     ErrorCode.P | ErrorCode.U | ErrorCode.I)
    assert machine.translate(0x20_1234, Access()).paddr == 0x20_1234
    assert machine.execute(Op.STORE, 0x4000_0000, 3, 1, False, False) == (0, Fault.PAGE,
                                                                          ErrorCode.P | ErrorCode.W)
    assert machine.translate(0x4123_4568, Access()).paddr == 0x4123_4568  # outside 1 MiB of RAM...
    assert machine.execute(Op.LOAD, 0x4123_4568, 3, 0, False, False) == (0, Fault.BUS, 0)  # ...so BUS
    memory.write(0x3008, 0x20_0000 | p | ps | 1 << 13)  # bit 13 of a 2 MiB leaf is reserved
    assert machine.execute(Op.LOAD, 0x20_0000, 3, 0, False, False) == (0, Fault.PAGE, ErrorCode.P | ErrorCode.RSVD)
    assert machine.execute(Op.LOAD, 1 << 47, 3, 0, False, False) == (0, Fault.GP, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_stream_on_the_reference_matches_the_model(seed):
    stream = generate_stream(seed, 3000, CONFIG)
    run = run_stream("reference", CONFIG, stream.requests)
    divergence = first_model_divergence(seed, stream, run)
    assert divergence is None, divergence
    faults = {fault for _, fault, _ in stream.expected}
    assert {Fault.NONE, Fault.PAGE, Fault.GP, Fault.ALIGN, Fault.BUS} <= faults  # the stream covers every outcome


@pytest.mark.rtl
@pytest.mark.parametrize(("seed", "config"), [  # configurations other tests build too: their libraries are shared
    (11, MmuConfig()),
    (12, MmuConfig(tlb_entries=8, tlb_ways=1, pwc_entries=0, mem_latency=3)),
    (13, MmuConfig(tlb_entries=4, tlb_policy=TlbPolicy.RANDOM)),
], ids=["e16-plru-pwc8", "e8-direct-nopwc-l3", "e4-random-pwc8"])  # fmt: skip
def test_random_stream_on_verilator_matches_the_model_and_the_reference(seed, config):
    stream = generate_stream(seed, 3000, config)
    runs = [run_stream(backend, config, stream.requests) for backend in ("reference", "verilator")]
    for run in runs:
        divergence = first_model_divergence(seed, stream, run)
        assert divergence is None, divergence
    divergence = first_divergence(runs)
    assert divergence is None, f"seed {seed}:\n{divergence.report()}"


@pytest.mark.rtl
def test_short_random_stream_on_myhdl_matches_the_model_and_the_reference():
    seed = 21
    stream = generate_stream(seed, 400, CONFIG)
    runs = [run_stream(backend, CONFIG, stream.requests) for backend in ("reference", "myhdl")]
    for run in runs:
        divergence = first_model_divergence(seed, stream, run)
        assert divergence is None, divergence
    divergence = first_divergence(runs)
    assert divergence is None, f"seed {seed}:\n{divergence.report()}"
