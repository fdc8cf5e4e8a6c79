"""A/B comparison of step variants on a real pipeline: where do two formulas agree, and why not.

    report = ppddpm.compare(pipe, ["posterior", "direct"], seed=777, num_inference_steps=1000,
                            mode="shadow", clip_sample=False)
    print(report.table()); report.equivalent()

- mode="shadow": one real trajectory, driven by the first variant (the reference); at every
  step each variant is applied to the *same* (x_t, ε̂, z). Exact per-step discrepancy,
  one UNet pass per step.
- mode="free": every variant runs its own trajectory from the same seed (one batched UNet
  call per step); shows how differences compound.
- seed may be a list: every statistic is kept per seed. Seeds run in groups of `seed_batch`
  (one batched UNet call per group and step); under paddle.distributed the groups are split
  over the ranks (`ppddpm.core.distributed`) and the report is bitwise the one-process report.

Each seed's noise comes from its own stream (`ppddpm.core.rng.SeedStream`): the same x_T and
the same z at every step as a solo `pipe(generator=paddle.Generator().manual_seed(seed))`,
and every variant at a step consumes the same z.

Tolerance (`equivalent()`): variants compute in float32 like ppdiffusers. One step of either
route rounds ~10 times, and the routes' coefficients are consistent only up to one rounding
of ᾱ_t = α_t·ᾱ_{t−1}, an error that 1/(1 − ᾱ_t) amplifies at small t, where 1 − ᾱ_t cancels
(1 − ᾱ_0 = 1e-4). So at a step, with u = 2⁻²⁴ (float32 unit roundoff),
    |Δ x_{t−1}| ≤ K · u / (1 − ᾱ_t) · (max|x_t| + max|ε̂| + 1),   K = 16.
Free mode adds each step's bound to the discrepancy carried in from the step before:
    bound_t = Σ_{s ≥ t} K · u / (1 − ᾱ_s) · (max|x_s| + max|ε̂_s| + 1).

Across schedulers (DDPM against DDIM, MATH.md "DDIM") the same bound applies: both steps take
x̂_0 by eq. (15) with the same float32 operations, and DDIM's √(1 − ᾱ_prev − σ_t²) is the one
coefficient that cancels, like 1 − ᾱ_t, as t → 0 — so the two float32 evaluations of the same
real number again differ by a few roundings amplified by at most 1/(1 − ᾱ_t). Measured on the
bundled model (docs/figures/ddim.json): the worst step of DDIM(η=1, clipped ε) vs DDPM uses
0.04–0.11 of it, as the DDPM routes do.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ppddpm._io import atomic_path
from ppddpm._progress import wanted
from ppddpm.analysis.series import StepStatistics, StreamedFinals, VariantSeries
from ppddpm.core.adapters import scheduler_of
from ppddpm.core.config import config_in_force, with_config
from ppddpm.core.distributed import groups_of, sharded
from ppddpm.core.loop import sample_loop, sample_shape
from ppddpm.core.rng import SeedStream
from ppddpm.errors import BadValue, check_int, int_problem
from ppddpm.pipelines.latent import conditioning, denoiser, latent_meta
from ppddpm.variants.patching import patch_step
from ppddpm.variants.registry import get_variant, scheduler_for

UNIT_ROUNDOFF = 2.0 ** -24          # float32
K_ROUNDINGS = 16
MODES = ("shadow", "free")


@dataclass
class ABReport:
    variants: List[str]
    mode: str
    seeds: List[int]
    num_inference_steps: int
    batch_size: int
    clip_sample: bool
    thresholding: bool
    timesteps: np.ndarray                            # [N]
    one_minus_alpha_bar: np.ndarray                  # [N]  1 − ᾱ_t (float64)
    scale: Dict[str, np.ndarray]                     # v → [N, S]  max|x_t| + max|ε̂| + 1
    max_abs_prev: Dict[str, np.ndarray]              # v → [N, S]  max |Δ x_{t−1}| vs the reference
    mean_abs_prev: Dict[str, np.ndarray]             # v → [N, S]
    max_abs_x0: Dict[str, np.ndarray]                # v → [N, S]  max |Δ x̂_0| vs the reference
    clip_fraction: Dict[str, np.ndarray]             # v → [N, S]  share of x̂_0 values outside the clip range
    final: Dict[str, np.ndarray]                     # v → [S, B, C, H, W]  final samples in [−1, 1] (or StreamedFinals)
    meta: dict = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return self.variants[0]

    @property
    def others(self) -> List[str]:
        return self.variants[1:]

    def step_bound(self) -> np.ndarray:
        """[N, S] the float32 rounding bound on |Δ x_{t−1}| (module docstring)."""
        per_step = K_ROUNDINGS * UNIT_ROUNDOFF / self.one_minus_alpha_bar[:, None] * self.scale[self.reference]
        if self.mode == "free":
            return np.cumsum(per_step, axis=0)
        return per_step

    def _final_pairs(self, v: str):
        """(v's, the reference's) final samples: all at once, or a seed group at a time when streamed."""
        mine, reference = self.final[v], self.final[self.reference]
        if isinstance(mine, StreamedFinals):
            return zip(mine.groups(), reference.groups())
        return [(mine, reference)]

    def final_max_abs(self, v: str) -> np.ndarray:
        return np.concatenate([np.abs(a - b).reshape(len(a), -1).max(axis=1) for a, b in self._final_pairs(v)])

    def final_psnr(self, v: str) -> np.ndarray:
        """PSNR (dB) of v's final images against the reference's, as the pipeline displays them ([0, 1])."""
        def psnr(mine, reference):
            a = np.clip(mine / 2 + 0.5, 0, 1).reshape(len(mine), -1).astype(np.float64)
            b = np.clip(reference / 2 + 0.5, 0, 1).reshape(len(mine), -1).astype(np.float64)
            mse = ((a - b) ** 2).mean(axis=1)
            with np.errstate(divide="ignore"):
                return np.where(mse > 0, 10 * np.log10(1.0 / np.maximum(mse, 1e-300)), np.inf)
        return np.concatenate([psnr(a, b) for a, b in self._final_pairs(v)])

    def departures(self, v: str) -> np.ndarray:
        """Indices of the steps where v leaves the rounding bound (for any seed)."""
        return np.nonzero((self.max_abs_prev[v] > self.step_bound()).any(axis=1))[0]

    def equivalent(self, v: Optional[str] = None) -> bool:
        """True when every step of v (default: every variant) stays within the float32 bound."""
        names = [v] if v else self.others
        return all(len(self.departures(n)) == 0 for n in names)

    def summary(self) -> dict:
        out = {}
        bound = self.step_bound()
        for v in self.others:
            dep = self.departures(v)
            out[v] = {
                "equivalent": bool(len(dep) == 0),
                "max_abs_prev": float(self.max_abs_prev[v].max()),
                "max_rel_prev": float((self.max_abs_prev[v] / self.scale[self.reference]).max()),
                "worst_ratio_to_bound": float((self.max_abs_prev[v] / bound).max()),
                "max_abs_x0": float(self.max_abs_x0[v].max()),
                "steps_departing": int(len(dep)),
                "first_departing_t": int(self.timesteps[dep[0]]) if len(dep) else None,
                "final_max_abs": [float(x) for x in self.final_max_abs(v)],
                "final_psnr_db": [None if math.isinf(x) else float(x) for x in self.final_psnr(v)],
            }
        clip = self.clip_fraction[self.reference]
        fired = (clip > 0).any(axis=1)
        out["clipping"] = {"steps_with_clipping": int(fired.sum()),
                           "last_t_with_clipping":
                               int(self.timesteps[np.nonzero(fired)[0][-1]]) if fired.any() else None,
                           "mean_fraction": float(clip.mean())}
        return out

    def table(self, rows: int = 20) -> str:
        """Readable text: per step (about `rows` of them, always the first and last), the
        largest |Δ| over seeds and the rounding bound, then the final images."""
        n = len(self.timesteps)
        idx = sorted(set(np.linspace(0, n - 1, min(rows, n)).round().astype(int).tolist()))
        s = len(self.seeds)
        runs_on = self.meta.get("variants", {})
        named = lambda v: f"{v!r}" + (f" on {runs_on[v]['scheduler']}" if v in runs_on else "")  # noqa: E731
        head = (f"A/B {self.mode}: reference {named(self.reference)} vs {', '.join(map(named, self.others))} | "
                f"{self.num_inference_steps} steps, {s} seed(s) x batch {self.batch_size}, "
                f"clip_sample={self.clip_sample}, thresholding={self.thresholding}")
        lines = [head]
        bound = self.step_bound()
        for v in self.others:
            lines.append(f"\n{v} vs {self.reference}" + ("  (max over seeds, and the median)" if s > 1 else ""))
            lines.append(f"{'t':>5} {'max|Δx_t-1|':>12} {'mean|Δx_t-1|':>13} {'max|Δx̂_0|':>11} "
                         f"{'bound':>10} {'clipped':>8}  {'vs bound':9s}" + (" median|Δx_t-1|" if s > 1 else ""))
            for i in idx:
                d = self.max_abs_prev[v][i]
                flag = "> bound" if (d > bound[i]).any() else "within"
                med = f" {np.median(d):>15.2e}" if s > 1 else ""
                lines.append(f"{float(self.timesteps[i]):>5g} {d.max():>12.3e} {self.mean_abs_prev[v][i].max():>13.3e} "
                             f"{self.max_abs_x0[v][i].max():>11.3e} {bound[i].max():>10.2e} "
                             f"{self.clip_fraction[self.reference][i].mean():>8.1%}  {flag:9s}{med}")
            fm, ps = self.final_max_abs(v), self.final_psnr(v)
            lines.append(f"final samples: max|Δ| {fm.max():.3e} in [-1, 1] units, before display clipping"
                         + (f" (median {np.median(fm):.3e})" if s > 1 else "")
                         + f"; as displayed ([0, 1], clipped): PSNR {_db(np.min(ps))}"
                         + (f" (median {_db(np.median(ps))})" if s > 1 else ""))
            dep = self.departures(v)
            lines.append(f"equivalent within float32 rounding: {'yes' if not len(dep) else 'no'}"
                         + (f" — departs at {len(dep)} of {n} steps, first at t={int(self.timesteps[dep[0]])}"
                            if len(dep) else ""))
        clip = self.summary()["clipping"]
        lines.append(f"\nclipping of x̂_0 fired at {clip['steps_with_clipping']} of {n} steps"
                     + (f", last at t={clip['last_t_with_clipping']}"
                        if clip["last_t_with_clipping"] is not None else "")
                     + f"; mean fraction of values clipped {clip['mean_fraction']:.1%}")
        return "\n".join(lines)

    def to_json(self, path=None) -> str:
        data = {
            "variants": self.variants, "reference": self.reference, "mode": self.mode, "seeds": self.seeds,
            "num_inference_steps": self.num_inference_steps, "batch_size": self.batch_size,
            "clip_sample": self.clip_sample, "thresholding": self.thresholding,
            "tolerance": {"unit_roundoff": UNIT_ROUNDOFF, "K": K_ROUNDINGS,
                          "rule": "free" if self.mode == "free" else "per-step"},
            "summary": self.summary(),
            "timesteps": self.timesteps.tolist(),
            "bound": self.step_bound().tolist(),
            "per_variant": {v: {"max_abs_prev": self.max_abs_prev[v].tolist(),
                                "mean_abs_prev": self.mean_abs_prev[v].tolist(),
                                "max_abs_x0": self.max_abs_x0[v].tolist()} for v in self.others},
            "clip_fraction": {v: c.tolist() for v, c in self.clip_fraction.items()},
            "meta": self.meta,
        }
        text = json.dumps(data, indent=1, default=str)
        if path is not None:
            with atomic_path(Path(path)) as tmp:
                tmp.write_text(text)
        return text


def _db(x):
    return "inf — identical" if math.isinf(x) else f"{x:.1f} dB"


def _check_args(variants, mode, seed, num_inference_steps, batch_size, clip_sample):
    if isinstance(variants, str) or len(variants) < 2:
        raise BadValue(f"compare needs a list of at least two variants, the first being the reference; "
                       f"got {variants!r}")
    if mode not in MODES:
        raise BadValue(f"mode must be 'shadow' or 'free', got {mode!r}")
    seeds = [seed] if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else seed
    if not isinstance(seeds, (list, tuple)) or not seeds or any(int_problem("seed", s, low=0) for s in seeds):
        raise BadValue(f"seed must be a non-negative integer or a list of them, got {seed!r}")
    check_int("num_inference_steps", num_inference_steps)
    check_int("batch_size", batch_size)
    if clip_sample not in (None, True, False):
        raise BadValue(f"clip_sample must be None (as configured), True or False, got {clip_sample!r}")
    return [int(s) for s in seeds]


def compare(pipe, variants: Sequence = ("posterior", "direct"), seed=777, num_inference_steps: int = 1000,
            batch_size: int = 1, mode: str = "shadow", clip_sample: Optional[bool] = None,
            thresholding: Optional[bool] = None, progress: Optional[bool] = None, batched: bool = True,
            seed_batch: int = 4, pipe_kwargs: Optional[dict] = None, finals_to=None) -> ABReport:
    """Run an A/B of step variants (the first is the reference) on `pipe`'s UNet and scheduler.

    `clip_sample` / `thresholding`: None keeps the scheduler's setting, True/False override it
    on copies (`ppddpm.with_config`; the pipeline's own scheduler is never modified). Every
    variant, and every seed, steps its own copy of the scheduler, so a sampler that keeps state
    between steps (multistep history, step index) is never fed another lane's steps. The run is
    the one sampling loop (`ppddpm.core.loop.sample_loop`): x_T drawn as the pipelines draw it
    (`randn_tensor(shape, generator, dtype) · init_noise_sigma`), the UNet sees
    `scale_model_input(x_t, t)`; this function only reduces its records to statistics, on the
    device, brought to the host a chunk of steps at a time (`ppddpm.core.transfer.DeviceChunks`).

    `batched`: one UNet call per step for all lanes (free mode) and seeds — fast, but paddle's
    float32 convolutions round differently at different batch sizes (~1e-6 relative here), so a
    lane's numbers then depend, at that level, on how many lanes and seeds share the run (and
    compound where clipping makes the trajectory sensitive). `batched=False` runs each lane and
    seed at its own batch size: every lane is then bitwise the solo run of its variant and seed.

    `seed_batch`: seeds that share a UNet call (with `batched`). A group's numbers do not depend on
    the other groups, so a run under `paddle.distributed.launch` (group g on rank g mod N) gives
    the one-process report bit for bit (`ppddpm.core.distributed`).

    `finals_to`: a directory where each seed group's final samples go, as it ends (`finals-<group>.npy`,
    [variants, seeds, …]); the report's `final` then reads them from there when indexed
    (`StreamedFinals`), so a run over thousands of seeds never holds them all in memory.

    Latent pipelines (`ppddpm.pipelines.latent.denoiser`): `pipe_kwargs` carries the conditioning as for
    `sample_trajectory` (one prompt or prompt_embeds, or class_labels, guidance_scale); each step's
    ε̂ is the guided one the pipeline's loop would make, the statistics and `final` are latents.
    """
    seeds = _check_args(variants, mode, seed, num_inference_steps, batch_size, clip_sample)
    model, denoise, batch_size = denoiser(pipe, pipe_kwargs, batch_size)
    steps, sched, lane_schedulers = _schedulers(pipe, variants, clip_sample, thresholding, num_inference_steps)
    seed_batch = check_int("seed_batch", seed_batch, hint=" (seeds per batched UNet call)")
    ts = _host_timesteps(sched)
    ts = ts.astype(np.int64) if np.all(ts == np.round(ts)) else ts
    run = functools.partial(_compare_group, denoise=denoise, steps=steps, lane_schedulers=lane_schedulers,
                            sched=sched, shape=sample_shape(model, batch_size), dtype=model.dtype, mode=mode,
                            batched=batched, num_inference_steps=num_inference_steps, progress=progress,
                            finals_to=None if finals_to is None else Path(finals_to))
    if finals_to is not None:
        Path(finals_to).mkdir(parents=True, exist_ok=True)
    series = VariantSeries.merge(sharded(list(enumerate(groups_of(seeds, seed_batch))), run, "compare"))
    names = [v.spec for v in steps]
    return ABReport(
        variants=names, mode=mode, seeds=seeds, num_inference_steps=len(ts), batch_size=batch_size,
        clip_sample=bool(sched.config.get("clip_sample", False)),
        thresholding=bool(sched.config.get("thresholding", False)),
        timesteps=ts, one_minus_alpha_bar=_one_minus_alpha_bar(sched, ts),
        scale={v: series[v].scale for v in names},
        max_abs_prev={v: series[v].max_abs_prev for v in names[1:]},
        mean_abs_prev={v: series[v].mean_abs_prev for v in names[1:]},
        max_abs_x0={v: series[v].max_abs_x0 for v in names[1:]},
        clip_fraction={v: series[v].clip_fraction for v in names}, final={v: series[v].final for v in names},
        meta=_run_meta(pipe, pipe_kwargs, sched, steps, lane_schedulers, batched, seed_batch))


def _run_meta(pipe, pipe_kwargs, sched, steps, lane_schedulers, batched, seed_batch) -> dict:
    """What ran: the model, the scheduler in force and its config, each variant's scheduler and arguments."""
    return {"variance_type": sched.config.get("variance_type"), "model": getattr(pipe, "name_or_path", None),
            "scheduler": type(sched).__name__, "scheduler_config": config_in_force(sched), "batched": batched,
            "seed_batch": seed_batch, **_latent_meta(pipe, pipe_kwargs),
            "variants": {v.spec: {"scheduler": type(lane).__name__, "arguments": v.arguments}
                         for v, lane in zip(steps, lane_schedulers)}}


def _schedulers(pipe, variants, clip_sample, thresholding, num_inference_steps):
    """(variants, the scheduler in force, each variant's kind of scheduler): copies of the pipeline's
    scheduler with the overrides; refused when they do not visit the same timesteps."""
    steps = [get_variant(v) for v in variants]
    names = [v.spec for v in steps]
    if len(set(names)) != len(names):
        raise BadValue(f"variants must be distinct, got {names}")
    base = scheduler_of(pipe, "ppddpm.compare")
    overrides = {k: v for k, v in (("clip_sample", clip_sample), ("thresholding", thresholding)) if v is not None}
    sched = with_config(base, **overrides)
    if num_inference_steps > sched.config.num_train_timesteps:
        raise BadValue(f"num_inference_steps must be at most {sched.config.num_train_timesteps} (the "
                       f"scheduler's num_train_timesteps), got {num_inference_steps}")
    lane_schedulers = [scheduler_for(v, sched) for v in steps]       # each variant's own kind of scheduler
    for template in lane_schedulers:
        template.set_timesteps(num_inference_steps)
    _check_same_timesteps(steps, lane_schedulers)
    sched.set_timesteps(num_inference_steps)
    return steps, sched, lane_schedulers


def _latent_meta(pipe, pipe_kwargs) -> dict:
    """A latent pipeline's report says what its latents need to be decoded, and the conditioning."""
    meta = latent_meta(pipe)
    if meta is None:
        return {}
    return {"space": "latent", "latent": meta, "conditioning": conditioning(pipe, pipe_kwargs or {})}


def _compare_group(group, denoise, steps, lane_schedulers, sched, shape, dtype, mode, batched, num_inference_steps,
                   progress, finals_to) -> Dict[str, "VariantSeries"]:
    """One group of seeds, stepped together by the one loop: each variant's series [N, S] and finals
    (in memory, or written to `finals_to` and read back when wanted)."""
    index, seeds = group
    from tqdm.auto import tqdm

    # every (variant, seed) steps its own scheduler copy, with the variant patched in
    copies = [[with_config(lane) for _ in seeds] for lane in lane_schedulers]
    statistics = StepStatistics([v.spec for v in steps], sched, mode, len(sched.timesteps), len(seeds))
    bar = lambda ts: tqdm(ts, disable=not wanted(progress), desc=f"compare ({mode})")  # noqa: E731
    with contextlib.ExitStack() as stack:
        for variant, row in zip(steps, copies):
            for copy in row:
                stack.enter_context(patch_step(copy, variant))
        for step in sample_loop(denoise, copies, [SeedStream(s) for s in seeds], shape, dtype, num_inference_steps,
                                mode=mode, batched=batched, observe=True, progress=bar):
            statistics.add(step)
    series = statistics.series()
    if finals_to is not None:
        path = finals_to / f"finals-{index:05d}.npy"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.stack([s.final for s in series.values()]))
        for k, variant in enumerate(series.values()):
            variant.final = StreamedFinals([(str(path), k, len(seeds))])
    return series


def _check_same_timesteps(variants, schedulers):
    """Variants are compared step for step: every scheduler must visit the same t."""
    first = _host_timesteps(schedulers[0]).tolist()
    for v, lane in zip(variants[1:], schedulers[1:]):
        mine = _host_timesteps(lane).tolist()
        if mine != first:
            raise BadValue(f"{variants[0].spec!r} ({type(schedulers[0]).__name__}) and {v.spec!r} "
                           f"({type(lane).__name__}) visit different timesteps ({_head(first)} vs {_head(mine)}); "
                           f"compare runs them step for step, so their schedules must agree (timestep_spacing, "
                           f"steps_offset)")


def _host_timesteps(scheduler) -> np.ndarray:
    """The scheduler's timesteps on the host (float64), in one read."""
    ts = scheduler.timesteps
    return np.asarray(ts.numpy() if hasattr(ts, "numpy") else ts).astype(np.float64)


def _head(ts):
    return "[" + ", ".join(f"{t:g}" for t in ts[:3]) + (", …]" if len(ts) > 3 else "]")


def _one_minus_alpha_bar(sched, ts) -> np.ndarray:
    """1 − ᾱ_t (float64) at each visited t; the bound's amplification (module docstring)."""
    ab = sched.alphas_cumprod.numpy().astype(np.float64)
    return np.array([1.0 - ab[int(round(float(t)))] for t in ts], np.float64)
