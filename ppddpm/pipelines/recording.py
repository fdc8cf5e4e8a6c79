"""Recording every step of a real pipeline run, whatever the pipeline: `ppddpm.record` and
`ppddpm.sample_trajectory`.

    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=50)
    traj.prev_sample            # [N, B, C, H, W]  x_{t-1} after each recorded step
    traj.pred_original_sample   # [N, B, C, H, W]  x̂_0 (eq. 15, after clipping) as the step used it
    traj.noise_std, traj.column("call")             # and the per-step columns (`ppddpm.core.columns`)

    with ppddpm.record(pipe, every=50) as traj:          # the low-level form
        pipe(generator=paddle.Generator().manual_seed(777))

The mechanism is `ppddpm.core.recorder.record_steps`; this module gives it the support of the kind
of pipeline that runs (`ppddpm.core.support`: a pixel pipeline's, or `ppddpm.pipelines.latent`'s for
Stable Diffusion, LDM and DiT) and, for `sample_trajectory`, makes the pipeline's call.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional

from ppddpm._progress import wanted
from ppddpm.core import rng as _rng
from ppddpm.core.recorder import check_fields, record_steps
from ppddpm.core.support import RunSupport
from ppddpm.errors import BadValue, check_int
from ppddpm.pipelines.latent import ChunkDecoder, LatentSupport, call_arguments, kind_of, supported_pipelines
from ppddpm.storage.format import DEFAULT_FIELDS, GUIDANCE_FIELDS
from ppddpm.storage.trajectory import Trajectory


@contextlib.contextmanager
def record(pipe_or_scheduler, every: int = 1, fields: Iterable[str] = DEFAULT_FIELDS, store: str = "memory",
           dtype: str = "float32", path=None, on_nonfinite: str = "warn", meta: Optional[dict] = None,
           chunk: Optional[int] = None, pipe_kwargs: Optional[dict] = None, decode: Optional[str] = None,
           decode_fields: Iterable[str] = ("pred_original_sample",), decode_batch: int = 4):
    """Record the steps of the next sampling run of this pipeline (or scheduler instance): a context
    manager yielding the Trajectory it fills.

    every         keep every k-th step and always the last (k=1: all steps).
    fields        what to keep per recorded step (`ppddpm.FIELDS`; default x_{t-1} and x̂_0); the
                  per-step columns (`ppddpm.core.columns`: t, the call, its stage, the noise std, the
                  clipped share of x̂_0, ᾱ or σ, …: a number each) are always kept.
    store/dtype   "memory" as float32 or float16 (half the memory), or "disk": frames are
                  streamed to `.npy` files under `path` as they come, so an interrupted run
                  leaves a loadable partial trajectory (`Trajectory.load(path)`).
    on_nonfinite  "warn" (default), "raise" or "ignore" when x_{t-1} first holds NaN/Inf
                  (checked on the device, reported when its chunk reaches the host, naming the step).
    chunk         steps per device → host transfer (`ppddpm.core.transfer`): frames stay on the device
                  in between, so recording adds no host read per step. None: as many as fit
                  32 MiB of device memory in two buffers, at most 64; 1: every step as it happens.

    Latent pipelines (StableDiffusionPipeline, LDMPipeline, DiTPipeline), frames being latents:
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

    Only that scheduler instance is touched; it gets its own `step` back on exit, also when
    the block raises — and the steps recorded so far stay in the yielded Trajectory.
    """
    fields = check_fields(fields)
    pipe = None if getattr(pipe_or_scheduler, "scheduler", None) is None else pipe_or_scheduler
    support = support_for(pipe, fields, pipe_kwargs, decode, decode_fields, decode_batch)
    try:
        with record_steps(pipe_or_scheduler, every, fields, store, dtype, path, on_nonfinite, meta, chunk,
                          support) as traj:
            yield traj
    finally:
        support.close()                       # e.g. the denoiser's forward hook goes


def support_for(pipe, fields: tuple, pipe_kwargs: Optional[dict] = None, decode: Optional[str] = None,
                decode_fields: Iterable[str] = ("pred_original_sample",), decode_batch: int = 4) -> RunSupport:
    """What recording `pipe` needs beyond its scheduler (`ppddpm.core.support`): a latent pipeline's
    `LatentSupport` (its rows, guidance fields, decoder), or a pixel pipeline's, which takes no guidance
    field and decodes nothing."""
    if pipe is None or kind_of(pipe) is None:
        asked = [f for f in fields if f in GUIDANCE_FIELDS]
        if asked or decode is not None:
            what = f"fields {', '.join(asked)}" if asked else f"decode={decode!r}"
            raise BadValue(f"{what} need a latent pipeline ({supported_pipelines()}); got {type(pipe).__name__}")
        return RunSupport(pipe)
    decoder = None
    if decode is not None:
        decoder = ChunkDecoder(pipe, decode, check_fields(decode_fields), decode_batch)
        missing = [f for f in decoder.fields if f not in fields]
        if missing:
            raise BadValue(f"decode_fields {missing} are not recorded; add them to fields= (recorded: {list(fields)})")
    return LatentSupport(pipe, fields, pipe_kwargs, decoder)


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
    pipe.set_progress_bar_config(disable=not wanted(progress))
    with _rng.seeded(seed) as generator:
        meta = dict(record_kwargs.pop("meta", None) or {}, seed=int(seed))
        call = call_arguments(pipe, batch_size, generator, num_inference_steps, pipe_kwargs)
        if kind_of(pipe) is not None:
            record_kwargs.setdefault("pipe_kwargs", call)
        with record(pipe, every=every, fields=fields, meta=meta, **record_kwargs) as traj:
            out = pipe(**call)
        if isinstance(out, tuple):         # RecordingDDPMPipeline returns the article's triple
            out = out[0]
    traj.images = out.images
    return traj
