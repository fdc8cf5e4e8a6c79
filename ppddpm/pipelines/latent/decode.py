"""Latent frames → pixel frames: the pipeline's own VAE, or a fitted linear preview.

- `vae_decode(pipe, latents)`: D(z / s) by the pipeline's VAE, batched;
- `ApproxDecoder` / `approx_decoder(pipe)`: a per-channel linear latent→RGB map fitted by least
  squares against that VAE (cached per VAE and weights), whose gap to the full decode is measured
  (`gap`: as the images are shown, on [−1, 1]) and reported;
- `decode(traj, pipe)`: a recorded latent run in pixel space, a Trajectory like any other;
- `ChunkDecoder`: the same, a chunk of steps at a time, while `record(..., decode=…)` runs.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ppddpm.core.transfer import chunk_for
from ppddpm.errors import BadType, BadValue, check_int
from ppddpm.pipelines.latent.kinds import latent_meta, supported_pipelines
from ppddpm.storage.format import DECODED_SUFFIX

METHODS = ("vae", "approx")


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
    over the factor×factor pixels a latent pixel decodes to. `gap`: the preview against the full decode
    on held-out probes, as the images are shown (`gap`)."""
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
    """The gap between two decodes of the same latents as the images are shown: both clipped to [−1, 1]
    (the range the pipeline maps to pixels, `to_pil`), the RMSE in those units (0 … 2) and the PSNR
    against their peak-to-peak 2, 20·log10(2 / RMSE) — the same dB as on the [0, 1] display values. An
    unclipped RMSE would measure how far a random VAE's outputs leave the image range, not the preview."""
    a, b = (np.clip(np.asarray(x, np.float64), -1.0, 1.0) for x in (approx, full))
    rmse = float(np.sqrt(np.mean((a - b) ** 2)))
    return {"rmse": rmse, "psnr_db": float("inf") if rmse == 0 else float(20 * np.log10(2.0 / rmse)), "on": on,
            "units": "images clipped to [-1, 1]"}


def describe_gap(g: dict) -> str:
    """A gap (`gap`) as printed: "RMSE 0.62 on [−1, 1] images, PSNR 12.2 dB"."""
    return f"RMSE {g['rmse']:.3g} on [−1, 1] images, PSNR {g['psnr_db']:.1f} dB"


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
          f"the full decode on {g['on']}: {describe_gap(g)}")
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
                print(f"ppddpm.decode(method='approx'): gap to the VAE decode on {info['gap']['on']}: "
                      f"{describe_gap(info['gap'])}")
    return traj.with_fields(decoded, dict(traj.meta, space="pixels", decoded=info))


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
