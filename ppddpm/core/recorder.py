"""Recording every step of a pipeline run — any sampler `ppddpm.core.adapters` adapts — by observing
`scheduler.step`: the mechanism behind `ppddpm.record` and `ppddpm.sample_trajectory`
(`ppddpm.pipelines.recording`, which adds what the kind of pipeline needs: `ppddpm.core.support`).

    with record_steps(pipe, every=50) as traj:            # pixel pipelines and bare schedulers
        pipe(generator=paddle.Generator().manual_seed(777))
    traj.prev_sample            # [N, B, C, H, W]  x_{t-1} after each recorded step
    traj.column("noise_std")    # [N]              and every per-step column (`ppddpm.core.columns`)

The recorder is an observer layer (`ppddpm.core.intercept`) on that scheduler instance only, so
it records whatever formula is in force (stock or a `patch_step` variant), and leaves the
scheduler as it found it when the block ends, exceptions included.
"""
from __future__ import annotations

import contextlib
import collections
import json
import warnings
from typing import Iterable, Optional

from ppddpm import __version__
from ppddpm._moved import moved_names
from ppddpm.core.adapters import HostTables, adapter_for, clipping_of, scheduler_of
from ppddpm.core.columns import COLUMNS, finite, run_columns
from ppddpm.core.intercept import formula_in_force
from ppddpm.core.records import StepObserver, StepRecord, observe
from ppddpm.core.support import RunSupport
from ppddpm.core.transfer import DeviceChunks, to_host
from ppddpm.errors import BadType, BadValue, WriteFailed, check_int
from ppddpm.storage.format import DEFAULT_FIELDS, FIELDS, GUIDANCE_FIELDS, kept_steps, timestep_value
from ppddpm.storage.writer import TrajectoryWriter, check_destination

__all__ = ["NonFiniteWarning", "UnscaledLoopWarning", "check_every", "check_fields", "kept_steps", "record_steps",
           "versions", "warn_if_loop_skips_scaling"]


class NonFiniteWarning(RuntimeWarning):
    pass


class UnscaledLoopWarning(UserWarning):
    """The pipeline's loop does not scale the sampler's samples as it needs (`RunSupport.unscaled_loop`:
    e.g. a `DDPMPipeline` running Euler skips `init_noise_sigma` and `scale_model_input`): the run
    records what it ran, wrong samples."""


def warn_if_loop_skips_scaling(pipe, scheduler, support: Optional[RunSupport] = None):
    """Once the timesteps are set: an UnscaledLoopWarning when the loop of `pipe` does not scale the samples
    as `scheduler` needs (`RunSupport.unscaled_loop`; `support`: the pipeline's, default a pixel pipeline's)."""
    why = (support or RunSupport(pipe)).unscaled_loop(scheduler)
    if why:
        warnings.warn(why, UnscaledLoopWarning, stacklevel=5)


# --------------------------------------------------------------------------- validation

def check_every(every) -> int:
    return check_int("every", every, hint=" (1 records every step, 50 every 50th)")


def check_fields(fields) -> tuple:
    if fields == "all":
        return tuple(FIELDS)
    if isinstance(fields, str):
        fields = (fields,)
    fields = tuple(fields)
    unknown = [f for f in fields if f not in FIELDS and f not in GUIDANCE_FIELDS]
    if unknown or not fields:
        raise BadValue(f"unknown field(s) {unknown or fields!r}; choose from {', '.join(FIELDS)} or 'all' "
                       f"(guided latent pipelines: also {', '.join(GUIDANCE_FIELDS)})")
    return tuple(dict.fromkeys(fields))


def versions() -> dict:
    import paddle
    import ppdiffusers

    return {"ppddpm": __version__, "ppdiffusers": ppdiffusers.__version__, "paddle": paddle.__version__}


def _jsonable(obj):
    return json.loads(json.dumps(dict(obj), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --------------------------------------------------------------------------- the recorder

class _Recorder:
    """Consumes the StepRecords of one run (`ppddpm.core.records.StepObserver`) into a Trajectory.

    Nothing is read from the device per step: each call's frames and its columns read off the record
    (`ppddpm.core.columns`: t, the NaN/Inf check, the clipped share, …) go to
    `ppddpm.core.transfer.DeviceChunks` by name and reach the host a chunk at a time (`receive`), where a
    `ppddpm.storage.writer.TrajectoryWriter` stores them; the adapter's columns (noise std, ᾱ or σ),
    which need t on the host, are computed there. Reading the Trajectory mid-run calls `sync`.
    """

    def __init__(self, scheduler, every, fields, on_nonfinite, chunk, writing: dict, support: RunSupport):
        self.scheduler, self.every, self.on_nonfinite, self.support = scheduler, every, on_nonfinite, support
        self.step_fields = tuple(f for f in fields if f in FIELDS)     # StepRecord's attributes of the same names
        self.writer = TrajectoryWriter(fields + support.fields, source=self, **writing)
        self.traj = self.writer.trajectory
        self.kept = self.n_steps = self.first_bad = self.pending_error = None
        self.columns = ()                   # the run's per-step columns, set with the timesteps
        self.waiting = collections.deque()  # per call sent to the device chunks: (i, the adapter's numbers as a
        self.tables = HostTables(scheduler)  # function of host t, `StepRecord.numbers_later`; None: not recorded)
        self.transfer = DeviceChunks(self.receive, chunk)
        self.observer = StepObserver(self.consume, want_noise="noise" in fields, keep=self.keep,
                                     every_call=self.after_call)

    @property
    def calls(self):
        return self.observer.calls

    def keep(self, i) -> bool:
        if self.kept is None:                 # the first call: the pipeline has set the timesteps by now
            self._start()
        elif i >= self.n_steps:
            raise RuntimeError("one ppddpm.record block holds one sampling run; "
                               "use a new `with ppddpm.record(...)` for each run")
        return i in self.kept

    def _start(self):
        sched = self.scheduler
        warn_if_loop_skips_scaling(self.support.pipe, sched, self.support)
        self.n_steps = len(sched.timesteps)   # calls of step in one run (Heun: two per timestep but the last)
        self.kept = set(kept_steps(self.n_steps, self.every).tolist())
        adapter = adapter_for(sched)
        self.columns = run_columns(adapter.columns)
        self.traj.meta.update(num_inference_steps=self.n_steps,
                              set_timesteps=getattr(sched, "num_inference_steps", None),
                              scheduler=type(sched).__name__, sampler=adapter.family,
                              scheduler_config=_jsonable(sched.config), clipping=clipping_of(sched),
                              variant=formula_in_force(sched)[0])
        per_sample = [name for name in self.columns if COLUMNS[name].per_sample]
        self.writer.start(len(self.kept), [name for name in self.columns if name not in per_sample], per_sample)

    # ---- per call, on the device
    def after_call(self, i, timestep, out, recorded):
        if not recorded:                      # a recorded call's columns go with its frames (consume)
            self.waiting.append((i, None))
            self.transfer.add(None, {"timesteps": timestep, "finite": finite(out.prev_sample)})
            self._raise_pending()

    def consume(self, rec: StepRecord):
        frame = self.support.step_fields(rec, {name: getattr(rec, name) for name in self.step_fields})
        if "step_arguments" not in self.traj.meta:      # η, use_clipped_model_output, s_churn, …: what a replay needs
            self.traj.meta["step_arguments"] = {
                k: v for k, v in (rec.extra or {}).items()
                if isinstance(v, (bool, int, float, str)) and k not in ("return_dict", "generator")}
        if not self.transfer.allocated:
            self._allocate(frame, self.support.rows(rec.prev_sample))
        values = {}
        for name in self.columns:
            column = COLUMNS[name]
            if column.of is not None:
                value = column.of(rec)
                values[name] = self.support.rows(value) if column.per_sample and hasattr(value, "shape") else value
        self.waiting.append((rec.i, rec.numbers_later()))      # not rec: its frames would stay alive
        self.transfer.add(frame, values)
        self._raise_pending()

    def _allocate(self, frame, prev):
        """The device chunks' buffers and the writer's room, at the first recorded step."""
        shapes, dtypes, itemsize = {}, {}, {}
        for name, value in frame.items():
            like = prev if value is None else value
            shapes[name], dtypes[name] = tuple(like.shape), str(like.dtype).replace("paddle.", "")
            itemsize[name] = like.element_size()
        batch = int(prev.shape[0])
        if self.transfer.chunk is None:            # a chunk's decoded frames count against the budget too
            self.transfer.chunk = self.support.chunk(shapes, itemsize)
        self.writer.allocate(dict(shapes, **self.support.decoded_shapes(batch)), batch)
        self.transfer.allocate(shapes, dtypes, itemsize)
        self.traj.meta.update(batch_size=batch, chunk=self.transfer.chunk)

    # ---- per chunk, on the host
    def receive(self, frames: dict, rows: list):
        """A chunk reached the host: its recorded steps go to the writer, then are committed."""
        if frames:
            frames = dict(frames, **self.support.decode(frames))     # batched VAE calls over the chunk's steps
        recorded = self._recorded(rows)
        numbers = to_host([later(row["timesteps"], self.tables) for row, later in recorded])
        if self.writer.failed:              # the files end in a torn frame: nothing more is appended
            return
        start = self.writer.count
        try:
            for k, ((row, _), adapter_numbers) in enumerate(zip(recorded, numbers)):
                self.writer.append({name: frames[name][k] for name in self.writer.fields}, dict(row, **adapter_numbers))
            if recorded:
                self.writer.commit()
        except OSError as exc:
            row = recorded[min(len(recorded) - 1, max(0, self.writer.steps_on_disk - start))][0]
            kept = self.writer.steps_on_disk
            raise WriteFailed(exc.errno, f"streaming the trajectory to {self.writer.path} failed at step {row['call']} "
                                         f"(t={row['timesteps']}): {exc.strerror or exc}; the {kept} steps written "
                                         f"before are kept and meta.json marks the recording incomplete") from exc

    def _recorded(self, rows: list) -> list:
        """The chunk's recorded calls, (their columns, their adapter's numbers as a function of host t);
        a NaN/Inf is noted at the first call that has one."""
        out = []
        for row in rows:
            i, later = self.waiting.popleft()
            row["timesteps"] = t = timestep_value(row["timesteps"])
            if not row["finite"] and self.first_bad is None:         # the call's isfinite(prev_sample)
                self._nonfinite(i, t)
            if later is not None:
                out.append((row, later))
        return out

    def _nonfinite(self, i, t):
        self.first_bad = (i, t)
        msg = f"non-finite values (NaN/Inf) in prev_sample first at step {i} (t={t})"
        if self.on_nonfinite == "raise":
            self.pending_error = FloatingPointError(msg)      # raised once the chunk is stored
        elif self.on_nonfinite == "warn":
            warnings.warn(msg, NonFiniteWarning, stacklevel=2)

    def _raise_pending(self):
        if self.pending_error is not None:
            error, self.pending_error = self.pending_error, None
            raise error

    def sync(self):
        """Bring every step recorded so far to the host (reading the Trajectory mid-run does this)."""
        self.transfer.drain()

    def finish(self, ok: bool):
        failure = None
        try:
            self.sync()
        except WriteFailed as exc:            # the steps before are on disk; meta.json says incomplete
            failure = exc
        complete = ok and failure is None and self.n_steps is not None and self.calls == self.n_steps
        self.traj.meta.update(steps_run=self.calls, first_nonfinite=list(self.first_bad) if self.first_bad else None)
        self.writer.close(complete)
        if ok:
            if failure is not None:
                raise failure
            self._raise_pending()


@contextlib.contextmanager
def record_steps(pipe_or_scheduler, every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, store: str = "memory",
                 dtype: str = "float32", path=None, on_nonfinite: str = "warn", meta: Optional[dict] = None,
                 chunk: Optional[int] = None, support: Optional[RunSupport] = None):
    """Record the steps of the next sampling run of this pipeline (or scheduler instance); the arguments
    as `ppddpm.record` (`ppddpm.pipelines.recording`) says, which passes the pipeline's `support`
    (`ppddpm.core.support`; None: a pixel-space pipeline's). Each recorded step keeps the frames of
    `fields` and the run's per-step columns (`ppddpm.core.columns`)."""
    scheduler = scheduler_of(pipe_or_scheduler, "ppddpm.record")
    if isinstance(scheduler, type):
        raise BadType("ppddpm.record records one scheduler instance; pass a pipeline or a scheduler, not a class")
    every = check_every(every)
    fields = check_fields(fields)
    path = check_destination(store, dtype, path)
    if on_nonfinite not in ("warn", "raise", "ignore"):
        raise BadValue(f"on_nonfinite must be 'warn', 'raise' or 'ignore', got {on_nonfinite!r}")
    if chunk is not None:
        chunk = check_int("chunk", chunk, hint=" (steps per device → host transfer)")
    if support is None:
        support = RunSupport(None if pipe_or_scheduler is scheduler else pipe_or_scheduler)
    info = {"every": every, "model": _model_id(pipe_or_scheduler), "versions": versions(), "store": store,
            "dtype": str(dtype), **support.meta, **(meta or {})}
    rec = _Recorder(scheduler, every, fields, on_nonfinite, chunk, dict(store=store, dtype=str(dtype), path=path,
                    meta=info), support)
    ok = False
    try:
        with observe(scheduler, rec.observer, "record"):
            yield rec.traj
        ok = True
    finally:
        rec.finish(ok)


def _model_id(obj):
    config = getattr(obj, "config", None)
    name = getattr(obj, "name_or_path", None) or (config.get("_name_or_path") if hasattr(config, "get") else None)
    return str(name) if name else None


# 0.3's record and sample_trajectory (ppddpm/_moved.py): answered from ppddpm.pipelines.recording, with a warning
__getattr__ = moved_names(__name__)
