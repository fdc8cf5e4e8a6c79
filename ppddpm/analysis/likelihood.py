"""`ppddpm.likelihood`: the variational bound of a DDPM pipeline on real images, term by term, in bits/dim.

The DDPM paper's objective (MATH.md, "The variational bound, term by term"; eqs. 3, 5, 12, 13):

    L = L_T + Σ_{t=1}^{T−1} L_t + L_0          (0-based t, as ppdiffusers and the TF code index it)

`vb_term(pipe, x_start, x_t, t)` is one term for a batch (the TF code's `_vb_terms_bpd`): the KL between the
forward posterior q(x_{t−1}|x_t, x_0) and the model's p_θ(x_{t−1}|x_t) for t > 0, the discretized decoder's
−log p_θ(x_0|x_1) at t = 0. `bpd(pipe, images)` is the whole bound (the TF code's `calc_bpd_loop`): every
term with a fresh x_t per t, plus the prior L_T, and ‖x̂_0 − x_0‖² per t; with `timesteps=K` an unbiased
estimate of the sum from K timesteps drawn uniformly without replacement (T/K times their sum).

Cost: one UNet call per timestep per batch of images; each t's per-image terms stay on the device and
move to the host a chunk of timesteps at a time (`ppddpm.core.transfer.DeviceChunks`), as `compare` does.
The noise of image i at timestep t is drawn from numpy's `default_rng([seed, t])` (all images of t at
once), so it does not depend on `batch_size`, and a K-timestep estimate sees exactly the terms the full
run computes at those t. The float64 truth of every formula is `ppddpm.reference.bound`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ppddpm._io import atomic_path
from ppddpm._progress import wanted
from ppddpm.core.bound import LN2, bound_tables, per_sample_t, prior_bpd, q_sample, vb_terms_bpd
from ppddpm.core.transfer import DeviceChunks
from ppddpm.errors import BadType, BadValue, check_int

__all__ = ["bpd", "vb_term", "BoundReport", "check_images", "draw_timesteps", "target_weights"]

MAX_LEVELS = 65536          # 16-bit data at most
GRID_TOLERANCE = 1e-3       # |level − round(level)| allowed: float32 data on a grid of ≤ 65536 levels is closer


def check_images(images, levels: int, what: str = "images") -> np.ndarray:
    """`images` [B, C, H, W] as float32 if they are finite, in [−1, 1] and on the `levels` values
    −1 + 2k/(levels − 1) (the data the discretized decoder of eq. 13 is defined for); else one line."""
    check_int("levels", levels, low=2)
    if levels > MAX_LEVELS:
        raise BadValue(f"levels must be at most {MAX_LEVELS} (16-bit data), got {levels}")
    try:
        x = np.asarray(images, np.float64)
    except (TypeError, ValueError):
        raise BadType(f"{what} must be an array of numbers [B, C, H, W], got {type(images).__name__}") from None
    if x.ndim != 4 or not x.size:
        raise BadValue(f"{what} must be a non-empty batch [B, C, H, W], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise BadValue(f"{what} hold {int((~np.isfinite(x)).sum())} NaN or infinite values")
    if not (np.abs(x).max() <= 1.0 + 1e-6):
        raise BadValue(f"{what} must lie in [-1, 1] (the diffusion range); their values reach {np.abs(x).max():.4g}")
    k = (x + 1.0) / 2.0 * (levels - 1)
    off = np.abs(k - np.round(k))
    if not (off.max() <= GRID_TOLERANCE):
        raise BadValue(f"{what} are not on {levels} levels (-1 + 2k/{levels - 1}): {int((off > GRID_TOLERANCE).sum())} "
                       f"values lie between them (up to {off.max():.3f} of a step); give the data's own number of "
                       f"levels (256 for 8-bit images, 17 for the digits)")
    return x.astype(np.float32)


def vb_term(pipe, x_start, x_t, t, levels: int = 256, clip_denoised: bool = True) -> np.ndarray:
    """One term of the bound per image, bits/dim [B] (TF `_vb_terms_bpd`; 0-based t, an int or one per image):
    KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) for t > 0, the decoder NLL −log p_θ(x_0|x_1) (eq. 13) at t = 0.
    The model's mean and variance follow `pipe.scheduler`'s prediction_type and variance_type."""
    import paddle

    tables = bound_tables(pipe.scheduler)
    x0 = paddle.to_tensor(check_images(x_start, levels, "x_start"))
    xt = np.asarray(x_t, np.float32)
    if xt.shape != tuple(x0.shape) or not np.isfinite(xt).all():
        raise BadValue(f"x_t must be finite and shaped like x_start {tuple(x0.shape)}, got {xt.shape}")
    t_dev, t_host = per_sample_t(_checked_t(t, tables.num_timesteps), x0.shape[0])
    with paddle.no_grad():
        out = pipe.unet(paddle.to_tensor(xt), t_dev).sample
        bits, _ = vb_terms_bpd(tables, out, x0, paddle.to_tensor(xt), t_dev, t_host, clip_denoised, levels)
    return bits.numpy().astype(np.float64)


def _checked_t(t, T: int) -> np.ndarray:
    t = np.asarray(t)
    if t.dtype.kind not in "iu" or not ((t >= 0) & (t < T)).all():
        raise BadValue(f"t must be integer timesteps in 0..{T - 1} (0-based), got {t.tolist()}")
    return t


@dataclass
class BoundReport:
    """The bound of `bpd`, per image, in bits/dim. `terms[:, t]` is L_t (0-based: L_0 the decoder of eq. 13,
    L_t for t ≥ 1 the KL at the paper's t + 1), NaN at timesteps not drawn; `mse[:, t]` is ‖x̂_0 − x_0‖² (mean
    over dimensions); `total` = prior + the terms' sum (× T/K when K of the T timesteps were drawn);
    `weights[t]`: the weight of eq. (12) that L_simple drops, in bits/dim per unit of the trained target's
    mean squared error (ε, x_0 or v by prediction_type; σ_t² of fixed_small for learned_range)."""
    total: np.ndarray
    terms: np.ndarray
    prior: np.ndarray
    mse: np.ndarray
    timesteps: np.ndarray
    weights: np.ndarray
    levels: int
    seed: int
    clip_denoised: bool
    prediction_type: str
    variance_type: str
    seconds: float = 0.0
    model: str = ""
    notes: list = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.total)

    @property
    def num_timesteps(self) -> int:
        return self.terms.shape[1]

    @property
    def estimated(self) -> bool:
        """Whether the sum over t is estimated from a sample of the timesteps."""
        return len(self.timesteps) < self.num_timesteps

    @property
    def mean(self) -> float:
        return float(self.total.mean())

    @property
    def image_error(self) -> float:
        """Standard error of `mean` from the images: their spread / √B (0 for one image)."""
        n = self.num_images
        return float(self.total.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    @property
    def timestep_error(self) -> float:
        """Standard error of `mean` from drawing K of the T timesteps (without replacement, shared by the
        images): T·√((1 − K/T)·s²/K), s² the variance over the drawn t of the images' mean term; 0 when K = T."""
        K, T = len(self.timesteps), self.num_timesteps
        if K == T or K < 2:
            return 0.0 if K == T else float("nan")
        per_t = self.terms[:, self.timesteps].mean(axis=0)
        return float(T * math.sqrt((1.0 - K / T) * per_t.var(ddof=1) / K))

    @property
    def standard_error(self) -> float:
        """Standard error of `mean`: the images' and the timestep draw's, added in quadrature."""
        return float(math.hypot(self.image_error, self.timestep_error))

    def as_dict(self) -> dict:
        def arr(a):
            return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, np.float64).ravel()]

        return {"model": self.model, "levels": self.levels, "seed": self.seed, "clip_denoised": self.clip_denoised,
                "prediction_type": self.prediction_type, "variance_type": self.variance_type,
                "num_images": self.num_images, "num_timesteps": self.num_timesteps,
                "timesteps": self.timesteps.tolist(), "estimated": self.estimated, "mean_bpd": self.mean,
                "standard_error": self.standard_error, "image_error": self.image_error,
                "timestep_error": self.timestep_error, "seconds": self.seconds, "notes": list(self.notes),
                "total": arr(self.total), "prior": arr(self.prior), "weights": arr(self.weights),
                "mean_terms": arr(self.terms.mean(axis=0)), "mean_mse": arr(self.mse.mean(axis=0)),
                "terms": [arr(row) for row in self.terms], "mse": [arr(row) for row in self.mse]}

    def to_json(self, path=None):
        """The report as JSON (NaN → null): a string, or written atomically to `path` (returned)."""
        text = json.dumps(self.as_dict())
        if path is None:
            return text
        with atomic_path(path) as tmp:
            tmp.write_text(text)
        return Path(path)

    def table(self) -> str:
        """What `ppddpm bpd` prints: the bound, where its bits are (by ranges of t), and x̂_0's error."""
        return _table(self)


def _ranges(T: int):
    edges = [0, 1] + [e for e in (10, 100, T // 2) if 1 < e < T] + [T]
    return [(a, b) for a, b in zip(edges, edges[1:]) if a < b]


def _table(r: BoundReport) -> str:
    T, K = r.num_timesteps, len(r.timesteps)
    how = "all T" if not r.estimated else f"{K} of T drawn uniformly (seed {r.seed}), sum x T/K"
    lines = [f"{r.model + ': ' if r.model else ''}variational bound on {r.num_images} images, {r.levels} levels, "
             f"T = {T} ({how}); {r.prediction_type}, {r.variance_type}, x̂_0 "
             f"{'clipped' if r.clip_denoised else 'not clipped'}",
             f"  total  {r.mean:.4f} ± {r.standard_error:.4f} bits/dim (mean ± standard error: images "
             f"{r.image_error:.4f}" + (f", timestep draw {r.timestep_error:.4f})" if r.estimated else ")"),
             f"  {'term':<16s} {'bits/dim':>9s} {'share':>7s} {'x̂_0 MSE':>9s}",
             f"  {'L_T (prior)':<16s} {r.prior.mean():9.4f} {r.prior.mean() / r.mean:7.1%} {'':>9s}"]
    scale = T / K
    for a, b in _ranges(T):
        drawn = [t for t in r.timesteps if a <= t < b]
        name = "L_0 (decoder)" if (a, b) == (0, 1) else f"L_{a}..L_{b - 1}"
        if not drawn:
            lines.append(f"  {name:<16s} {'(none drawn)':>9s}")
            continue
        bits = float(np.nansum(r.terms[:, drawn].mean(axis=0))) * scale
        lines.append(f"  {name:<16s} {bits:9.4f} {bits / r.mean:7.1%} {float(r.mse[:, drawn].mean()):9.4f}")
    return "\n".join(lines)


def target_weights(tables) -> np.ndarray:
    """eq. (12)'s weight per t in bits/dim per unit of the target's MSE (BoundReport.weights): ‖μ̃ − μ_θ‖²/(2σ²)
    with μ̃ − μ_θ = c₁(x_0 − x̂_0) (eq. 7's x_0 coefficient) and x_0 − x̂_0 = −√((1−ᾱ)/ᾱ)(ε − ε̂) for ε,
    √(1−ᾱ)(v − v̂) for v: β_t²/(2σ_t²α_t(1−ᾱ_t)) for ε (eq. 12). NaN at t = 0."""
    ab, betas = tables.alphas_cumprod, tables.betas
    prev = np.append(1.0, ab[:-1])
    coef1 = np.sqrt(prev) * betas / (1.0 - ab)
    sigma2 = np.exp(tables.model_log_variance_fixed() if tables.variance_type != "learned_range"
                    else tables.posterior_log_variance_clipped)
    per_x0 = coef1 ** 2 / (2.0 * sigma2)
    factor = {"epsilon": (1.0 - ab) / ab, "sample": np.ones_like(ab), "v_prediction": 1.0 - ab}[tables.prediction_type]
    w = per_x0 * factor / LN2
    w[0] = np.nan
    return w


def draw_timesteps(T: int, timesteps: Optional[int], seed: int) -> np.ndarray:
    """All T timesteps (None), or K of them drawn uniformly without replacement with `seed`, sorted."""
    if timesteps is None:
        return np.arange(T)
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)) or not 2 <= timesteps <= T:
        raise BadValue(f"timesteps must be an integer from 2 (to estimate its error) to the model's T = {T} (none: "
                       f"all T terms); got {timesteps!r}")
    return np.sort(np.random.RandomState(seed).choice(T, int(timesteps), replace=False))


def bpd(pipe, images, seed: int = 0, levels: int = 256, timesteps: Optional[int] = None, batch_size: int = 256,
        clip_denoised: bool = True, progress: Optional[bool] = None) -> BoundReport:
    """The variational bound of `pipe` on `images` [B, C, H, W] in [−1, 1] on `levels` values, term by term
    (TF `calc_bpd_loop`): `BoundReport`. `timesteps=K`: K of the T terms, drawn uniformly with `seed`, scaled
    by T/K (the report states the estimate's standard error). `seed` also fixes the noise of each x_t."""
    import paddle

    tables = bound_tables(pipe.scheduler)
    x = check_images(images, levels)
    _fits(pipe, x)
    T, drawn = tables.num_timesteps, draw_timesteps(tables.num_timesteps, timesteps, seed)
    batch_size = check_int("batch_size", batch_size)
    started = time.time()
    batches = [paddle.to_tensor(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    with paddle.no_grad():
        prior = np.concatenate([prior_bpd(tables, b).numpy() for b in batches]).astype(np.float64)
        terms, mse = _terms(pipe, tables, batches, x.shape, drawn, seed, levels, clip_denoised, progress)
    full_terms, full_mse = np.full((len(x), T), np.nan), np.full((len(x), T), np.nan)
    full_terms[:, drawn], full_mse[:, drawn] = terms.T, mse.T
    total = prior + terms.sum(axis=0) * (T / len(drawn))
    return BoundReport(total=total, terms=full_terms, prior=prior, mse=full_mse, timesteps=drawn,
                       weights=target_weights(tables), levels=int(levels), seed=int(seed), clip_denoised=clip_denoised,
                       prediction_type=tables.prediction_type, variance_type=tables.variance_type,
                       seconds=time.time() - started)


def _fits(pipe, x: np.ndarray) -> None:
    cfg = pipe.unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, (list, tuple)) else (cfg.sample_size,) * 2
    if x.shape[1] != cfg.in_channels or tuple(x.shape[2:]) != tuple(size):
        raise BadValue(f"images of shape {x.shape[1:]} do not fit this UNet ({cfg.in_channels} channels, "
                       f"{size[0]}x{size[1]})")


def _terms(pipe, tables, batches, shape, drawn, seed, levels, clip_denoised, progress):
    """[K, N] terms and x̂_0 errors, one UNet call per timestep per batch; read a chunk of timesteps at a time."""
    import paddle
    from tqdm.auto import tqdm

    rows = {"terms": [], "mse": []}

    def sink(frames, values):
        done = sum(len(part) for part in rows["terms"])
        bad = ~np.isfinite(frames["terms"]).all(axis=1)
        if bad.any():            # a damaged model: say so at the first chunk it shows in, not after all T terms
            raise BadValue(f"the model's bound is not finite at t = {int(drawn[done + np.argmax(bad)])} (NaN or inf "
                           f"in its output); its weights may be damaged")
        for name in rows:
            rows[name].append(frames[name])

    chunks = DeviceChunks(sink)
    chunks.allocate({name: (shape[0],) for name in rows}, dict.fromkeys(rows, "float32"), dict.fromkeys(rows, 4))
    bar = tqdm(total=len(drawn) * len(batches), disable=not wanted(progress), unit="call",
               desc=f"bound: {shape[0]} images x {len(drawn)} timesteps")
    with bar:
        for t in drawn:
            noise = np.random.default_rng([seed, int(t)]).standard_normal(shape, dtype=np.float32)
            bits, errors, start = [], [], 0
            for x0 in batches:
                t_dev, t_host = per_sample_t(int(t), x0.shape[0])
                x_t = q_sample(tables, x0, t_dev, paddle.to_tensor(noise[start:start + x0.shape[0]]))
                term, x0_hat = vb_terms_bpd(tables, pipe.unet(x_t, t_dev).sample, x0, x_t, t_dev, t_host,
                                            clip_denoised, levels)
                bits.append(term)
                errors.append(((x0_hat - x0) ** 2).reshape([x0.shape[0], -1]).mean(axis=1))
                start += x0.shape[0]
                bar.update()
            chunks.add({"terms": paddle.concat(bits), "mse": paddle.concat(errors)}, {})
        chunks.drain()
    return np.concatenate(rows["terms"]).astype(np.float64), np.concatenate(rows["mse"]).astype(np.float64)
