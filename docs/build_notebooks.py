"""Write notebooks/*.ipynb from the cell lists below and execute them (outputs committed).

    make docs                                          # with every other generated number (docs/make_docs.py)
    .venv/bin/python docs/build_notebooks.py          # the notebooks alone: full-length run, as committed
    .venv/bin/python docs/build_notebooks.py --no-execute   # only rewrite the sources

Each notebook is executed twice: at full length for its committed outputs, and with PPDDPM_FAST=1 for
the text each code cell printed then, kept in the cell's metadata (`drift.FAST_KEY`): `make test` runs
the notebooks with PPDDPM_FAST=1 and compares (tests/test_notebooks.py). Nothing written depends on the
clock: cell ids are their positions, and no execution times are recorded.
"""
import argparse
import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"

SETUP = '''# Setup 环境准备 — one cell, in one go: AI Studio or local, paddle preinstalled or not.
import importlib, importlib.util, os, subprocess, sys
from pathlib import Path

def ensure_ppddpm():
    \"\"\"Install ppddpm if it is missing and make it importable in this running kernel.
    Source: $PPDDPM_SOURCE (a path or a pip requirement) if set, else the repository this notebook
    sits in, else the package index. A preinstalled paddle (AI Studio's GPU build) is never touched.\"\"\"
    if importlib.util.find_spec("ppddpm") is not None:
        return "ppddpm: already installed"
    here = Path.cwd().resolve()
    repo = next((p for p in (here, *here.parents) if (p / "setup.py").exists() and (p / "ppddpm").is_dir()), None)
    source = os.environ.get("PPDDPM_SOURCE") or (str(repo) if repo else "ppddpm")
    local = Path(source).expanduser().exists()
    extra = "" if importlib.util.find_spec("paddle") else "[cpu]"     # [cpu] only where there is no paddle
    target = str(Path(source).expanduser().resolve()) + extra if local else source + extra
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + (["-e"] if local else []) + [target])
    if local:   # an editable install is read by new interpreters only: put it on this one's path
        sys.path.insert(0, str(Path(source).expanduser().resolve()))
    importlib.invalidate_caches()
    if importlib.util.find_spec("ppddpm") is None:
        raise SystemExit("ppddpm was installed but this kernel cannot see it: restart the kernel and run this cell again")
    return f"ppddpm: installed from {source}"

print(ensure_ppddpm())
import warnings
for noise in ("No ccache found", "Setuptools is replacing distutils", "IProgress not found"):
    warnings.filterwarnings("ignore", message=noise)
import numpy as np
import paddle
import ppddpm
from ppdiffusers.utils import logging as ppd_logging
ppd_logging.disable_progress_bar()          # no "Loading pipeline components" bars in the outputs

# FAST=1 (set by `make test`) shortens only the cells that say so.
FAST = os.environ.get("PPDDPM_FAST", "0") == "1"
# The model: the bundled offline one, or any hub id / directory in PPDDPM_MODEL — e.g. the
# article's google/ddpm-celebahq-256 (256x256, ~30x slower per step) where the hub is reachable.
MODEL = os.environ.get("PPDDPM_MODEL") or None
pipe = ppddpm.load_pipeline(MODEL)
print("device:", paddle.device.get_device(), "| ppddpm", ppddpm.__version__, "| model:",
      MODEL or "bundled ddpm-digits-8 (set PPDDPM_MODEL=google/ddpm-celebahq-256 for the article's model)")'''  # noqa: E501

NOTEBOOKS = {
"01_forward_process.ipynb": [
("md", """# 01 · The forward process 前向过程 (加噪)

DDPM destroys an image in T = 1000 small Gaussian steps (eq. 2), and the whole chain has a
closed form (eq. 4). This notebook shows the noise schedule 噪声调度 β_t, what q(x_t | x_0)
does to a real image every 50 steps, and checks eq. 4 against eq. 2 chained — statistically,
because they are equal in distribution, not sample by sample.

| | formula | ppdiffusers | TF code |
|---|---|---|---|
| (2) one step | x_t = √(1−β_t) x_{t−1} + √β_t ε | — | — |
| (4) closed form | x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε | `DDPMScheduler.add_noise` | `q_sample` |"""),
("code", SETUP),
("md", """## The schedule 噪声调度
β_t grows linearly from 1e-4 to 0.02; ᾱ_t = ∏(1−β_s) is the share of signal variance left.
The signal-to-noise ratio SNR_t = ᾱ_t/(1−ᾱ_t) falls by ten orders of magnitude. The last panel
shows the two coefficients of the posterior mean (eq. 7) that the reverse step uses."""),
("code", "ppddpm.pictures.plotting.plot_schedule(pipe.scheduler)"),
("md", """## q(x_t | x_0) on a real digit, every 50 steps
One fixed ε for all tiles, so they differ only by t. By t ≈ 600 the digit is gone to the eye;
by t = 999 it is (almost exactly) N(0, I): √ᾱ_999 ≈ 0.006."""),
("code", """sched = pipe.scheduler
print("sqrt(alpha_bar) at t = 0, 250, 500, 999:",
      np.sqrt(sched.alphas_cumprod.numpy()[[0, 250, 500, 999]]).round(4))
ppddpm.pictures.plotting.plot_forward("digit", sched, every=50)"""),
("md", """## Closed form (eq. 4) vs chained steps (eq. 2)
Start N copies at the same x_0, noise them t times with eq. 2, and once with eq. 4. Both must
have mean √ᾱ_t x_0 and variance 1 − ᾱ_t. The table shows the gap in units of the standard
error (|z| < 5 means agreement at the 1e-6 level)."""),
("code", """from ppddpm import reference as ref
s64 = ref.Schedule.from_scheduler(sched)           # ppdiffusers' β_t, products redone in float64
N = 4000 if FAST else 20000                        # FAST: fewer draws, same test
rng = np.random.RandomState(0)
x0 = np.linspace(-1, 1, 5)
print(f"{'t':>5} {'mean z (chained)':>17} {'mean z (closed)':>16} {'var z (chained)':>16} {'var z (closed)':>15}")
for t in (10, 100, 500, 999):
    chained = np.broadcast_to(x0, (N, 5)).copy()
    for s in range(t + 1):
        chained = ref.q_step(s64, chained, s, rng.randn(N, 5))                   # eq. (2), t+1 times
    closed = ref.q_sample(s64, np.broadcast_to(x0, (N, 5)), np.full(N, t), rng.randn(N, 5))   # eq. (4)
    mean, var = np.sqrt(s64.alphas_cumprod[t]) * x0, 1 - s64.alphas_cumprod[t]
    z = lambda a, ref_, se: np.abs(a - ref_).max() / se
    print(f"{t:>5} {z(chained.mean(0), mean, np.sqrt(var / N)):>17.2f} {z(closed.mean(0), mean, np.sqrt(var / N)):>16.2f}"
          f" {z(chained.var(0), var, var * np.sqrt(2 / N)):>16.2f} {z(closed.var(0), var, var * np.sqrt(2 / N)):>15.2f}")"""),  # noqa: E501
("md", """And ppdiffusers' float32 `add_noise` against the float64 formula, at the same ε:"""),
("code", """x0 = ppddpm.pictures.plotting.load_image("digit", 16)[None].repeat(4, 0)
eps = np.random.RandomState(1).randn(*x0.shape).astype("float32")
t = np.array([0, 10, 500, 999])
mine = sched.add_noise(paddle.to_tensor(x0), paddle.to_tensor(eps), paddle.to_tensor(t)).numpy()
print("max |add_noise − q_sample| =", np.abs(mine - ref.q_sample(s64, x0, t, eps)).max(), "(float32 rounding)")"""),
],
"02_reverse_trajectory.ipynb": [
("md", """# 02 · The reverse trajectory 反向过程: x_t and x̂_0 every 50 steps

The article edited ppdiffusers' source to get every x_t (`output[1]`) and every predicted
x_0 (`output[2]`, eq. 15). ppddpm records them by observing `scheduler.step` on one scheduler
instance — ppdiffusers untouched. Seed 777, 1000 steps, every step recorded."""),
("code", SETUP),
("code", """traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=1, fields="all")
print(traj)
traj.images[0].resize((128, 128), 0)"""),
("md", """## The article's two grids 两张图
x_t every 50 steps: noise turning into a digit. Then x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t
(eq. 15), the model's guess of the final image at each step (clipped to [−1, 1] as the
step uses it): a blurry average early, sharp and fixed long before x_t is."""),
("code", "ppddpm.pictures.plotting.plot_grid(traj, \"prev_sample\", every=50)"),
("code", "ppddpm.pictures.plotting.plot_grid(traj, \"pred_original_sample\", every=50)"),
("code", "ppddpm.pictures.plotting.plot_trajectory(traj, every=50)"),
("md", """## eq. (15) checked against the recorded values
Recompute x̂_0 from the recorded x_t and ε̂ in float64 and compare with what ppdiffusers
computed in float32 (before clipping). Dividing by √ᾱ_t (0.006 at t = 999) magnifies float32
rounding, so the error is shown relative to |x_t| + |ε̂| and divided by √ᾱ_t."""),
("code", """from ppddpm import reference as ref
s64 = ref.Schedule.from_scheduler(pipe.scheduler)
worst = 0.0
for i, t in enumerate(traj.timesteps):
    x0 = ref.predict_start_from_noise(s64, traj.sample[i].astype(np.float64), t, traj.model_output[i].astype(np.float64))
    err = np.abs(traj.pred_original_sample_unclipped[i] - x0).max()
    scale = (np.abs(traj.sample[i]).max() + np.abs(traj.model_output[i]).max()) / np.sqrt(s64.alphas_cumprod[t])
    worst = max(worst, err / scale)
print(f"max relative error of ppdiffusers' x̂_0 over 1000 steps: {worst:.2e} (float32 unit roundoff 6.0e-08)")
print("steps where clipping changed x̂_0:", int((traj.clip_fraction > 0).sum()), "of", len(traj))"""),  # noqa: E501
("md", """## The article's code, verbatim, on `RecordingDDPMPipeline`
`ppddpm.RecordingDDPMPipeline` is a `DDPMPipeline` whose call accepts `seed=` and returns the
article's triple, so its plotting code runs unchanged:"""),
("code", """from matplotlib import pyplot as plt
pipe = ppddpm.load_pipeline(MODEL, pipeline_class=ppddpm.RecordingDDPMPipeline)
output = pipe(seed=777)
images = output[0].images
image = images[0]
all_images = output[1]  # 保存了所有预测过程中的 x_t
all_x_0 = output[2]     # 保存了所有预测过程中的 x_0,参考本文公式 5

plt.figure(figsize=(10,5))
count = 0
for i in range(1,1000,50):
    img = all_images[i][0].resize((64,64))
    count += 1
    plt.subplot(5,10,count)
    plt.imshow(img)
    plt.axis("off")
plt.show()"""),
("md", "## The trajectory as an animation 动画"),
("code", """from IPython.display import Image as Show
short = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=20)
paths = ppddpm.pictures.plotting.animate(short, "reverse_777.gif", field="prev_sample")
Show(filename=str(paths[0]))"""),
("md", """## Scrub through it 逐步浏览
The explorer: one self-contained HTML page (also `ppddpm view RUN.npz --out view.html`). Use the
slider or the arrow keys; the numbers are the step's, with their equation numbers."""),
("code", """every10 = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=1000, every=10, fields="all")
view = ppddpm.pictures.explorer.explore(every10)
view.save("runs/view_777.html")
view"""),
],
"03_step_equivalence.ipynb": [
("md", """# 03 · Posterior route vs direct route 两种采样公式是否等价

ppdiffusers computes x_{t−1} through x̂_0 (eq. 15) and the posterior mean (eq. 7); the paper's
Algorithm 2 uses eq. 11 directly. Substituting (15) into (7) gives (11) exactly — **as long as
x̂_0 is not clipped**. The article swapped the formula and got "similar" images. Here we
measure where the two agree and where, and why, they do not.

- `shadow` mode: one real trajectory; at every step each variant is applied to the same
  (x_t, ε̂, z): the exact per-step discrepancy.
- `free` mode: each variant runs its own trajectory from the same seed: how it compounds.
- Tolerance: variants compute in float32 like ppdiffusers; a step rounds ~10 times and the
  coefficients agree only up to u/(1−ᾱ_t), so |Δ| ≤ 16·u/(1−ᾱ_t)·(|x_t|+|ε̂|+1), u = 2⁻²⁴."""),
("code", SETUP),
("md", "## Clipping off 不裁剪: equal to rounding"),
("code", """V = ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"]
STEPS = 100 if FAST else 1000                       # FAST: strided, the same comparisons
off = ppddpm.compare(pipe, V, seed=777, num_inference_steps=STEPS, mode="shadow", clip_sample=False)
print(off.table(rows=8))"""),
("md", "## Clipping on 裁剪 (ppdiffusers' default): the direct route departs"),
("code", """on = ppddpm.compare(pipe, V, seed=777, num_inference_steps=STEPS, mode="shadow", clip_sample=True)
print(on.table(rows=8))
ppddpm.pictures.plotting.plot_ab(on, "direct")"""),
("md", """## Free mode: does it show in the final image?
Each route runs its own 1000 steps from seed 777."""),
("code", """free = ppddpm.compare(pipe, ["posterior", "direct"], seed=777, num_inference_steps=STEPS, mode="free", clip_sample=True)
s = free.summary()["direct"]
print(f"final samples: max |Δ| = {s['final_max_abs'][0]:.4f} (in [-1, 1] units); "
      f"as displayed: PSNR = {s['final_psnr_db'][0]:.1f} dB")
ppddpm.pictures.plotting.plot_ab(free, "direct")"""),  # noqa: E501
("md", """## How often, and how much: many seeds at once
The same comparison over several seeds in one batched run (each seed's noise is exactly its
solo run's). ⏱ The next cell is the notebook's long one: 16 seeds × 1000 steps × 2 routes (with
`PPDDPM_FAST=1`: 4 seeds × 100 steps)."""),
("code", """seeds = list(range(4)) if FAST else list(range(16))      # FAST: fewer seeds
many = ppddpm.compare(pipe, ["posterior", "direct"], seed=seeds, num_inference_steps=STEPS, mode="free", clip_sample=True)
psnr = np.array(many.summary()["direct"]["final_psnr_db"], dtype=float)
print(f"{len(seeds)} seeds: final PSNR direct vs posterior: median {np.median(psnr):.1f} dB, min {psnr.min():.1f}, max {psnr.max():.1f}")
print("steps with clipping per seed:", (many.clip_fraction["posterior"] > 0).sum(0).tolist())"""),  # noqa: E501
("md", """## Your own variant 自定义采样公式
Register a step with `DDPMScheduler.step`'s contract. Here: the posterior route with its
coefficients in float64 — it differs from ppdiffusers only by rounding, and the report says so."""),
("code", """from ppddpm.variants.ddpm import coefficients, predict_start_from_noise, modify_x0, add_noise, ddpm_output

@ppddpm.register_variant("posterior-float64", replace=True)
def posterior_f64(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
    \"\"\"eq. (15) → clip → eq. (7), coefficients computed in float64.\"\"\"
    c = coefficients(scheduler, timestep)
    ab, ab_prev = float(c.alpha_prod_t), float(c.alpha_prod_t_prev)
    alpha = ab / ab_prev
    x0 = modify_x0(scheduler, predict_start_from_noise(c, model_output, sample))
    mean = (ab_prev ** 0.5 * (1 - alpha) / (1 - ab)) * x0 + (alpha ** 0.5 * (1 - ab_prev) / (1 - ab)) * sample
    return ddpm_output(add_noise(scheduler, mean, model_output, timestep, generator), x0, return_dict)

mine = ppddpm.compare(pipe, ["ppdiffusers", "posterior-float64"], seed=777, num_inference_steps=STEPS, clip_sample=False)
print(mine.table(rows=6))"""),  # noqa: E501
("md", """## The article's route, as diffs 源码修改
The same edits as source patches, applied to a copy of ppdiffusers (never to site-packages):"""),
("code", """from ppddpm.variants import source_patches
for name, status in source_patches.check().items():
    print(f"{name:22s} {status:4s} {source_patches.describe(name)[:90]}")"""),
],
"04_training.ipynb": [
("md", """# 04 · Training 训练: the article's loop with ppdiffusers parts

`ppddpm.train` is the article's `train_losses` + epoch loop: x_t = `add_noise`(x_0, ε, t)
(eq. 4), loss = MSE(ε, ε_θ(x_t, t)) (eq. 14), t uniform, AdamW, EMA, gradient clipping,
checkpoints. The result is a plain `DDPMPipeline` directory."""),
("code", SETUP),
("code", """from ppddpm.model.training import TrainConfig, train
from ppdiffusers import DDPMPipeline
TRAIN_STEPS = 20 if FAST else 300          # FAST: a short smoke run; the bundled model trained 5500
SAMPLE_STEPS = 100 if FAST else 1000       # FAST: strided sampling
cfg = TrainConfig(output_dir="runs/notebook-train", resolution=8, steps=TRAIN_STEPS, batch_size=64, seed=0)

def samples(p, n=8):
    x = ppddpm.analysis.metrics.sample_images(p, n=n, seed=0, num_inference_steps=SAMPLE_STEPS, batch_size=n)
    return ppddpm.pictures.plotting.contact_sheet(x, ncols=n), x"""),
("md", "## Before training: an untrained UNet2DModel samples noise"),
("code", """from ppddpm.model.builders import small_unet, ddpm_scheduler
paddle.seed(0)
untrained = DDPMPipeline(unet=small_unet(8, 1), scheduler=ddpm_scheduler())
untrained.set_progress_bar_config(disable=True)
grid, _ = samples(untrained)
grid"""),
("md", "## Train 训练"),
("code", """result = train(cfg, progress=False)
print(f"{len(result.losses)} steps; loss {result.losses[0]:.3f} → {np.mean(result.losses[-10:]):.3f}")"""),
("md", """## Loss curves
This run, and the run that produced the bundled model (shipped with it)."""),
("code", """import json
bundled = json.loads((ppddpm.model.loading.BUNDLED_DIR / "train_losses.json").read_text())["losses"]
ppddpm.pictures.plotting.plot_losses({f"bundled model ({len(bundled)} steps)": bundled,
                             f"this notebook ({len(result.losses)} steps)": result.losses})"""),
("md", "## After training: samples and their score 采样与评估"),
("code", """trained = DDPMPipeline.from_pretrained(cfg.output_dir)
trained.set_progress_bar_config(disable=True)
grid, x_mine = samples(trained)
print(f"this notebook's model ({TRAIN_STEPS} steps):")
grid"""),
("code", """grid, x_bundled = samples(pipe)
print(f"the bundled model ({len(bundled)} steps):")
grid"""),
("code", """from ppddpm.analysis import metrics
ceiling = metrics.real_ceiling(8, resolution=8)
for name, x in (("this notebook", x_mine), ("bundled model", x_bundled)):
    s = metrics.score(x)
    print(f"{name:14s} confidence {s.confidence:.2f}  class entropy {s.class_entropy:.2f}  Fréchet {s.frechet_distance:.1f}")
print(f"{'real digits':14s} confidence {ceiling.confidence:.2f}  class entropy {ceiling.class_entropy:.2f}  Fréchet {ceiling.frechet_distance:.1f}")
print("(8 samples: a rough look; `ppddpm eval --n 256` for the figures in README)")"""),  # noqa: E501
],
"05_ddim.ipynb": [
("md", """# 05 · DDIM: the same algebra, one scheduler over 换一个调度器

The article ends by announcing DDIM (Song, Meng, Ermon 2020), where clipping "matters more".
DDIM's step (eq. 12) with σ_t(η) of eq. 16:

x_prev = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ_t²) · ε_θ + σ_t z

With **η = 1**, σ_t² = β̃_t (DDPM's `fixed_small`) and, with ε = (x_t − √ᾱ_t x̂_0)/√(1−ᾱ_t),
the mean is exactly μ̃_t of eq. 7: **DDIM(η=1) is DDPM's posterior step whenever ε and x̂_0
agree** — no clipping, or `use_clipped_model_output=True`. With clipping firing and the
default, DDIM mixes the clipped x̂_0 with the raw ε (diffusers #553, #1545; PaddleNLP #5692).
This notebook measures all of it on the same UNet, the same x_T, the same z and the same t."""),
("code", SETUP),
("md", """## Recording a DDIM run 记录 DDIM 的每一步
The recorder works for any sampler: here DDIMPipeline with η = 1, every step, with the noise
z the step added (passed to the step as data: `variance_noise`)."""),
("code", """from ppdiffusers import DDIMPipeline, DDIMScheduler
ddim = DDIMPipeline(unet=pipe.unet, scheduler=ppddpm.with_config(pipe.scheduler, cls=DDIMScheduler))
traj = ppddpm.sample_trajectory(ddim, seed=777, num_inference_steps=50, fields="all", pipe_kwargs={"eta": 1.0})
print(traj)
print("σ_t(η=1) at the first steps:", np.round(traj.noise_std[:3], 4), "| scheduler:", traj.scheduler)
ppddpm.pictures.plotting.plot_trajectory(traj, every=5)"""),
("md", """## DDIM(η=1) vs DDPM 等价性
`compare` runs variants of different schedulers on one UNet: the reference is ppdiffusers'
DDPM step; the others run on a DDIMScheduler made from the same config."""),
("code", """V = ["ppdiffusers", "ddim(eta=1.0, use_clipped_model_output=True)", "ddim(eta=1.0)"]
steps = 50 if FAST else 1000                        # FAST: 50 steps
off = ppddpm.compare(pipe, V, seed=777, num_inference_steps=steps, mode="shadow", clip_sample=False)
on = ppddpm.compare(pipe, V, seed=777, num_inference_steps=steps, mode="shadow", clip_sample=True)
for name, r in (("clip off", off), ("clip on", on)):
    for v in r.others:
        s = r.summary()[v]
        print(f"{name:8s} {v:46s} equivalent={s['equivalent']!s:5s} worst × bound {s['worst_ratio_to_bound']:.3g}")"""),
("md", """## Where it breaks: exactly where clipping fires 裁剪处分叉
With the default `use_clipped_model_output=False`, DDIM(η=1) leaves the float32 bound at the
steps where clipping changed x̂_0 — and only there (the last step excepted: there
√(1 − ᾱ_prev − σ²) = 0 and ε drops out of eq. 12)."""),
("code", """fired = set(np.nonzero(on.clip_fraction["ppdiffusers"][:, 0] > 0)[0].tolist())
departs = set(on.departures("ddim(eta=1.0)").tolist())
print(f"clipping fired at {len(fired)} of {steps} steps; DDIM(η=1) departs at {len(departs)}; "
      f"all departures where clipping fired: {departs <= fired}")
ppddpm.pictures.plotting.plot_ab(on, "ddim(eta=1.0)")"""),
("md", """## diffusers #553: does the final image change with the seed?
Free mode over several seeds: how often do DDPM and DDIM(η=1) end on the same image?"""),
("code", """seeds = list(range(4)) if FAST else list(range(16))
many = ppddpm.compare(pipe, V, seed=seeds, num_inference_steps=50, mode="free")
for v in many.others:
    psnr = many.final_psnr(v)
    print(f"{v:46s} seeds agreeing above 50 dB: {np.mean(psnr > 50):.0%} (median {np.median(np.minimum(psnr, 999)):.1f} dB)")"""),  # noqa: E501
("md", """## Deterministic DDIM (η = 0): where does clipping fire? 裁剪在哪里发生
A map of step × sample: the share of x̂_0's values outside [−1, 1] before the clip."""),
("code", """det = DDIMPipeline(unet=pipe.unet, scheduler=ppddpm.with_config(pipe.scheduler, cls=DDIMScheduler))
t20 = ppddpm.sample_trajectory(det, seed=0, num_inference_steps=20, batch_size=8,
                               fields=("prev_sample", "pred_original_sample_unclipped"))
ppddpm.pictures.plotting.plot_clip_map(t20)"""),
("md", """The measured study — 10, 20 and 50 steps, clipping on vs off, sample quality on n = 256 —
is README's "DDIM" section (`make figures` → `docs/figures/ddim.json`)."""),
],
"06_latent.ipynb": [
("md", """# 06 · Latent diffusion: what does the model believe the image is at step t? 潜空间扩散

Stable Diffusion, LDM and DiT run DDPM's reverse process on a VAE's latents z: the denoiser
predicts ε in latent space, the scheduler steps z, and only at the end does the VAE decode
D(z / s) (Rombach et al. 2022; s is the VAE's `scaling_factor`). The recorder observes
`scheduler.step` as for any pipeline, so it records latents; `ppddpm.decode` turns any recorded
field — above all x̂_0, the model's guess of the final image — into pictures, at every step.

Offline, this notebook runs **tiny random pipelines** built in code (4x8x8 latents, 16x16 images):
the mechanics are real, the pictures are noise. The last cell has the code for a real checkpoint."""),
("code", SETUP),
("md", """## Record a Stable Diffusion run, x̂_0 decoded at every step 每一步的 x̂_0 图像
`decode="vae"` decodes the recorded x̂_0 (and here x_t) a chunk of steps at a time while the run
goes; the guidance fields keep the UNet's unconditional and conditional outputs, observed by a
forward hook on it."""),
("code", """sd = ppddpm.model.builders.tiny_latent_pipeline("stable-diffusion")
GUIDED = ("prev_sample", "pred_original_sample", "model_output_uncond", "model_output_cond",
          "pred_original_sample_uncond", "pred_original_sample_cond")
traj = ppddpm.sample_trajectory(sd, seed=777, num_inference_steps=20, fields=GUIDED, decode="vae",
                                decode_fields=("prev_sample", "pred_original_sample"),
                                pipe_kwargs={"prompt": "a red cat", "guidance_scale": 7.5})
print(traj)
print("latent:", traj.meta["latent"])
print("conditioning:", traj.meta["conditioning"])
ppddpm.pictures.plotting.plot_trajectory(traj, every=2)"""),
("md", """## Guidance, seen 看见无分类器引导
ε̂ = ε̂_uncond + g (ε̂_cond − ε̂_uncond): the two halves as the pipeline combined them, and the x̂_0
each would give on its own, decoded."""),
("code", """halves = ppddpm.decode(traj, sd, fields=("pred_original_sample_uncond", "pred_original_sample_cond"))
push = traj.field("model_output_cond") - traj.field("model_output_uncond")
print("|ε̂_cond − ε̂_uncond| per step (mean):", np.round(np.abs(push).mean(axis=(1, 2, 3, 4)), 3))
ppddpm.pictures.plotting.plot_grid(halves, "pred_original_sample_cond", every=2)"""),
("md", """## A cheap preview: a linear latent → RGB map 线性预览
Fitted by least squares against this VAE (once, then cached), its gap to the full decode printed.
On a real VAE this is the familiar latent preview; on this random one it is far off, and says so."""),
("code", """preview = ppddpm.decode(traj, sd, method="approx")
print(preview.meta["decoded"]["fit_gap"])
ppddpm.pictures.plotting.plot_grid(preview, "pred_original_sample", every=2)"""),
("md", """## DiT: class-conditional, and its own way of guiding DiT 类别条件
DiTPipeline steps the conditional and unconditional halves together; the record keeps the batch
(the first half). The latent channels are shown where nothing was decoded."""),
("code", """dit = ppddpm.model.builders.tiny_latent_pipeline("dit")
dtraj = ppddpm.sample_trajectory(dit, seed=1, num_inference_steps=10, pipe_kwargs={"class_labels": [7, 1]})
print(dtraj.meta["conditioning"])
ppddpm.pictures.plotting.plot_grid(dtraj, "pred_original_sample", every=2)"""),
("md", """## A real checkpoint (a networked machine, e.g. AI Studio; not run in CI) 真实模型

```python
from ppdiffusers import DiTPipeline, StableDiffusionPipeline
sd = StableDiffusionPipeline.from_pretrained("runwayml/stable-diffusion-v1-5")
traj = ppddpm.sample_trajectory(sd, seed=777, num_inference_steps=50, decode="approx", store="disk", path="runs/sd",
                                fields=GUIDED, pipe_kwargs={"prompt": "a photo of an astronaut riding a horse",
                                                            "guidance_scale": 7.5})
ppddpm.pictures.plotting.plot_trajectory(ppddpm.decode(traj, sd, fields=("prev_sample", "pred_original_sample")), every=5)
dit = DiTPipeline.from_pretrained("facebook/DiT-XL-2-256")
dtraj = ppddpm.sample_trajectory(dit, seed=33, num_inference_steps=25, pipe_kwargs={"class_labels": [207, 360]})
```
Decoding every step of a 512² run through the full VAE is a GPU's job (README, "Latent pipelines");
`decode="approx"` is not."""),  # noqa: E501
],

"07_objective.ipynb": [
("md", r"""# 07 · The objective, term by term 优化目标: 变分下界逐项

The article's fourth part derives DDPM's training objective from the variational bound and then drops
its weights; its last part asks two questions that only training answers. This notebook puts numbers
on every step of that derivation, on the bundled model and real held-out digits.

L = L_T + Σ_{t>1} L_{t−1} + L_0  (eqs. 3, 5), each term a KL or a likelihood:

| term | what it is | paper | TF code | ppddpm |
|---|---|---|---|---|
| L_T | KL(q(x_T\|x_0) ‖ N(0, I)), no parameters | (5) | `_prior_bpd` | `BoundReport.prior` |
| L_{t−1} | KL(q(x_{t−1}\|x_t, x_0) ‖ p_θ(x_{t−1}\|x_t)) | (5)–(8) | `normal_kl` in `_vb_terms_bpd` | `ppddpm.likelihood.vb_term(…, t)` |
| L_0 | −log p_θ(x_0\|x_1), a Gaussian over each pixel's bin | (13) | `discretized_gaussian_log_likelihood` | `vb_term(…, 0)` |
| all | the sum, a fresh x_t per t | (3) | `calc_bpd_loop` | `ppddpm.likelihood.bpd` |

Timesteps are 0-based as in ppdiffusers and the TF code (the paper's t is one higher); units are bits per
dimension. The digits take 17 values (0..16), so each pixel's bin has half-width 1/16 in [−1, 1]."""),  # noqa: E501
("code", SETUP),
("md", """## One term, by hand 手算一项
Take 8 held-out digits, noise them to t = 1 with eq. (4), and compute L_1 twice: with `vb_term` (paddle,
float32), and with the float64 formulas of `ppddpm.reference` — the posterior of eqs. (6)(7), the model's
mean from ε̂ by eqs. (15) and (7), and the KL of two Gaussians."""),
("code", """from ppddpm import reference as ref
from ppddpm.model.data import load_digits
x0 = load_digits("test", 8)[:8]                       # the held-out split: never trained on
s64 = ref.Schedule.from_scheduler(pipe.scheduler)
t = 1
eps = np.random.default_rng(0).standard_normal(x0.shape)
x_t = ref.q_sample(s64, x0.astype(np.float64), np.full(8, t), eps).astype("float32")        # eq. (4)
with paddle.no_grad():
    eps_hat = pipe.unet(paddle.to_tensor(x_t), paddle.to_tensor(np.full(8, t))).sample.numpy()
mu_q, logvar_q = ref.q_posterior(s64, x0, x_t, t)                                           # eqs. (6)(7)
mu_p, logvar_p, x0_hat = ref.bound.p_mean_variance(s64, eps_hat, x_t, t)                    # eqs. (15), (7)
by_hand = ref.normal_kl(mu_q, logvar_q, mu_p, logvar_p).reshape(8, -1).mean(1) / np.log(2)
print("by hand (float64):", by_hand.round(4))
print("vb_term (float32):", ppddpm.likelihood.vb_term(pipe, x0, x_t, t, levels=17).round(4))"""),
("md", """## eq. (12): the weight that L_simple drops 被丢掉的权重
With ε-prediction and a fixed variance σ_t², the KL of two Gaussians with one variance is
‖μ̃_t − μ_θ‖²/(2σ_t²), and eq. (11) turns the mean's error into the noise's:

L_{t−1} = β_t² / (2σ_t² α_t (1−ᾱ_t)) · ‖ε − ε_θ‖² + C

L_simple (eq. 14) keeps ‖ε − ε_θ‖² and drops the weight. Measured (no clipping, so that eq. 11 holds):"""),
("code", """plain = ppddpm.with_config(pipe.scheduler, clip_sample=False)
from ppdiffusers import DDPMPipeline
unclipped = DDPMPipeline(unet=pipe.unet, scheduler=plain)
weight = ref.eq12_weight(s64)                              # nats per dimension per unit of ‖ε − ε̂‖²/D
print(f"{'t':>4} {'weight (nats)':>13} {'L_t (bits/dim)':>15} {'weight·MSE_ε/ln 2':>18}")
for t in (1, 10, 100, 500, 999):
    xt, e = (ref.q_sample(s64, x0.astype(np.float64), np.full(8, t), eps).astype("float32"), eps)
    with paddle.no_grad():
        e_hat = pipe.unet(paddle.to_tensor(xt), paddle.to_tensor(np.full(8, t))).sample.numpy()
    e_true = (xt - np.sqrt(s64.alphas_cumprod[t]) * x0) / np.sqrt(1 - s64.alphas_cumprod[t])
    mse = ((e_true - e_hat) ** 2).reshape(8, -1).mean(1)
    L = ppddpm.likelihood.vb_term(unclipped, x0, xt, t, levels=17, clip_denoised=False)
    print(f"{t:>4} {weight[t]:13.4f} {L.mean():15.6f} {(weight[t] * mse / np.log(2)).mean():18.6f}")"""),
("md", """The weight is ~0.6 at t = 1 and ~0.01 for most t: the bound cares about the small-t terms a hundred
times more than L_simple does. The paper's reading (§3.4): L_simple trains the network on the harder,
larger-t denoising tasks, which is what sample quality needs.

## The whole bound 完整的变分下界
Every term for a batch of held-out digits: one UNet call per t for the whole batch. ⏱ All 1000 terms of
32 digits take a few minutes on 2 CPU cores; with `PPDDPM_FAST=1`, 16 digits and 50 timesteps drawn
uniformly (the sum estimated as T/K times theirs, with its standard error)."""),
("code", """N, K = (16, 50) if FAST else (32, None)                 # FAST: K of the T terms drawn uniformly
report = ppddpm.likelihood.bpd(pipe, load_digits("test", 8)[:N], levels=17, timesteps=K)
report.model = "bundled ddpm-digits-8"
print(report.table())"""),
("code", "ppddpm.pictures.objective.plot_vlb(report)"),
("md", """Where the bits go: most of this ε + L_simple model's bound sits in the first hundred of the thousand
terms, about half of it in t < 10 — where the weight of eq. (12) is largest and L_simple trains least —
while L_0 and the prior L_T are ~0 (17 levels make the decoder's bins 8σ wide; ᾱ_T ≈ 4e-5). For scale: a
uniform code of the 17 levels costs log2 17 = 4.09 bits/dim.

## L_0, the decoder (eq. 13) 解码器
−log p_θ(x_0|x_1): the model's Gaussian at t = 0 integrated over each pixel's bin, the end bins open to
±∞. The TF code approximates the normal CDF with tanh; ppddpm uses the exact one (`paddle.erf`, in
float64). The difference on this model:"""),
("code", """x1 = ref.q_sample(s64, x0.astype(np.float64), np.zeros(8, int), eps).astype("float32")
with paddle.no_grad():
    out = pipe.unet(paddle.to_tensor(x1), paddle.to_tensor(np.zeros(8, "int64"))).sample.numpy()
exact, _ = ref.vb_terms_bpd(s64, out, x0, x1, 0, levels=17)
tanh, _ = ref.vb_terms_bpd(s64, out, x0, x1, 0, levels=17, cdf="tanh")
print(f"L_0 exact {exact.mean():.3e}, tanh {tanh.mean():.3e} bits/dim; sigma_1 = {np.exp(0.5 * ref.posterior_log_variance_clipped(s64)[0]):.4f}"
      f" against a bin half-width of {1 / 16:.4f}: the decoder almost never misses the bin")"""),  # noqa: E501
("md", """## The article's first question: noise or pixels? 预测噪声还是像素?
"Is DDPM better because the target moved from pixels to noise?" The paper answered it on CIFAR-10
(Table 2). `docs/objective_findings.py` asks it again at digits scale: five models at one budget and seed,
each scored by its held-out bound and its samples (README, "The objective, term by term, measured")."""),
("code", """import json
from pathlib import Path
study = Path(ppddpm.__file__).resolve().parent.parent / "docs" / "figures" / "objective.json"
if study.exists():
    data = json.loads(study.read_text())
    print(f"{'model':28s} {'bound (bits/dim)':>18s} {'confidence':>11s} {'entropy':>8s} {'Fréchet':>8s}")
    for r in data["runs"]:
        s = r["quality"]["samples"]
        print(f"{r['label']:28s} {r['bound']['mean_bpd']:9.3f} ± {r['bound']['standard_error']:.3f} {s['confidence']:11.3f}"
              f" {s['class_entropy']:8.3f} {s['frechet_distance']:8.2f}")
else:
    print("the study's results are not here (docs/figures/objective.json): python docs/objective_findings.py")"""),  # noqa: E501
("md", """## The article's second question: MSE in low precision 低精度
"The MSE may be so small that in low-precision training the model converges, then diverges." `ppddpm train
--precision bfloat16|float16` runs paddle.amp; on this CPU paddle's auto_cast stays float32 and the run says
so. On every device the run records, every `log_every` steps, the share of gradient entries and of loss
values a float16 / bfloat16 cast would flush to zero or make subnormal, with and without loss scaling."""),
("code", """from ppddpm.model.training import TrainConfig, train
steps = 20 if FAST else 200                          # FAST: a short run, the same record
result = train(TrainConfig(output_dir="runs/notebook-precision", resolution=8, steps=steps, batch_size=64,
                           precision="bfloat16", log_every=5, checkpoint_every=steps), progress=False)
ppddpm.pictures.objective.plot_training("runs/notebook-precision")"""),
],
}


def _notebook(cells):
    nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in cells])
    for k, cell in enumerate(nb.cells):
        cell.id = f"cell-{k:02d}"                      # stable ids (nbformat draws random ones)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb, fast: bool):
    """Run `nb` in place on a fresh kernel (PPDDPM_FAST as given; no progress bars, no timing metadata)."""
    from nbclient import NotebookClient

    os.environ["PPDDPM_PROGRESS"] = "0"
    os.environ["PPDDPM_FAST"] = "1" if fast else "0"
    NotebookClient(nb, timeout=1800, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NB)}}).execute()
    return nb


def build(execute_cells=True, only=None):
    import copy

    from drift import FAST_KEY, THREADS, cell_text

    os.environ["OMP_NUM_THREADS"] = THREADS        # the kernels inherit it: paddle's rounding follows it
    NB.mkdir(exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        if only and name not in only:
            continue
        nb = _notebook(cells)
        if execute_cells:
            fast = execute(copy.deepcopy(nb), fast=True)
            execute(nb, fast=False)
            for cell, short in zip(nb.cells, fast.cells):
                if cell.cell_type == "code":
                    cell.metadata[FAST_KEY] = cell_text(short.outputs)
        nbformat.write(nb, NB / name)
        print("wrote", NB / name, flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--no-execute", action="store_true")
    p.add_argument("only", nargs="*")
    a = p.parse_args()
    build(execute_cells=not a.no_execute, only=a.only)
