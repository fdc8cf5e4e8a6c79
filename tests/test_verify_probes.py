"""`ppddpm verify` against edited runs (issue 32): each honest recording below is edited the way an outside
probe of 0.4.1 edited real runs, and every edit must fail verify — exit 1 with the reason named, or one
line and exit 2 — where 0.4.1 said "all within their bound". The runs are real (the tiny random UNet,
DDPM, 50 steps, all fields); the edits are numpy on the saved arrays; the oracle is the float64
reference behind verify plus the facts each edit breaks (a NaN, a chain of two seeds, zero noise).
"""
import subprocess
import sys

import numpy as np
import pytest
from ppdiffusers import DDPMPipeline

import ppddpm
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.storage.trajectory import Trajectory

STEPS = 50


@pytest.fixture(scope="module")
def runs(unet):
    """Two honest DDPM runs of 50 steps (seeds 0 and 1), all fields, batch 2."""
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    return [ppddpm.sample_trajectory(pipe, seed=seed, num_inference_steps=STEPS, fields="all", batch_size=2)
            for seed in (0, 1)]


def edited(traj, path, fields=None, sigma=None, meta=None, rows=None):
    """`traj` with some fields, the noise std column, metadata keys or rows replaced, written to `path` as a .npz."""
    keep = slice(None) if rows is None else rows
    arrays = {name: np.array(traj.field(name)[keep]) for name in traj.fields}
    arrays.update(fields or {})
    columns = {name: traj.column(name)[keep] for name in traj.columns}
    out = Trajectory(traj.timesteps[keep], arrays, traj.noise_std[keep] if sigma is None else sigma,
                     meta=dict(traj.meta, **(meta or {})), columns=columns)
    return out.save(path)


def test_the_honest_run_holds_with_nothing_left_unchecked(runs, tmp_path):
    report = ppddpm.verify(edited(runs[0], tmp_path / "honest.npz"))
    assert report.ok_strict and not report.findings and not report.unchecked, report.table()
    assert report.noise["steps"] == STEPS - 1 and report.noise["holds"]       # no noise at the last step


def test_nan_everywhere_fails_naming_the_step_and_the_field(runs, tmp_path):
    nan = {name: np.full_like(runs[0].field(name), np.nan)
           for name in ("prev_sample", "pred_original_sample", "pred_original_sample_unclipped")}
    report = ppddpm.verify(edited(runs[0], tmp_path / "nan.npz", nan))
    first = report.first_departure
    assert not report.ok and first.call == 0 and "prev_sample" in first.nonfinite
    assert "non-finite values (NaN/Inf) in prev_sample" in report.summary() and "first at step 0" in report.summary()
    assert all(not s.holds for s in report.steps)


def test_one_huge_model_output_pixel_buys_no_room_for_zeroed_steps(runs, tmp_path):
    """x_{t−1} and x̂_0 zeroed, one ε̂ pixel of each step at 1e30 (and x̂_0 before clipping made to match it,
    by eq. 15): a bound on max|ε̂| grew to ~1e24 and passed it all; the bound is per element, so the pixel
    widens its own element's bound only, and every other element of the zeros departs."""
    traj = runs[0]
    eps = np.array(traj.model_output, np.float64)
    eps[:, 0, 0, 3, 3] = 1e30
    ab = ddpm_scheduler().alphas_cumprod.numpy().astype(np.float64)[traj.timesteps][:, None, None, None, None]
    fields = {name: np.zeros_like(traj.field(name)) for name in ("prev_sample", "pred_original_sample")}
    raw = (traj.sample - np.sqrt(1 - ab) * eps) / np.sqrt(ab)
    fields.update(model_output=eps.astype(np.float32), pred_original_sample_unclipped=raw.astype(np.float32))
    report = ppddpm.verify(edited(traj, tmp_path / "huge.npz", fields))
    assert not report.ok
    # each step's own replay departs by its gaps, not only by the broken chain
    assert all(s.ratio > 10 for s in report.steps), [s.ratio for s in report.steps]


def test_a_nan_sigma_column_fails(runs, tmp_path):
    report = ppddpm.verify(edited(runs[0], tmp_path / "sigma.npz", sigma=np.full(STEPS, np.nan)))
    assert not report.ok and "noise_std" in report.first_departure.nonfinite and report.first_departure.call == 0


@pytest.mark.parametrize("splice", ["halves", "odd-even"])
def test_steps_of_two_seeds_spliced_break_the_chain(runs, tmp_path, splice):
    """Each step of either seed replays exactly, but the x_t of a step is the other seed's x_{t−1}."""
    take = np.arange(STEPS) >= 25 if splice == "halves" else np.arange(STEPS) % 2 == 1
    mixed = {name: np.where(take[:, None, None, None, None], runs[1].field(name), runs[0].field(name))
             for name in runs[0].fields}
    report = ppddpm.verify(edited(runs[0], tmp_path / f"{splice}.npz", mixed))
    first = report.first_departure
    assert not report.ok and first.call == (25 if splice == "halves" else 1)
    assert first.chain > 0.01 and first.ratio <= 1.0 and "not one run's" in report.summary()
    assert sum(s.chain is not None and s.chain > 0 for s in report.steps) == (1 if splice == "halves" else STEPS - 1)


@pytest.mark.parametrize("scale", [0.0, 5.0])
def test_noise_zeroed_or_scaled_with_the_step_moved_to_match_fails_the_noise_test(runs, tmp_path, scale):
    """z → scale·z and x_{t−1} → x_{t−1} + σ(scale − 1)z: every step replays (the reference adds σ·z of the
    file), but z is no longer N(0, I): a mean square of 0 or 25 is far outside the χ² test's range."""
    traj = runs[0]
    z, sigma = np.array(traj.noise, np.float64), traj.noise_std[:, None, None, None, None]
    fields = {"noise": (scale * z).astype(np.float32),
              "prev_sample": (traj.prev_sample + sigma * (scale - 1.0) * z).astype(np.float32)}
    report = ppddpm.verify(edited(traj, tmp_path / f"noise{scale}.npz", fields))
    first = report.first_departure
    assert not report.ok and first.call == 0 and first.ratio <= 1.0 and not first.noise["holds"]
    assert first.noise["mean_square"] == pytest.approx(scale ** 2, rel=0.5)
    assert "its noise z is not N(0, I)" in report.summary() and not report.noise["holds"]


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "DDIMScheduler"])
def test_a_scheduler_changed_under_a_sampler_that_still_says_ddpm_is_a_finding(runs, tmp_path, scheduler):
    report = ppddpm.verify(edited(runs[0], tmp_path / "other.npz", meta={"scheduler": scheduler}))
    family = {"EulerDiscreteScheduler": "euler", "DDIMScheduler": "ddim"}[scheduler]
    assert not report.ok and report.family == family
    assert any(f"sampler 'ddpm' is not the family of its scheduler {scheduler}" in f for f in report.findings)
    assert "not what its file says" in report.summary()


def test_a_step_formula_of_another_family_is_a_finding(runs, tmp_path):
    report = ppddpm.verify(edited(runs[0], tmp_path / "variant.npz", meta={"variant": "ddim(eta=1.0)"}))
    assert not report.ok and any("step formula of ddim, not of ddpm" in f for f in report.findings)
    assert ppddpm.verify(edited(runs[0], tmp_path / "posterior.npz", meta={"variant": "posterior"})).ok


def test_rows_cut_off_under_a_complete_50_steps_is_a_finding(runs, tmp_path):
    report = ppddpm.verify(edited(runs[0], tmp_path / "cut.npz", rows=slice(0, 30)))
    assert report.steps and all(s.holds for s in report.steps)                # what is there replays
    assert not report.ok and report.findings == [
        "the metadata says the run is complete, but the file holds 30 of the 50 recorded steps its schedule makes"]
    honest_partial = ppddpm.verify(edited(runs[0], tmp_path / "partial.npz", rows=slice(0, 30),
                                          meta={"complete": False}))
    assert honest_partial.ok and not honest_partial.ok_strict and "not complete" in honest_partial.unchecked[0]


def test_the_storage_dtype_is_read_from_the_arrays_not_the_metadata(runs, tmp_path):
    """x_{t−1} off by 0.01 everywhere passes a float16 bound (u = 2⁻¹¹) but not float32's, which the
    frames are in: the metadata's float16 is a finding and the steps depart."""
    traj = runs[0]
    report = ppddpm.verify(edited(traj, tmp_path / "f16.npz", {"prev_sample": traj.prev_sample + np.float32(0.01)},
                                  meta={"dtype": "float16"}))
    assert not report.ok and report.meta["unit_roundoff"] == 2.0 ** -24
    assert report.findings == ["the metadata says the frames are stored as float16, but they are float32"]
    # where 1 − ᾱ_t > 0.1 (t ≥ 100) the float32 bound is below 1e-4, a hundredth of the offset
    assert all(s.ratio > 1 for s in report.steps if s.t >= 100) and all(not s.holds for s in report.steps)


def test_what_is_not_checked_is_said_and_strict_fails_on_it(unet, tmp_path):
    """Euler ancestral kept every 5th call: each recorded step replays, but x_T and the chain between
    recorded steps are not checked — said in the report, exit 0, and exit 1 with --strict."""
    from ppdiffusers import EulerAncestralDiscreteScheduler

    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=ppddpm.with_config(ddpm_scheduler(),
                                                                          cls=EulerAncestralDiscreteScheduler))
    pipe.set_progress_bar_config(disable=True)
    path = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=10, every=5, fields="all").save(
        tmp_path / "every5.npz")
    report = ppddpm.verify(path)
    assert report.ok and not report.ok_strict and report.x_T is None
    assert any("x_T" in u for u in report.unchecked) and any("one step call in 5" in u for u in report.unchecked)
    run = [sys.executable, "-m", "ppddpm", "verify", str(path)]
    plain, strict = (subprocess.run(run + extra, capture_output=True, text=True, timeout=300)
                     for extra in ([], ["--strict"]))
    assert plain.returncode == 0 and "not checked: x_T" in plain.stdout, plain.stdout + plain.stderr
    assert strict.returncode == 1, strict.stdout + strict.stderr
