"""Scoped workarounds for upstream bugs that stop a sampler from running (README, "Upstream notes").

ppddpm never edits ppdiffusers' source: a fix is a context that a step of the scheduler class it
concerns runs in (`step_fixes(scheduler)`, entered by the sampling loop and by the step observer, so
every step ppddpm runs or records), or that a user's own loop enters (`ppddpm.upstream_fixes()`).

UniPC (ppdiffusers 0.29, `UniPCMultistepScheduler`): UniC-p (p ≥ 2, the default corrector) and
UniP-p (p ≥ 3) build R from `paddle.to_tensor([r_1, …, 1.0])` with float32 0-d tensors r_k, which
paddle 3.3 makes float64, and b from float32 numbers, then call `paddle.linalg.solve(R, b)`, which
refuses the mix: the default config stops at its third step. `consistent_solve` casts the wider
operand of a mixed-dtype solve to the narrower dtype: it undoes paddle's promotion of R, so the solve
runs as it does where `to_tensor` keeps float32 (as torch does in diffusers, which ppdiffusers ports).
Not the wider: UniP-p (p ≥ 3) contracts its ρ with float32 differences without casting ρ back, so a
float64 ρ stops it there instead. A solve whose operands share a dtype is paddle's own, untouched, so
the fix changes nothing on a paddle without the bug.
"""
from __future__ import annotations

import contextlib
import threading

_LOCK = threading.Lock()
_ENTERED = [0]                 # how many consistent_solve blocks are open, over all threads


def _one_dtype(solve):
    """`solve` with a mixed-dtype pair of operands cast to the narrower of the two dtypes."""

    def solve_in_one_dtype(x, y, *args, **kwargs):
        if x.dtype != y.dtype:
            narrow = x.dtype if x.element_size() <= y.element_size() else y.dtype
            x, y = x.cast(narrow), y.cast(narrow)
        return solve(x, y, *args, **kwargs)

    solve_in_one_dtype.stock = solve
    return solve_in_one_dtype


@contextlib.contextmanager
def consistent_solve():
    """`paddle.linalg.solve` takes operands of two dtypes for the duration of the block (module
    docstring). Blocks nest and overlap across threads; paddle's own function is back when the last
    one closes. While one is open, a mixed-dtype solve anywhere in the process is promoted instead of
    raising; every other solve is unchanged."""
    import paddle

    with _LOCK:
        if _ENTERED[0] == 0:
            paddle.linalg.solve = _one_dtype(paddle.linalg.solve)
        _ENTERED[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _ENTERED[0] -= 1
            if _ENTERED[0] == 0:
                paddle.linalg.solve = paddle.linalg.solve.stock


# scheduler class name → the fixes its steps run in (by name: nothing here imports ppdiffusers)
FIXES = {"UniPCMultistepScheduler": (consistent_solve,)}
_BY_CLASS: dict = {}


def step_fixes(scheduler) -> contextlib.AbstractContextManager:
    """The context one step of `scheduler` runs in under ppddpm: its class's fixes (none: a no-op)."""
    cls = type(scheduler)
    fixes = _BY_CLASS.get(cls)
    if fixes is None:
        fixes = _BY_CLASS[cls] = tuple(fix for klass in cls.__mro__ for fix in FIXES.get(klass.__name__, ()))
    return _entered(fixes) if fixes else contextlib.nullcontext()


def upstream_fixes() -> contextlib.AbstractContextManager:
    """Every fix of FIXES for the duration of the block, for a loop ppddpm does not run: a ppdiffusers
    pipeline called directly, or a hand-written loop over `scheduler.step`.

        with ppddpm.upstream_fixes():
            images = pipe(num_inference_steps=25).images        # a UniPC pipeline, default config
    """
    return _entered(tuple(dict.fromkeys(fix for fixes in FIXES.values() for fix in fixes)))


@contextlib.contextmanager
def _entered(fixes: tuple):
    with contextlib.ExitStack() as stack:
        for fix in fixes:
            stack.enter_context(fix())
        yield
