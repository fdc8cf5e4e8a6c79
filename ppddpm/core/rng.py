"""Random-number state, so that several step formulas can consume the *same* noise z.

ppdiffusers' `paddle.Generator().manual_seed(s)` returns a *name* (a string) in its
`RNGStatesTracker`; a draw with it swaps the named CUDA state in around `paddle.randn`.
On a CPU build there is no CUDA state: `manual_seed(s)` simply calls `paddle.seed(s)` and
every draw comes from paddle's global CPU generator. Snapshotting both the global state
and the named entry therefore replays a draw exactly on CPU and GPU alike.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
import threading

_counter = itertools.count()
_lock = threading.Lock()
# Held while a step draws noise that is then replayed or shared (recording the `noise` field,
# `compare`): on CPU every paddle draw comes from one global generator, so another thread's
# recorded step must not draw in between.
STEP_LOCK = threading.RLock()


def make_generator(seed: int):
    """`paddle.Generator().manual_seed(seed)` under a unique name.

    ppdiffusers names generators by `time.time()`, so two created in one clock tick
    collide ("state ... already exists"); this one cannot.
    """
    import paddle
    import ppdiffusers  # noqa: F401  (installs ppdiffusers' paddle.Generator)

    with _lock:
        name = f"ppddpm-{os.getpid()}-{next(_counter)}-seed{int(seed)}"
    return paddle.Generator().manual_seed(int(seed), generator_name=name)


def release_generator(generator) -> None:
    """Forget a generator made by `make_generator` (the tracker keeps every name forever)."""
    from ppdiffusers.utils.paddle_utils import get_rng_state_tracker

    if isinstance(generator, str) and generator.startswith("ppddpm-"):
        get_rng_state_tracker().states_.pop(generator, None)


@contextlib.contextmanager
def seeded(seed: int):
    """A generator made by `make_generator(seed)` for the block, released (`release_generator`) when
    it ends, exceptions included."""
    generator = make_generator(seed)
    try:
        yield generator
    finally:
        release_generator(generator)


def _names(generator):
    if generator is None:
        return []
    if isinstance(generator, (list, tuple)):
        return [g for g in generator if isinstance(g, str)]
    return [generator] if isinstance(generator, str) else []


def snapshot(generator=None):
    """The RNG state a draw with `generator` would start from."""
    import paddle
    from ppdiffusers.utils.paddle_utils import get_rng_state_tracker

    states = get_rng_state_tracker().states_
    named = {n: copy.copy(states[n]) for n in _names(generator) if n in states}
    return paddle.get_rng_state(), named


def restore(generator, snap) -> None:
    import paddle
    from ppdiffusers.utils.paddle_utils import get_rng_state_tracker

    global_state, named = snap
    paddle.set_rng_state(global_state)
    get_rng_state_tracker().states_.update({n: copy.copy(s) for n, s in named.items()})


def replay_noise(generator, before, shape, dtype):
    """The z that `DDPMScheduler.step` drew from state `before`:
    `randn_tensor(model_output.shape, generator=generator, dtype=model_output.dtype)`.
    The RNG is left exactly where it was."""
    from ppdiffusers.utils.paddle_utils import randn_tensor

    after = snapshot(generator)
    restore(generator, before)
    try:
        return randn_tensor(shape, generator=generator, dtype=dtype)
    finally:
        restore(generator, after)


class _NoiseSource:
    """What `ppddpm.core.loop` draws from. Draws happen inside `with source:`, which holds `STEP_LOCK`:
    another thread's replayed or shared step cannot draw in between, nor a swap here overwrite one
    there. Inside `with source.replaying():` every `with source:` starts from the RNG position of the
    block's start, so every variant at a step consumes the same z. A subclass says what its position is
    (`_position`), and what entering and leaving a draw do to paddle's generators (`_swap_in/_out`)."""

    generator = None

    def __init__(self):
        self._replay = None

    def __enter__(self):
        STEP_LOCK.acquire()
        try:
            self._swap_in()
        except BaseException:                # the block never starts: __exit__ will not release the lock
            STEP_LOCK.release()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._swap_out()
        finally:
            STEP_LOCK.release()
        return False

    @contextlib.contextmanager
    def replaying(self):
        with STEP_LOCK:
            self._replay = self._position()
        try:
            yield self
        finally:
            self._replay = None

    def _position(self):
        raise NotImplementedError

    def _swap_in(self):
        raise NotImplementedError

    def _swap_out(self):
        pass


class Draws(_NoiseSource):
    """A run's draws as ppdiffusers' pipelines make them: from `generator` as the caller gives it
    (`paddle.Generator().manual_seed(s)`'s name, a list of them, or None for paddle's global
    generator). `ppddpm.core.loop` passes it to `randn_tensor` and to `step` where the step takes it."""

    def __init__(self, generator=None):
        super().__init__()
        self.generator = generator

    @property
    def step_arguments(self) -> dict:
        return {"generator": self.generator}

    def _position(self):
        return snapshot(self.generator)

    def _swap_in(self):
        if self._replay is not None:
            restore(self.generator, self._replay)


class SeedStream(_NoiseSource):
    """The sequence of draws a solo run with `paddle.Generator().manual_seed(seed)` makes,
    kept apart so that many seeds can share one batched run (`ppddpm.compare(seed=[...])`).

        with stream:                 # draws with generator=None come from this seed's stream
            x_T = randn_tensor(shape, generator=None, dtype=dtype)
        with stream.replaying():     # each `with stream:` inside draws the same numbers
            for formula in variants:
                with stream:
                    formula(...)     # every variant consumes the same z

    The global generator is swapped in and out under `STEP_LOCK`, so a recorded step of another
    thread never draws from this stream (or this stream from its).
    """

    generator = None                 # draws come from paddle's global generator, swapped to this stream's state
    step_arguments: dict = {}

    def __init__(self, seed: int):
        import paddle

        super().__init__()
        with STEP_LOCK:
            outer = paddle.get_rng_state()
            paddle.seed(int(seed))
            self.seed = int(seed)
            self.state = paddle.get_rng_state()
            paddle.set_rng_state(outer)

    def _position(self):
        return self.state

    def _swap_in(self):
        """Within the block, draws with `generator=None` come from this seed's stream."""
        import paddle

        if self._replay is not None:
            self.state = self._replay
        self._outer = paddle.get_rng_state()
        paddle.set_rng_state(self.state)

    def _swap_out(self):
        """The stream's state is kept for the next block; paddle's global generator gets its own back.
        (`replaying()`: after the block the stream goes on from where the last draw in it ended.)"""
        import paddle

        self.state = paddle.get_rng_state()
        paddle.set_rng_state(self._outer)
