"""Recording every step of a real pipeline run — any sampler `ppddpm.core.adapters` adapts — by observing
`scheduler.step`.

    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=50)
    traj.prev_sample            # [N, B, C, H, W]  x_{t-1} after each recorded step
    traj.pred_original_sample   # [N, B, C, H, W]  x̂_0 (eq. 15, after clipping) as the step used it

    with ppddpm.record(pipe, every=50) as traj:          # the low-level form
        pipe(generator=paddle.Generator().manual_seed(777))

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

import numpy as np

from ppddpm import __version__
from ppddpm._progress import wanted
from ppddpm.core import rng as _rng
from ppddpm.core.adapters import HostTables, adapter_for, clipped_share_on_device, scheduler_of
from ppddpm.core.intercept import formula_in_force
from ppddpm.core.records import StepObserver, StepRecord, observe
from ppddpm.core.transfer import DeviceChunks, to_host
from ppddpm.errors import BadType, BadValue, WriteFailed, check_int
from ppddpm.pipelines import latent
from ppddpm.storage.format import DEFAULT_FIELDS, FIELDS, GUIDANCE_FIELDS, timestep_value
from ppddpm.storage.trajectory import Trajectory
from ppddpm.storage.writer import TrajectoryWriter, check_destination


class NonFiniteWarning(RuntimeWarning):
    pass


class UnscaledLoopWarning(UserWarning):
    """A `DDPMPipeline` / `DDIMPipeline` runs a scheduler that needs `init_noise_sigma` and
    `scale_model_input`, which their loops skip: the run records what it ran, wrong samples."""


def warn_if_loop_skips_scaling(pipe, scheduler):
    """Once the timesteps are set: warn when `pipe`'s loop is DDPMPipeline's or DDIMPipeline's (a
    subclass whose loop scales, as `SamplerPipeline`'s does, says so by `scales_model_input`) and
    `scheduler` starts from init_noise_sigma ≠ 1. Every ppdiffusers scheduler whose
    `scale_model_input` is not the identity (Euler, Euler ancestral, LMS, Heun, KDPM2, …) has
    init_noise_sigma > 1, so this one number tells both."""
    from ppdiffusers import DDIMPipeline, DDPMPipeline

    if not isinstance(pipe, (DDPMPipeline, DDIMPipeline)) or getattr(type(pipe), "scales_model_input", False):
        return
    sigma = float(scheduler.init_noise_sigma)
    if sigma != 1.0:
        warnings.warn(f"{type(pipe).__name__} skips init_noise_sigma ({sigma:.4g}) and scale_model_input, which "
                      f"{type(scheduler).__name__} needs: its samples will be wrong. Use "
                      f"ppddpm.SamplerPipeline(unet=…, scheduler=…) or ppddpm.with_sampler(pipe, family)",
                      UnscaledLoopWarning, stacklevel=4)


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


def kept_steps(n_steps: int, every: int) -> np.ndarray:
    """Indices (0-based, in sampling order) of the steps `every` keeps: the every-th,
    2·every-th, … step, and always the last one. 1000 steps, every=50 → 20 steps, t = 950 … 0."""
    idx = np.arange(every - 1, n_steps, every)
    if n_steps and (len(idx) == 0 or idx[-1] != n_steps - 1):
        idx = np.append(idx, n_steps - 1)
    return idx.astype(np.int64)


def versions() -> dict:
    import paddle
    import ppdiffusers

    return {"ppddpm": __version__, "ppdiffusers": ppdiffusers.__version__, "paddle": paddle.__version__}


def _jsonable(obj):
    return json.loads(json.dumps(dict(obj), default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# --------------------------------------------------------------------------- the recorder

class _Recorder:
    """Consumes the StepRecords of one run (`ppddpm.core.records.StepObserver`) into a Trajectory.

    Nothing is read from the device per step: each call's frames and numbers (t, the NaN/Inf
    check, the clipped share) go to `ppddpm.core.transfer.DeviceChunks` and reach the host a chunk
    at a time (`receive`), where a `ppddpm.storage.writer.TrajectoryWriter` stores them; σ_t, which
    needs t on the host, is computed there too. Reading the Trajectory mid-run calls `sync`.
    """

    def __init__(self, scheduler, every, fields, on_nonfinite, chunk, writing: dict, pipe=None, latent_run=None,
                 decoder=None):
        self.scheduler, self.every, self.on_nonfinite = scheduler, every, on_nonfinite
        self.pipe = pipe                    # the pipeline whose loop runs (None: a bare scheduler)
        self.latent = latent_run            # ppddpm.pipelines.latent.LatentRun: rows, guidance fields
        self.decoder = decoder              # ppddpm.pipelines.latent.ChunkDecoder: fields decoded to pixels per chunk
        self.step_fields = tuple(f for f in fields if f in FIELDS)     # StepRecord's attributes of the same names
        self.writer = TrajectoryWriter(fields + (decoder.names if decoder else ()), source=self, **writing)
        self.traj = self.writer.trajectory
        self.kept = self.n_steps = self.first_bad = self.pending_error = self.finite = None
        self.waiting = collections.deque()  # per call sent to the device chunks: (i, σ(t) or None, stage)
        self.tables = HostTables(scheduler)
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
        warn_if_loop_skips_scaling(self.pipe, sched)
        if self.latent is not None:
            why = self.latent.unscaled_loop(sched)
            if why:
                warnings.warn(why, UnscaledLoopWarning, stacklevel=4)
        self.n_steps = len(sched.timesteps)   # calls of step in one run (Heun: two per timestep but the last)
        self.kept = set(kept_steps(self.n_steps, self.every).tolist())
        self.traj.meta.update(num_inference_steps=self.n_steps,
                              set_timesteps=getattr(sched, "num_inference_steps", None),
                              scheduler=type(sched).__name__, sampler=adapter_for(sched).family,
                              scheduler_config=_jsonable(sched.config),
                              variant=formula_in_force(sched)[0])
        self.writer.start(len(self.kept))

    # ---- per call, on the device
    def after_call(self, i, timestep, out, recorded):
        import paddle

        finite = paddle.isfinite(out.prev_sample).all()
        if recorded:
            self.finite = finite              # consume() sends it with the step's frames
        else:
            self.waiting.append((i, None, ""))
            self.transfer.add(None, [timestep, finite])
            self._raise_pending()

    def consume(self, rec: StepRecord):
        frame = {name: getattr(rec, name) for name in self.step_fields}
        if self.latent is not None:           # the batch's rows, and the guidance fields
            frame = self.latent.frames(rec, frame)
        if "step_arguments" not in self.traj.meta:      # η, use_clipped_model_output, s_churn, …: what a replay needs
            self.traj.meta["step_arguments"] = {
                k: v for k, v in (rec.extra or {}).items()
                if isinstance(v, (bool, int, float, str)) and k not in ("return_dict", "generator")}
        if not self.transfer.allocated:
            self._allocate(frame, rec.prev_sample if self.latent is None else self.latent.rows_of(rec.prev_sample))
        self.waiting.append((rec.i, rec.sigma_later(), rec.stage))     # not rec: its frames would stay alive
        clipped = clipped_share_on_device(self.scheduler, rec.pred_original_sample_unclipped)
        self.transfer.add(frame, [rec.t, self.finite, clipped])
        self._raise_pending()

    def _allocate(self, frame, prev):
        """The device chunks' buffers and the writer's room, at the first recorded step."""
        shapes, dtypes, itemsize = {}, {}, {}
        for name, value in frame.items():
            like = prev if value is None else value
            shapes[name], dtypes[name] = tuple(like.shape), str(like.dtype).replace("paddle.", "")
            itemsize[name] = like.element_size()
        stored = dict(shapes)
        if self.decoder is not None:
            stored.update(self.decoder.shapes(int(prev.shape[0])))
            if self.transfer.chunk is None:        # the chunk's decoded frames count against the budget too
                self.transfer.chunk = self.decoder.chunk(shapes, itemsize)
        self.writer.allocate(stored)
        self.transfer.allocate(shapes, dtypes, itemsize)
        self.traj.meta.update(batch_size=int(prev.shape[0]), chunk=self.transfer.chunk)

    # ---- per chunk, on the host
    def receive(self, frames: dict, values: list):
        """A chunk reached the host: its recorded steps go to the writer, then are committed."""
        if self.decoder is not None and frames:
            frames = dict(frames, **self.decoder(frames))      # batched VAE calls over the chunk's steps
        rows = self._recorded_rows(values)
        sigmas = to_host([sigma_at(t, self.tables) for _, sigma_at, t, _, _ in rows])
        if self.writer.failed:              # the files end in a torn frame: nothing more is appended
            return
        start = self.writer.count
        try:
            for k, ((i, _, t, clipped, stage), sigma) in enumerate(zip(rows, sigmas)):
                self.writer.append({name: frames[name][k] for name in self.writer.fields}, t, sigma, clipped, stage)
            if rows:
                self.writer.commit()
        except OSError as exc:
            i, _, t, _, _ = rows[min(len(rows) - 1, max(0, self.writer.steps_on_disk - start))]
            kept = self.writer.steps_on_disk
            raise WriteFailed(exc.errno, f"streaming the trajectory to {self.writer.path} failed at step {i} "
                                         f"(t={t}): {exc.strerror or exc}; the {kept} steps written before are "
                                         f"kept and meta.json marks the recording incomplete") from exc

    def _recorded_rows(self, values: list) -> list:
        """The chunk's numbers, call by call: (i, σ(t), t, clipped share, stage) of the recorded calls;
        a NaN/Inf is noted at the first call that has one."""
        values, rows = iter(values), []
        for t in values:
            t = timestep_value(t)
            i, sigma_at, stage = self.waiting.popleft()
            if not next(values) and self.first_bad is None:         # the call's isfinite(prev_sample)
                self._nonfinite(i, t)
            if sigma_at is not None:
                rows.append((i, sigma_at, t, next(values), stage))
        return rows

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
        if self.latent is not None:
            self.latent.close()               # the denoiser's forward hook goes
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
def record(pipe_or_scheduler, every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, store: str = "memory",
           dtype: str = "float32", path=None, on_nonfinite: str = "warn", meta: Optional[dict] = None,
           chunk: Optional[int] = None, pipe_kwargs: Optional[dict] = None, decode: Optional[str] = None,
           decode_fields: Iterable[str] = ("pred_original_sample",), decode_batch: int = 4):
    """Record the steps of the next sampling run of this pipeline (or scheduler instance).

    every         keep every k-th step and always the last (k=1: all steps).
    fields        what to keep per recorded step (`ppddpm.FIELDS`; default x_{t-1} and x̂_0);
                  t, σ_t and the clipped fraction of x̂_0 are always kept (one number each).
    store/dtype   "memory" as float32 or float16 (half the memory), or "disk": frames are
                  streamed to `.npy` files under `path` as they come, so an interrupted run
                  leaves a loadable partial trajectory (`Trajectory.load(path)`).
    on_nonfinite  "warn" (default), "raise" or "ignore" when x_{t-1} first holds NaN/Inf
                  (checked on the device, reported when its chunk reaches the host, naming the step).
    chunk         steps per device → host transfer (`ppddpm.core.transfer`): frames stay on the device
                  in between, so recording adds no host read per step. None: as many as fit
                  32 MiB of device memory in two buffers, at most 64; 1: every step as it happens.

    Latent pipelines (StableDiffusionPipeline, LDMPipeline, DiTPipeline): frames are latents, and
    `pipe_kwargs` (the call's prompt / class_labels / guidance_scale), the guidance fields
    (model_output_uncond / _cond and their x̂_0) and decode="vae" | "approx" (+ decode_fields,
    decode_batch) are as `_latent_parts` says.

    Only that scheduler instance is touched; it gets its own `step` back on exit, also when
    the block raises — and the steps recorded so far stay in the yielded Trajectory.
    """
    scheduler = scheduler_of(pipe_or_scheduler, "ppddpm.record")
    if isinstance(scheduler, type):
        raise BadType("ppddpm.record records one scheduler instance; pass a pipeline or a scheduler, not a class")
    every = check_every(every)
    fields = check_fields(fields)
    path = check_destination(store, dtype, path)
    if on_nonfinite not in ("warn", "raise", "ignore"):
        raise BadValue(f"on_nonfinite must be 'warn', 'raise' or 'ignore', got {on_nonfinite!r}")
    info = {"every": every, "model": _model_id(pipe_or_scheduler), "versions": versions(), "store": store,
            "dtype": str(dtype)}
    info.update(meta or {})
    if chunk is not None:
        chunk = check_int("chunk", chunk, hint=" (steps per device → host transfer)")
    pipe = None if pipe_or_scheduler is scheduler else pipe_or_scheduler
    latent_run, decoder = _latent_parts(pipe, fields, info, pipe_kwargs, decode, decode_fields, decode_batch)
    rec = _Recorder(scheduler, every, fields, on_nonfinite, chunk, dict(store=store, dtype=str(dtype), path=path,
                    meta=info), pipe=pipe, latent_run=latent_run, decoder=decoder)
    ok = False
    try:
        with observe(scheduler, rec.observer, "record"):
            yield rec.traj
        ok = True
    finally:
        rec.finish(ok)


def _latent_parts(pipe, fields, info, pipe_kwargs, decode, decode_fields, decode_batch):
    """(LatentRun, ChunkDecoder) of a latent pipeline (`ppddpm.pipelines.latent`), each None where not needed;
    `info` (the trajectory's metadata) gains `space="latent"`, what decoding needs (`meta["latent"]`)
    and the call's conditioning.

    pipe_kwargs   the arguments the pipeline is about to be called with (prompt, guidance_scale,
                  class_labels…; `sample_trajectory` passes them): kept in `meta["conditioning"]`;
                  for DiTPipeline they say which rows of the guided batch are the samples.
    fields        may hold "model_output_uncond", "model_output_cond" and their x̂_0
                  ("pred_original_sample_uncond" / "_cond") on a guided run: the denoiser's two
                  halves, observed by a forward hook on it.
    decode        "vae" or "approx": also keep `decode_fields` decoded to pixels ("NAME_decoded"
                  fields, [N, B, 3, H, W]), decoded a chunk of steps at a time as the chunk reaches
                  the host — VAE calls of at most `decode_batch` frames — and streamed like any field.
                  Memory, whatever the number of steps with store="disk": one chunk of decoded frames
                  on the host (chunk=None picks it so that the chunk's latents and images fit 32 MiB:
                  5 steps of a 512² Stable Diffusion image, 16 MB) plus the VAE's activations for
                  `decode_batch` frames — measured with SD 1.5's VAE architecture in float32 on a CPU
                  (random weights): +3.0 GB peak RSS for 1 frame per call, +3.7 GB for 2, and 175 s a
                  frame there (a GPU's job; method="approx" costs a matrix product). With
                  store="memory" the decoded field stays too: N·B·3·H·W values (50 steps of 512²:
                  157 MB in float32).
    """
    kind = latent.kind_of(pipe) if pipe is not None else None
    if kind is None:
        asked = [f for f in fields if f in GUIDANCE_FIELDS]
        if asked or decode is not None:
            what = f"fields {', '.join(asked)}" if asked else f"decode={decode!r}"
            raise BadValue(f"{what} need a latent pipeline ({latent.supported_pipelines()}); got "
                           f"{type(pipe if pipe is not None else None).__name__}")
        return None, None
    info.update(space="latent", latent=latent.latent_meta(pipe))
    if pipe_kwargs is not None:                       # the call is known: its prompt / labels / guidance
        info.setdefault("conditioning", latent.conditioning(pipe, pipe_kwargs))
    decoder = None
    if decode is not None:
        decoder = latent.ChunkDecoder(pipe, decode, check_fields(decode_fields), decode_batch)
        missing = [f for f in decoder.fields if f not in fields]
        if missing:
            raise BadValue(f"decode_fields {missing} are not recorded; add them to fields= (recorded: {list(fields)})")
        info["decoded"] = decoder.describe()
    return latent.LatentRun(pipe, fields, pipe_kwargs), decoder


def _model_id(obj):
    config = getattr(obj, "config", None)
    name = getattr(obj, "name_or_path", None) or (config.get("_name_or_path") if hasattr(config, "get") else None)
    return str(name) if name else None


def sample_trajectory(pipe, seed: int = 777, num_inference_steps: int = 1000, batch_size: int = 1,
                      every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, progress: Optional[bool] = None,
                      pipe_kwargs: Optional[dict] = None, **record_kwargs) -> Trajectory:
    """Run `pipe` (a `DDPMPipeline`, `DDIMPipeline`, or one whose scheduler was swapped) once with
    `paddle.Generator().manual_seed(seed)` and return its recorded trajectory; `traj.images` is
    the pipeline's own output for this seed. `pipe_kwargs` go to the pipeline's call
    (`{"eta": 1.0}` for a DDIMPipeline). Latent pipelines (`ppddpm.pipelines.latent`): `pipe_kwargs` carries
    their own arguments — `{"prompt": …, "guidance_scale": …}` for StableDiffusionPipeline (batch_size
    becomes num_images_per_prompt), `{"class_labels": [...]}` for DiTPipeline (the batch);
    `decode="vae"` (a `record` argument) adds x̂_0 decoded to pixels. `progress`: a bar over the steps
    (default: where someone is watching — a terminal or a notebook — and not under tests;
    PPDDPM_PROGRESS=0 turns it off)."""
    check_int("seed", seed, low=0)
    check_int("num_inference_steps", num_inference_steps)
    check_int("batch_size", batch_size)
    generator = _rng.make_generator(seed)
    pipe.set_progress_bar_config(disable=not wanted(progress))
    try:
        meta = dict(record_kwargs.pop("meta", None) or {}, seed=int(seed))
        call = latent.call_arguments(pipe, batch_size, generator, num_inference_steps, pipe_kwargs)
        if latent.kind_of(pipe) is not None:
            record_kwargs.setdefault("pipe_kwargs", call)
        with record(pipe, every=every, fields=fields, meta=meta, **record_kwargs) as traj:
            out = pipe(**call)
        if isinstance(out, tuple):         # RecordingDDPMPipeline returns the article's triple
            out = out[0]
    finally:
        _rng.release_generator(generator)
    traj.images = out.images
    return traj
