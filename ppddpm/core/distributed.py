"""Many-seed work split over processes with paddle.distributed: same bits as one process.

Started by `python -m paddle.distributed.launch --nproc_per_node N …` (NCCL on GPUs; on CPU
with `PADDLE_DISTRI_BACKEND=gloo`), or by the CLI's `--nproc N`, each process is one rank with
its own device. Work comes in *groups* — the seeds that share one batched pipeline call —
and `sharded` runs group g on rank g mod N, then gathers every rank's results to every rank
(`all_gather_object`), in group order:

    results = sharded(groups, work)        # work(group) -> result, on the rank that owns it

A group is computed the same way whichever rank runs it, so the gathered results are bitwise
those of a one-process run with the same groups (paddle's kernels round differently at
different batch sizes, which is why work is split by group and never by re-batching).

A rank whose work raises still joins the gather, carrying its error; every rank then raises
that error (the lowest failing rank's), so the run fails with it instead of hanging. No rank
enters the gather before every rank has finished its share (`all_arrived`: gloo would give up
on a rank more than 30 s slower). A rank that dies outright leaves the others waiting there
until the launcher, which saw it die, stops them (or, in the gather itself, breaks it: gloo's
"Connection reset by peer").
"""
from __future__ import annotations

import itertools
import pickle
import time
import traceback
from typing import Callable, List, Sequence, Tuple

from ppddpm.core.ranks import mark_joined, rank, ranks
from ppddpm.errors import InputError

ARRIVAL_POLL = 0.05          # s between looks at the store while waiting for the other ranks (`all_arrived`)
_ARRIVALS = itertools.count()


def world() -> Tuple[int, int]:
    """(rank, number of ranks) of this process; (0, 1) outside a paddle.distributed launch."""
    size = ranks()
    if size <= 1:
        return 0, 1
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()
        dist.barrier()              # every rank is past init: only now is this one marked as joined
        mark_joined()
    return dist.get_rank(), dist.get_world_size()


def all_arrived(store=None):
    """Wait, for as long as it takes, until every rank has come this far: the n-th call on each rank is
    the same point of the same command. Arrivals are counted in paddle's store (rank 0's TCP store),
    polled every ARRIVAL_POLL s. gloo's own collectives give up after 30 s (gloo's default timeout,
    which paddle leaves as it is: "TIMEOUT … unbound_buffer.cc"), so a rank whose share of the work
    ended more than that before another's would fail in the gather; after this wait, every rank enters
    the collective together."""
    store = store or _store()
    _count_to(store, f"ppddpm/arrived/{next(_ARRIVALS)}", ranks())


def leave():
    """At the end of a launched rank's command: wait until every rank that joined is here too, so that
    no rank exits — closing its connections — while another still reads from them. Rank 0 holds the
    store, so it leaves last, once every other rank has said it no longer needs it. A rank that never
    joined has nothing to wait for; if rank 0 is gone already, its store's error ends the wait."""
    if ranks() <= 1:
        return
    import paddle.distributed as dist

    if not dist.is_initialized():
        return
    store = _store()
    try:
        all_arrived(store)
        if rank() == 0:
            _count_to(store, "ppddpm/left", ranks() - 1, add=0)
        else:
            store.add("ppddpm/left", 1)
    except (RuntimeError, ValueError):   # paddle's store: ValueError "TCP receive error", its holder gone
        pass


def _store():
    from paddle.base import core

    return core.create_or_get_global_tcp_store()


def _count_to(store, key: str, count: int, add: int = 1):
    """Add `add` to the counter `key` in the store, then poll until it reaches `count`."""
    if store.add(key, add) < count:
        while store.add(key, 0) < count:
            time.sleep(ARRIVAL_POLL)


def groups_of(items: Sequence, size: int) -> List[list]:
    """Consecutive groups of `size` items (the last may be shorter)."""
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def owned(n_groups: int, rank: int, ranks: int) -> List[int]:
    """The groups rank `rank` runs: g = rank, rank + N, rank + 2N, …"""
    return list(range(rank, n_groups, ranks))


class RankFailed(RuntimeError):
    """Another rank's work raised an error that could not be carried over as itself."""


def sharded(groups: Sequence, work: Callable, what: str = "work") -> list:
    """`[work(g) for g in groups]`, with the groups split over the ranks (module docstring)."""
    rank, ranks = world()
    if ranks == 1:
        return [work(g) for g in groups]
    try:
        mine = ("ok", [(g, work(groups[g])) for g in owned(len(groups), rank, ranks)])
    except Exception as exc:                       # carried to every rank, raised there
        mine = ("error", _portable(exc, rank, what))
    import paddle.distributed as dist

    all_arrived()
    gathered: list = []
    dist.all_gather_object(gathered, mine)
    for status, payload in gathered:
        if status == "error":
            raise payload
    results = [None] * len(groups)
    for _, done in gathered:
        for g, result in done:
            results[g] = result
    return results


def _portable(exc: Exception, rank: int, what: str) -> Exception:
    """A ppddpm InputError as itself (bad input stays one clear line, CLI exit 2); any other error
    — a real bug — as RankFailed carrying the rank's traceback."""
    if isinstance(exc, InputError):
        try:
            pickle.loads(pickle.dumps(exc))
            exc.rank = rank
            return exc
        except Exception:
            pass
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RankFailed(f"rank {rank} failed in {what}: {type(exc).__name__}: {exc}\n"
                      f"--- rank {rank}'s traceback:\n{text}")
