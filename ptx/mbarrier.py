"""mbarrier (sm_90 flavour): an 8-byte shared-memory barrier with phases, arrival counts and a tx-count.

PTX semantics the twin follows: init(count) starts phase 0 with `count` pending arrivals and tx-count 0.
arrive decrements the pending count; expect_tx adds bytes to the tx-count; complete_tx (what TMA does as
bytes land) subtracts them, so the tx-count may go negative first. The current phase completes when the
pending count is 0 AND the tx-count is 0; then the pending count resets to `count` and the phase flips.
try_wait.parity(P) is true once the phase with parity P has completed, i.e. while the current phase's parity
is not P: right after init, waiting on parity 1 passes and waiting on parity 0 blocks.
"""
import threading

from ._asm import asm_leaf
from ._sim import _TIMEOUT, block_state

_TRY_WAIT_S = 0.005  # how long a twin try_wait suspends (PTX: a system-dependent time limit)


class MBarrier:
    """The simulator's state of one mbarrier object."""

    def __init__(self):
        self.cond = threading.Condition()
        self.count = None  # None until mbarrier.init
        self.pending = 0
        self.tx = 0
        self.phase = 0  # number of completed phases

    def init(self, count):
        with self.cond:
            self.count = self.pending = int(count)
            self.tx = 0
            self.phase = 0

    def _check(self):
        if self.count is None:
            raise RuntimeError("simulated mbarrier used before mbarrier.init (or after inval)")

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count
            self.cond.notify_all()

    def arrive(self, expect_bytes=0, arrivals=1):
        with self.cond:
            self._check()
            self.tx += int(expect_bytes)
            self.pending -= arrivals
            if self.pending < 0:
                raise RuntimeError("simulated mbarrier: more arrivals than its count in one phase")
            self._maybe_complete()

    def expect_tx(self, nbytes):
        with self.cond:
            self._check()
            self.tx += int(nbytes)

    def complete_tx(self, nbytes):
        with self.cond:
            self._check()
            self.tx -= int(nbytes)
            self._maybe_complete()

    def done(self, parity):
        return (self.phase & 1) != (int(parity) & 1)

    def wait(self, parity, timeout):
        with self.cond:
            self._check()
            return self.cond.wait_for(lambda: self.done(parity), timeout=timeout)


def sim_mbarrier(addr):
    """The simulator's MBarrier at shared address `addr` in the calling thread's block."""
    return block_state(("mbarrier", int(addr)), MBarrier)


def sim_mbarrier_complete_tx(addr, nbytes):
    """Twin-only: `nbytes` of an async copy tracked by the mbarrier at `addr` have landed (TMA twins call it)."""
    sim_mbarrier(addr).complete_tx(nbytes)


def _init_twin(addr, count):
    sim_mbarrier(addr).init(count)


def _inval_twin(addr):
    m = sim_mbarrier(addr)
    with m.cond:
        m.count = None


def _arrive_twin(addr):
    sim_mbarrier(addr).arrive()


def _arrive_expect_tx_twin(addr, nbytes):
    sim_mbarrier(addr).arrive(expect_bytes=nbytes)


def _expect_tx_twin(addr, nbytes):
    sim_mbarrier(addr).expect_tx(nbytes)


def _try_wait_twin(addr, parity):
    return 1 if sim_mbarrier(addr).wait(parity, _TRY_WAIT_S) else 0


def _test_wait_twin(addr, parity):
    m = sim_mbarrier(addr)
    with m.cond:
        m._check()
        return 1 if m.done(parity) else 0


def _wait_twin(addr, parity):
    if not sim_mbarrier(addr).wait(parity, _TIMEOUT):
        raise RuntimeError("simulated mbarrier wait timed out: deadlock, wrong count or missing tx bytes")


mbarrier_init = asm_leaf(
    "mbarrier_init", "mbarrier.init.shared::cta.b64 [$0], $1;", ins=("b32", "b32"),
    memory=True, volatile=True, twin=_init_twin,
    doc="Initialise the mbarrier at shared address `addr` (8-byte aligned) to expect `count` arrivals per phase.")

mbarrier_inval = asm_leaf(
    "mbarrier_inval", "mbarrier.inval.shared::cta.b64 [$0];", ins=("b32",),
    memory=True, volatile=True, twin=_inval_twin,
    doc="Invalidate the mbarrier at `addr` before its memory is reused for something else.")

mbarrier_arrive = asm_leaf(
    "mbarrier_arrive", "mbarrier.arrive.shared::cta.b64 _, [$0];", ins=("b32",),
    memory=True, volatile=True, twin=_arrive_twin,
    doc="Arrive once (release, CTA scope).")

mbarrier_arrive_expect_tx = asm_leaf(
    "mbarrier_arrive_expect_tx", "mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;", ins=("b32", "b32"),
    memory=True, volatile=True, twin=_arrive_expect_tx_twin,
    doc="Add `nbytes` to the tx-count of the current phase, then arrive once.")

mbarrier_expect_tx = asm_leaf(
    "mbarrier_expect_tx", "mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [$0], $1;", ins=("b32", "b32"),
    memory=True, volatile=True, twin=_expect_tx_twin,
    doc="Add `nbytes` to the tx-count of the current phase without arriving.")

mbarrier_complete_tx = asm_leaf(
    "mbarrier_complete_tx", "mbarrier.complete_tx.relaxed.cta.shared::cta.b64 [$0], $1;", ins=("b32", "b32"),
    memory=True, volatile=True, twin=lambda addr, nbytes: sim_mbarrier_complete_tx(addr, nbytes),
    doc="Subtract `nbytes` from the tx-count as if that many bytes of an async copy had landed.")

mbarrier_try_wait_parity = asm_leaf(
    "mbarrier_try_wait_parity",
    "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [$1], $2; selp.b32 $0, 1, 0, p; }",
    outs=("b32",), ins=("b32", "b32"), memory=True, volatile=True, twin=_try_wait_twin,
    doc="1 if the phase with parity `phase` has completed, else 0 after a bounded suspend (acquire, CTA scope).")

mbarrier_test_wait_parity = asm_leaf(
    "mbarrier_test_wait_parity",
    "{ .reg .pred p; mbarrier.test_wait.parity.shared::cta.b64 p, [$1], $2; selp.b32 $0, 1, 0, p; }",
    outs=("b32",), ins=("b32", "b32"), memory=True, volatile=True, twin=_test_wait_twin,
    doc="Like try_wait_parity but never suspends.")

# The labels are local to the { } block, so the leaf can be inlined many times in one kernel.
mbarrier_wait_parity = asm_leaf(
    "mbarrier_wait_parity",
    "{ .reg .pred p; TKN_MBAR_WAIT: mbarrier.try_wait.parity.shared::cta.b64 p, [$0], $1; "
    "@!p bra TKN_MBAR_WAIT; }",
    ins=("b32", "b32"), memory=True, volatile=True, twin=_wait_twin,
    doc="Block until the phase with parity `phase` of the mbarrier at `addr` has completed.")
