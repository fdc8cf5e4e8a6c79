"""Latent pipelines: what a recorded Stable Diffusion, LDM or DiT run needs beyond the step.

A latent diffusion pipeline runs the same reverse process as `DDPMPipeline`, on a VAE's latents
z instead of pixels (Rombach et al. 2022, eq. 2: the diffusion model is trained on E(x)·s, s the
VAE's `scaling_factor`, and an image is D(z / s)). The recorder (`ppddpm.core.recorder`) observes
`scheduler.step` as for any pipeline, so its frames are latents [B, C, h, w]; this module adds:

- `LatentKind` / `kind_of(pipe)`: how each known pipeline class is laid out — its denoiser
  (`unet` / `transformer`), its VAE (`vae` / `vqvae`), the argument that sets the batch, and the
  order of the unconditional and conditional halves of a classifier-free-guided model call
  (Stable Diffusion: uncond first; DiT: cond first, and the scheduler steps both halves);
- `latent_meta(pipe)`: what decoding needs (VAE class, scaling_factor, latent and image shapes),
  stored in the trajectory's metadata with `space="latent"`;
- `call_arguments`: `sample_trajectory`'s pipeline call (batch_size, num_images_per_prompt or
  class_labels), and the conditioning it records (prompt, negative prompt, guidance scale, labels);
- `LatentRun`: the recorder's per-step hook for latent pipelines — keeps DiT's first half of the
  rows, and the guidance fields: the denoiser's output is *observed* by a forward post-hook (not
  recomputed) and split into ε̂_uncond and ε̂_cond, whose x̂_0 are the step's own x̂_0 formula
  (`ppddpm.core.adapters`) applied to each;
- `decode(traj, pipe)`: latent frames → pixel frames [n, B, 3, H, W] by the pipeline's VAE
  (D(z / s), batched), or by `ApproxDecoder`, a per-channel linear latent→RGB map fitted by least
  squares against that VAE (cached per VAE), whose gap to the full decode is measured and reported;
- `ChunkDecoder`: the same, a chunk of steps at a time, while `record(..., decode=…)` runs;
- `displayable` / `caption`: what the pictures show of a latent run (decoded frames where kept, else
  the latent channels side by side) and the prompt or class label for their titles;
- `denoiser(pipe, pipe_kwargs)`: the guided ε̂ the pipeline's own loop makes, for `compare`'s loop.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ppddpm.core.adapters import GENERIC, _SigmaAdapter, adapter_for
from ppddpm.core.transfer import chunk_for
from ppddpm.errors import BadType, BadValue, check_int
from ppddpm.storage.format import DECODED_SUFFIX, GUIDANCE_FIELDS
from ppddpm.storage.trajectory import Trajectory

METHODS = ("vae", "approx")


@dataclass(frozen=True)
class LatentKind:
    name: str
    classes: tuple              # pipeline class names (and their subclasses)
    denoiser: str               # attribute of the model that predicts the noise
    vae: str                    # attribute of the autoencoder
    batch_argument: Optional[str]   # the call argument that sets the batch (None: class_labels does)
    halves: Optional[tuple]     # order of the halves of a guided denoiser call; None: no guidance
    steps_both_halves: bool = False   # the scheduler steps the guided batch (2B rows), not B
    reciprocal: bool = False    # the pipeline decodes (1/s)·z, not z / s (the same number, other float32 bits)


KINDS = [
    LatentKind("stable-diffusion", ("StableDiffusionPipeline",), "unet", "vae", "num_images_per_prompt",
               ("uncond", "cond")),
    LatentKind("ldm", ("LDMPipeline",), "unet", "vqvae", "batch_size", None),
    LatentKind("dit", ("DiTPipeline",), "transformer", "vae", None, ("cond", "uncond"), steps_both_halves=True,
               reciprocal=True),
]


def kind_of(pipe) -> Optional[LatentKind]:
    """The LatentKind of a pipeline instance (None: a pixel-space or unknown pipeline)."""
    names = {k.__name__ for k in type(pipe).__mro__}
    return next((kind for kind in KINDS if names & set(kind.classes)), None)


def supported_pipelines() -> str:
    return ", ".join(c for kind in KINDS for c in kind.classes)


def _vae(pipe, kind):
    return getattr(pipe, kind.vae)


def latent_meta(pipe) -> Optional[dict]:
    """What decoding a recorded latent needs: the VAE's class and scaling_factor, the latent shape
    [C, h, w] the denoiser works on, the image shape [3, H, W] the VAE makes (h · 2^(levels−1))."""
    kind = kind_of(pipe)
    if kind is None:
        return None
    vae, model = _vae(pipe, kind), getattr(pipe, kind.denoiser)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = model.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return {"pipeline": type(pipe).__name__, "kind": kind.name, "vae_class": type(vae).__name__,
            "vae_attribute": kind.vae, "scaling_factor": float(vae.config.scaling_factor),
            "latent_shape": [int(model.config.in_channels), int(h), int(w)], "vae_scale_factor": factor,
            "image_shape": [int(vae.config.out_channels), int(h) * factor, int(w) * factor],
            "denoiser": type(model).__name__, "unscale": "reciprocal" if kind.reciprocal else "divide"}


def _describe(value):
    """A call argument as metadata: numbers, strings and lists as they are; a tensor by its shape."""
    if hasattr(value, "shape") and hasattr(value, "place"):
        return f"tensor {list(value.shape)} ({str(value.dtype).replace('paddle.', '')})"
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    return value if isinstance(value, (bool, int, float, str, type(None))) else str(value)


CONDITIONING = ("prompt", "negative_prompt", "prompt_embeds", "negative_prompt_embeds", "guidance_scale",
                "class_labels", "eta", "guidance_rescale")
DEFAULT_GUIDANCE = {"stable-diffusion": 7.5, "dit": 4.0}


def conditioning(pipe, pipe_kwargs: dict) -> dict:
    """The conditioning of a call as metadata: prompt / class labels (and their names, where the
    pipeline knows them), negative prompt, guidance scale (the pipeline's default when not given)."""
    kind = kind_of(pipe)
    out = {k: _describe(v) for k, v in pipe_kwargs.items() if k in CONDITIONING}
    if kind is not None and kind.name in DEFAULT_GUIDANCE:
        out.setdefault("guidance_scale", DEFAULT_GUIDANCE[kind.name])
    labels = getattr(pipe, "labels", None)
    if kind is not None and kind.name == "dit" and labels and "class_labels" in pipe_kwargs:
        names = {v: k for k, v in labels.items()}
        out["class_names"] = [names.get(int(c), str(c)) for c in pipe_kwargs["class_labels"]]
    return out


def call_arguments(pipe, batch_size: int, generator, num_inference_steps: int, pipe_kwargs: Optional[dict]):
    """The keyword arguments `sample_trajectory` calls `pipe` with. Pixel pipelines (DDPM, DDIM,
    SamplerPipeline): batch_size, generator, num_inference_steps, then pipe_kwargs, as ever.
    Stable Diffusion: batch_size becomes num_images_per_prompt; DiT: the batch is class_labels."""
    kwargs = dict(pipe_kwargs or {})
    kind = kind_of(pipe)
    base = {"generator": generator, "num_inference_steps": num_inference_steps}
    if kind is None:
        return dict(base, batch_size=batch_size, **kwargs)
    if kind.name == "dit":
        labels = kwargs.get("class_labels")
        if labels is None or isinstance(labels, (str, int)) or not len(labels):
            raise BadValue("DiTPipeline needs pipe_kwargs={'class_labels': [...]}: a list of class ids "
                           "(the batch is one sample per label)")
        if batch_size != 1 and batch_size != len(labels):
            raise BadValue(f"with DiTPipeline the batch is class_labels ({len(labels)} labels); leave batch_size "
                           f"at 1 or make it {len(labels)}, got {batch_size}")
        return dict(base, **kwargs)
    if kind.name == "stable-diffusion" and kwargs.get("prompt") is None and kwargs.get("prompt_embeds") is None:
        raise BadValue("StableDiffusionPipeline needs pipe_kwargs={'prompt': '…'} (or 'prompt_embeds': a tensor, "
                       "for a pipeline without a tokenizer)")
    if kind.name == "stable-diffusion" and kwargs.get("prompt") is not None and pipe.tokenizer is None:
        raise BadValue("this StableDiffusionPipeline has no tokenizer (it was saved without one), so it cannot read "
                       "a prompt; in Python pass prompt_embeds= (and negative_prompt_embeds=) from its text encoder")
    kwargs.setdefault(kind.batch_argument, batch_size)
    return dict(base, **kwargs)


# --------------------------------------------------------------------------- per step, while recording

def x0_of(scheduler, model_output, timestep, sample, ctx):
    """x̂_0 the step's formula makes of `model_output` at this step, before any clipping: eq. (15)
    for the ᾱ-schedulers, x − σ·ε in the σ-parameterisation of the Euler-type ones (MATH.md)."""
    adapter = adapter_for(scheduler)
    if isinstance(adapter, _SigmaAdapter):
        return _SigmaAdapter.x0_raw(adapter, scheduler, model_output, timestep, sample, ctx, None)
    if adapter is GENERIC:
        raise BadType(f"the x̂_0 of a guidance half needs a scheduler ppddpm knows; {type(scheduler).__name__} "
                      f"is not one")
    return adapter.x0_raw(scheduler, model_output, timestep, sample, ctx, None)


class DenoiserTap:
    """A forward post-hook on the denoiser: keeps a reference to its last output (no copy, no
    host read), so the guidance halves are the values the pipeline combined, not a recomputation."""

    def __init__(self, model):
        self.last = None
        self.calls = 0
        self.handle = model.register_forward_post_hook(self._hook)

    def _hook(self, layer, inputs, output):
        self.last = output if hasattr(output, "shape") else (output[0] if isinstance(output, (tuple, list))
                                                             else output.sample)
        self.calls += 1

    def remove(self):
        self.handle.remove()


class LatentRun:
    """The recorder's hook for a latent pipeline: which rows of a step are the batch, and the
    guidance fields of each recorded step."""

    def __init__(self, pipe, fields: Sequence[str], pipe_kwargs: Optional[dict] = None):
        self.kind = kind_of(pipe)
        self.pipe = pipe
        self.guided_fields = [f for f in fields if f in GUIDANCE_FIELDS]
        kwargs = pipe_kwargs or {}
        self.rows = None
        if self.kind.steps_both_halves and "class_labels" in kwargs:
            scale = kwargs.get("guidance_scale", DEFAULT_GUIDANCE.get(self.kind.name, 1.0))
            self.rows = len(kwargs["class_labels"]) if scale > 1 else None
        if self.guided_fields and self.kind.halves is None:
            raise BadValue(f"{type(pipe).__name__} runs no classifier-free guidance; the fields "
                           f"{', '.join(self.guided_fields)} exist for {supported_pipelines()} with guidance_scale > 1")
        if self.guided_fields and self.kind.steps_both_halves and self.rows is None:
            raise BadValue(f"{', '.join(self.guided_fields)} need a guided {type(pipe).__name__} run: record it with "
                           f"pipe_kwargs={{'class_labels': [...], 'guidance_scale': g > 1}} (sample_trajectory does)")
        self.tap = DenoiserTap(getattr(pipe, self.kind.denoiser)) if self.guided_fields else None

    def close(self):
        if self.tap is not None:
            self.tap.remove()

    def unscaled_loop(self, scheduler) -> Optional[str]:
        """Once the timesteps are set: why the pipeline's loop mis-scales this σ-space sampler
        (init_noise_sigma ≠ 1: Euler, Heun, LMS, …), or None. DiTPipeline never multiplies x_T by
        init_noise_sigma and hands `scheduler.step` the *scaled* model input as the sample;
        LDMPipeline multiplies x_T by init_noise_sigma before set_timesteps, i.e. by σ_max of the
        full training schedule (ppdiffusers 0.29; StableDiffusionPipeline sets the timesteps first).
        The recorder warns with it (`ppddpm.core.recorder.UnscaledLoopWarning`)."""
        sigma = float(scheduler.init_noise_sigma)
        if sigma == 1.0 or self.kind.name == "stable-diffusion":
            return None
        why = ("never multiplies x_T by init_noise_sigma and passes scheduler.step the scaled model input as its "
               "sample" if self.kind.name == "dit" else
               "multiplies x_T by init_noise_sigma before set_timesteps (σ_max of the full schedule, not of these "
               "steps)")
        return (f"{type(self.pipe).__name__} {why}; with {type(scheduler).__name__} (init_noise_sigma "
                f"{sigma:.4g}) the run records what it ran, which is not that sampler's process")

    def rows_of(self, tensor):
        """The rows of a stepped tensor that are the batch (DiT: the first half of a guided run)."""
        return tensor if self.rows is None or tensor is None else tensor[: self.rows]

    def frames(self, rec, frame: dict) -> dict:
        """`frame` (the step's fields) cut to the batch's rows, plus the guidance fields."""
        frame = {k: self.rows_of(v) for k, v in frame.items()}
        if self.guided_fields:
            frame.update(self._guidance(rec))
        return frame

    def _guidance(self, rec) -> dict:
        out = self.tap.last
        channels, batch = rec.sample.shape[1], self.rows or rec.sample.shape[0]
        if out is None or out.shape[0] != 2 * batch:
            raise BadValue(f"the guidance fields need classifier-free guidance (guidance_scale > 1): the denoiser "
                           f"saw {None if out is None else out.shape[0]} rows for a batch of {batch}")
        first, second = out[:batch, :channels], out[batch: 2 * batch, :channels]
        halves = dict(zip(self.kind.halves, (first, second)))
        sample = rec.sample[:batch]
        values = {"model_output_uncond": halves["uncond"], "model_output_cond": halves["cond"]}
        for half in ("uncond", "cond"):
            name = f"pred_original_sample_{half}"
            if name in self.guided_fields:
                values[name] = x0_of(rec.scheduler, halves[half], rec.t, sample, rec.ctx)
        return {k: values[k] for k in self.guided_fields}


# --------------------------------------------------------------------------- decoding

def _check_method(method):
    if method not in METHODS:
        raise BadValue(f"method must be one of {', '.join(METHODS)} (the full VAE decode, or the fitted linear "
                       f"latent→RGB preview), got {method!r}")
    return method


def _check_pipe(pipe, meta: Optional[dict] = None) -> dict:
    """latent_meta of `pipe`, which must be a latent pipeline whose VAE and latents match `meta`."""
    mine = latent_meta(pipe) if pipe is not None else None
    if mine is None:
        raise BadType(f"decoding needs the latent pipeline that made the run ({supported_pipelines()}); got "
                      f"{type(pipe).__name__}")
    theirs = None if meta is None else (meta["vae_class"], list(meta["latent_shape"]))
    if theirs is not None and (mine["vae_class"], mine["latent_shape"]) != theirs:
        raise BadValue(f"this pipeline's VAE ({mine['vae_class']}, latents {mine['latent_shape']}) is not the run's "
                       f"({meta['vae_class']}, latents {meta['latent_shape']})")
    return mine


def vae_decode(pipe, latents, batch: int = 4) -> np.ndarray:
    """[N, C, h, w] diffusion latents → [N, 3, H, W] images in [−1, 1] (unclipped): the pipeline's own
    decode D(z / s) (DiT: D((1/s)·z), as it writes it), at most `batch` latents per VAE call."""
    import paddle

    meta = _check_pipe(pipe)
    vae = getattr(pipe, meta["vae_attribute"])
    s = meta["scaling_factor"]
    latents = np.asarray(latents, np.float32)
    out = []
    with paddle.no_grad():
        for i in range(0, len(latents), batch):
            z = paddle.to_tensor(latents[i: i + batch])
            z = 1 / s * z if meta["unscale"] == "reciprocal" else z / s
            out.append(vae.decode(z).sample.cast("float32").numpy())
    return np.concatenate(out) if out else np.empty((0,) + tuple(meta["image_shape"]), np.float32)


@dataclass
class ApproxDecoder:
    """A preview decoder: RGB = A·z + b at every latent pixel (A: [3, C], b: [3]), upsampled (nearest)
    by the VAE's scale factor to the image size. Fitted by least squares against the VAE itself
    (`fit`): probe images — smooth random colour fields, seeded — are encoded, the latents decoded,
    and A, b chosen to minimise Σ‖A z + b − pool(D(z))‖² over every latent pixel, pool(·) the mean
    over the factor×factor pixels a latent pixel decodes to. `gap`: RMSE (in [−1, 1] units) and
    PSNR (display range) of the preview against the full decode on held-out probes."""
    matrix: np.ndarray
    bias: np.ndarray
    factor: int
    gap: dict

    def __call__(self, latents) -> np.ndarray:
        z = np.asarray(latents, np.float64)
        rgb = np.einsum("kc,nchw->nkhw", self.matrix, z) + self.bias[None, :, None, None]
        rgb = rgb.repeat(self.factor, axis=2).repeat(self.factor, axis=3)
        return rgb.astype(np.float32)

    @classmethod
    def fit(cls, pipe, probes: int = 24, held_out: int = 8, seed: int = 0) -> "ApproxDecoder":
        meta = _check_pipe(pipe)
        latents = _probe_latents(pipe, meta, probes + held_out, seed)
        images = vae_decode(pipe, latents)
        f = meta["vae_scale_factor"]
        n, c, h, w = latents.shape
        pooled = images.reshape(n, 3, h, f, w, f).mean(axis=(3, 5), dtype=np.float64)
        design = np.concatenate([latents[:probes].transpose(0, 2, 3, 1).reshape(-1, c),
                                 np.ones((probes * h * w, 1))], axis=1).astype(np.float64)
        target = pooled[:probes].transpose(0, 2, 3, 1).reshape(-1, 3)
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        fitted = cls(solution[:c].T.copy(), solution[c].copy(), f, {})
        fitted.gap = gap(fitted(latents[probes:]), images[probes:], f"{held_out} held-out probe images")
        return fitted


def gap(approx: np.ndarray, full: np.ndarray, on: str) -> dict:
    """RMSE in [−1, 1] units, and PSNR of the two as displayed ((x/2 + 0.5) clipped to [0, 1])."""
    a, b = np.asarray(approx, np.float64), np.asarray(full, np.float64)
    rmse = float(np.sqrt(np.mean((a - b) ** 2)))
    shown = np.mean((np.clip(a / 2 + 0.5, 0, 1) - np.clip(b / 2 + 0.5, 0, 1)) ** 2)
    return {"rmse": rmse, "psnr_db": float("inf") if shown == 0 else float(10 * np.log10(1 / shown)), "on": on}


def _probe_latents(pipe, meta, n, seed) -> np.ndarray:
    """Diffusion latents (E(x)·s) of `n` smooth random colour fields: 4x4 random colours in [−1, 1],
    bilinearly upsampled to the image size, encoded by the VAE (its mean for a KL VAE)."""
    import paddle

    rng = np.random.RandomState(seed)
    _, height, width = meta["image_shape"]
    coarse = paddle.to_tensor(rng.uniform(-1, 1, (n, 3, 4, 4)).astype(np.float32))
    images = paddle.nn.functional.interpolate(coarse, size=[height, width], mode="bilinear", align_corners=True)
    vae = getattr(pipe, meta["vae_attribute"])
    with paddle.no_grad():
        encoded = vae.encode(images)
        z = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latents
    return (z * meta["scaling_factor"]).cast("float32").numpy()


_APPROX: Dict[int, tuple] = {}      # id(vae) → (weakref to it, fingerprint of its weights, ApproxDecoder)


def _fingerprint(vae) -> str:
    """A hash of the VAE's weights (one sum per parameter, read in one go): a VAE changed in place refits."""
    import paddle

    sums = paddle.stack([p.astype("float64").sum() for p in vae.parameters()]).numpy()
    return hashlib.sha1(sums.tobytes()).hexdigest()


def approx_decoder(pipe) -> ApproxDecoder:
    """The fitted ApproxDecoder of this pipeline's VAE: fitted once per VAE (and weights), then cached."""
    meta = _check_pipe(pipe)
    vae = getattr(pipe, meta["vae_attribute"])
    key, mark = id(vae), _fingerprint(vae)
    kept = _APPROX.get(key)
    if kept is not None and kept[0]() is vae and kept[1] == mark:
        return kept[2]
    fitted = ApproxDecoder.fit(pipe)
    _APPROX[key] = (weakref.ref(vae), mark, fitted)
    g = fitted.gap
    print(f"ppddpm: fitted a linear latent→RGB preview of {meta['vae_class']} (cached for this VAE); its gap to "
              f"the full decode on {g['on']}: RMSE {g['rmse']:.3g}, PSNR {g['psnr_db']:.1f} dB")
    return fitted


def _decoder_fn(pipe, method, batch):
    if method == "vae":
        return lambda latents: vae_decode(pipe, latents, batch)
    return approx_decoder(pipe)


def decode(traj, pipe=None, fields: Sequence[str] = ("pred_original_sample",), method: str = "vae",
           batch: int = 4, verbose: bool = True):
    """The latent run `traj` in pixel space: a Trajectory with the same steps, numbers and metadata
    whose `fields` are [n, B, 3, H, W] images in [−1, 1] (plots, grids, GIFs and the explorer take it
    as any run). method="vae": the pipeline's VAE, `batch` frames per call; "approx": the fitted
    linear preview (`ApproxDecoder`), whose gap to the full decode on this run's last step is
    measured (one VAE call) and printed. `pipe=None` uses the frames `record(decode=…)` kept."""
    _check_method(method)
    check_int("batch", batch)
    if traj.meta.get("space") != "latent":
        raise BadValue("decode takes a run recorded on a latent pipeline (meta['space'] == 'latent'); this one is "
                       f"{traj.meta.get('space', 'in pixel space')}")
    fields = tuple([fields] if isinstance(fields, str) else fields)
    for name in fields:
        traj.field(name)                        # unknown or unrecorded: one clear error
    info = {"method": method, "fields": list(fields), "from": "latents"}
    if pipe is None:
        kept = traj.meta.get("decoded") or {}
        missing = [f for f in fields if f + DECODED_SUFFIX not in traj.fields]
        if missing or kept.get("method") != method:
            raise BadValue(f"this run kept no {method}-decoded {', '.join(missing or fields)}; pass the pipeline: "
                           f"ppddpm.decode(traj, pipe, ...)")
        decoded = {f: traj.field(f + DECODED_SUFFIX) for f in fields}
        info = dict(kept, fields=list(fields))
    else:
        _check_pipe(pipe, traj.meta.get("latent"))
        fn = _decoder_fn(pipe, method, batch)
        decoded = {f: _decode_frames(fn, traj.field(f)) for f in fields}
        if method == "approx":
            info["fit_gap"] = fn.gap
            last = np.asarray(traj.field(fields[0])[-1:], np.float32)[0]
            info["gap"] = gap(decoded[fields[0]][-1], vae_decode(pipe, last, batch),
                              f"the last recorded step's {fields[0]}")
            if verbose:
                print(f"ppddpm.decode(method='approx'): gap to the VAE decode on {info['gap']['on']}: RMSE "
                      f"{info['gap']['rmse']:.3g}, PSNR {info['gap']['psnr_db']:.1f} dB")
    meta = dict(traj.meta, space="pixels", decoded=info)
    return Trajectory(traj.timesteps, decoded, traj.sigma, traj.clip_fraction, meta, images=traj.images,
                      stages=traj.stages)


def _decode_frames(fn, frames) -> np.ndarray:
    """[n, B, C, h, w] → [n, B, 3, H, W] through `fn` on [n·B, C, h, w]."""
    frames = np.asarray(frames, np.float32)
    n, b = frames.shape[:2]
    out = fn(frames.reshape((n * b,) + frames.shape[2:]))
    return out.reshape((n, b) + out.shape[1:])


class ChunkDecoder:
    """`record(decode=…)`'s decoder: a chunk of steps' frames (host arrays [k, B, C, h, w]) → their
    images [k, B, 3, H, W], at most `batch` latents per VAE call, as each chunk reaches the host."""

    def __init__(self, pipe, method: str, fields: Sequence[str], batch: int = 4):
        self.method, self.fields, self.batch = _check_method(method), tuple(fields), check_int("decode_batch", batch)
        self.meta = _check_pipe(pipe)
        self.fn = _decoder_fn(pipe, method, self.batch)
        self.names = tuple(f + DECODED_SUFFIX for f in self.fields)

    def shapes(self, batch_size: int) -> dict:
        return {name: (batch_size,) + tuple(self.meta["image_shape"]) for name in self.names}

    def chunk(self, latent_shapes: dict, itemsize: dict) -> int:
        """Steps per chunk when both the latents and their decoded images count against the budget."""
        per_step = sum(int(np.prod(shape)) * itemsize[name] for name, shape in latent_shapes.items())
        images = len(self.names) * int(np.prod(next(iter(latent_shapes.values()))[:1])) * \
            int(np.prod(self.meta["image_shape"])) * 4
        return chunk_for(per_step + images)

    def describe(self) -> dict:
        out = {"method": self.method, "fields": list(self.fields), "decode_batch": self.batch, "from": "latents"}
        if self.method == "approx":
            out["fit_gap"] = self.fn.gap
        return out

    def __call__(self, frames: dict) -> dict:
        return {name: _decode_frames(self.fn, frames[field]) for field, name in zip(self.fields, self.names)}


# --------------------------------------------------------------------------- pictures of a latent run

LATENT_RANGE = 3.0        # latents (unit variance by the choice of scaling_factor) shown on [−3, 3]


def channels_view(frames) -> np.ndarray:
    """[..., C, h, w] latents → [..., 1, h, C·w]: the channels side by side as one gray image, on
    [−LATENT_RANGE, LATENT_RANGE] mapped to the display's [−1, 1]."""
    frames = np.asarray(frames, np.float32) / LATENT_RANGE
    return np.concatenate([frames[..., c: c + 1, :, :] for c in range(frames.shape[-3])], axis=-1)


def caption(traj) -> str:
    """The prompt or class label (and guidance scale) of a latent run, for titles; "" otherwise."""
    cond = traj.meta.get("conditioning") or {}
    parts = []
    if isinstance(cond.get("prompt"), (str, list)):
        parts.append(f"prompt {cond['prompt']!r}" if isinstance(cond["prompt"], str) else f"prompts {cond['prompt']}")
    elif "prompt_embeds" in cond:
        parts.append("prompt given as embeddings")
    if "class_labels" in cond:
        names = cond.get("class_names")
        parts.append("class " + ", ".join(f"{c} ({n})" if names else f"{c}"
                                          for c, n in zip(cond["class_labels"], names or cond["class_labels"])))
    if cond.get("negative_prompt"):
        parts.append(f"negative {cond['negative_prompt']!r}")
    if "guidance_scale" in cond:
        parts.append(f"guidance {cond['guidance_scale']:g}")
    return ", ".join(parts)


def displayable(traj, latent_channels: bool = False):
    """What the pictures show of `traj`: itself for a pixel run; for a latent run, a Trajectory with
    the same fields in which each field is its decoded frames where the run kept them (record(decode=…)
    or `decode`), else its latent channels side by side (`channels_view`); latent_channels=True shows
    the channels of every field. `meta["shown_as"]` says which is which."""
    if traj.meta.get("space") != "latent" or "shown_as" in traj.meta:     # pixels, or already a view
        return traj
    fields, shown = {}, {}
    for name in traj.fields:
        if name.endswith(DECODED_SUFFIX):
            continue
        if not latent_channels and name + DECODED_SUFFIX in traj.fields:
            fields[name], shown[name] = traj.field(name + DECODED_SUFFIX), "decoded"
        else:
            fields[name], shown[name] = channels_view(traj.field(name)), "latent channels"
    meta = dict(traj.meta, shown_as=shown)
    return Trajectory(traj.timesteps, fields, traj.sigma, traj.clip_fraction, meta, images=traj.images,
                      stages=traj.stages)


# --------------------------------------------------------------------------- the denoiser, for compare's own loop

def denoiser(pipe, pipe_kwargs: Optional[dict] = None, batch_size: int = 1):
    """(model, fn, batch): `fn(x, t)` is the ε̂ the pipeline's loop would hand `scheduler.step` for the
    model inputs x = k stacked batches ([k·batch, C, h, w], already `scale_model_input`-ed): the
    conditioning of `pipe_kwargs` (prompt / embeddings, class labels) and classifier-free guidance
    ε̂_u + g (ε̂_c − ε̂_u) as the pipeline combines them. Pixel pipelines and LDM: `unet(x, t).sample`.
    `model` is the denoiser (its config gives the latent shape); `batch` the rows one run has."""
    kind = kind_of(pipe)
    if kind is None or kind.halves is None:
        return pipe.unet, (lambda x, t: pipe.unet(x, t).sample), batch_size
    kwargs = dict(pipe_kwargs or {})
    scale = float(kwargs.get("guidance_scale", DEFAULT_GUIDANCE[kind.name]))
    if kind.name == "dit":
        labels = call_arguments(pipe, batch_size, None, 1, kwargs)["class_labels"]
        return pipe.transformer, _dit_eps(pipe, list(labels), scale), len(labels)
    call = call_arguments(pipe, batch_size, None, 1, kwargs)
    embeds = call.get("prompt_embeds")
    if isinstance(call.get("prompt"), list) or (embeds is not None and embeds.shape[0] != 1):
        raise BadValue("compare on a StableDiffusionPipeline takes one prompt (a string, or prompt_embeds of batch 1); "
                       "batch_size sets how many samples share it")
    pos, neg = pipe.encode_prompt(call.get("prompt"), batch_size, scale > 1, call.get("negative_prompt"),
                                  prompt_embeds=call.get("prompt_embeds"),
                                  negative_prompt_embeds=call.get("negative_prompt_embeds"))
    return pipe.unet, _sd_eps(pipe, pos, neg, scale), batch_size


def _sd_eps(pipe, pos, neg, scale):
    """StableDiffusionPipeline's denoiser call and guidance (uncond rows first), for k stacked batches."""
    import paddle

    def fn(x, t):
        k = x.shape[0] // pos.shape[0]
        t = t.reshape([1])
        if scale <= 1:
            return pipe.unet(x, t, encoder_hidden_states=pos.tile([k, 1, 1])).sample
        embeds = paddle.concat([neg.tile([k, 1, 1]), pos.tile([k, 1, 1])])
        uncond, cond = pipe.unet(paddle.concat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
        return uncond + scale * (cond - uncond)
    return fn


def _dit_eps(pipe, labels, scale):
    """DiTPipeline's transformer call and guidance (cond rows first, the null class 1000, the first C
    output channels), for k stacked batches of len(labels)."""
    import paddle

    def fn(x, t):
        k, channels = x.shape[0] // len(labels), x.shape[1]
        classes = paddle.to_tensor(labels * k)
        if scale > 1:
            x, classes = paddle.concat([x, x]), paddle.concat([classes, paddle.to_tensor([1000] * len(labels) * k)])
        steps = (t if len(t.shape) else t[None]).expand([x.shape[0]])
        eps = pipe.transformer(x, timestep=steps, class_labels=classes).sample[:, :channels]
        if scale <= 1:
            return eps
        cond, uncond = paddle.chunk(eps, 2)
        return uncond + scale * (cond - uncond)
    return fn
