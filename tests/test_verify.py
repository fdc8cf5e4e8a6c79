"""`ppddpm.verify` / `ppddpm verify`: a recorded run held against the float64 reference of its sampler.

The specification: every sampler family's recorded run (all fields, every=1) verifies — each step's
x̂_0 and x_{t−1} within the float32 bound of `ppddpm.verify` — at several step counts, clipping on
and off, epsilon and v-prediction; and a run whose step is deliberately wrong (x̂_0 not clipped
where the config says so, the article's α_t on a strided schedule, σ doubled, x_T unscaled, a
multistep history off by one) is caught, naming its first departing step. The oracle is
`ppddpm.reference` (numpy, from the papers, imports nothing of ppdiffusers); the runs are real
pipelines over real ppdiffusers schedulers.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from ppdiffusers import DDPMPipeline, EulerDiscreteScheduler, LMSDiscreteScheduler

import ppddpm
from ppddpm.errors import BadValue
from ppddpm.model.builders import ddpm_scheduler
from test_samplers import FAMILIES, make


# the families whose steps add noise (σ_t > 0 somewhere): their recorded z is tested against N(0, I)
NOISY = ("ddpm", "ddim-eta1", "euler-ancestral", "sde-dpmsolver++", "kdpm2-ancestral", "dpmsolver-sde", "lcm")


def run(unet, family, steps, seed=4, every=1, batch_size=2, **overrides):
    cls, base, pipeline_cls, call_kwargs = FAMILIES[family]
    if "disable_corrector" in base:                 # UniPC's corrector off at every step (see test_samplers)
        base = dict(base, disable_corrector=list(range(steps)))
    pipe = pipeline_cls(unet=unet, scheduler=make(cls, **{**base, **overrides}))
    pipe.set_progress_bar_config(disable=True)
    return ppddpm.sample_trajectory(pipe, seed=seed, num_inference_steps=steps, every=every, fields="all",
                                    batch_size=batch_size, pipe_kwargs=call_kwargs)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("steps", [7, 20])
def test_every_recorded_sampler_holds_against_its_float64_reference(unet, family, steps):
    """…with nothing left unchecked: the family is its scheduler class's, the chain of x_t holds bitwise, the
    noise of the families that add some passes the N(0, I) test, and the run is complete."""
    report = ppddpm.verify(run(unet, family, steps))
    assert report.ok and report.ok_strict and not report.findings, report.table()
    assert report.first_departure is None
    assert report.x_T is not None and report.x_T["holds"]
    assert all(s.chain == 0.0 for s in report.steps[1:])
    assert (report.noise is not None) == (family in NOISY) and (report.noise is None or report.noise["holds"])


@pytest.mark.parametrize("family", ["ddpm", "ddim-eta1", "heun"])              # the steps that honour clip_sample
@pytest.mark.parametrize("clip_sample", [True, False])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_clipping_and_prediction_types_are_replayed(unet, family, clip_sample, prediction_type):
    report = ppddpm.verify(run(unet, family, 10, clip_sample=clip_sample, prediction_type=prediction_type))
    assert report.ok, report.table()


@pytest.mark.parametrize("family", ["ddpm", "dpmsolver++"])
def test_dynamic_thresholding_is_replayed_within_its_per_sample_bound(unet, family):
    """Imagen's thresholding makes x̂_0's threshold a quantile of each sample (sample_max_value 3 lets it move):
    the bound adds the sample's largest term (module docstring of ppddpm.analysis.verify). Batch 1: paddle 3.3.1's
    clip takes no per-sample bounds, so ppdiffusers' thresholding stops at a batch of 2."""
    traj = run(unet, family, 10, batch_size=1, thresholding=True, sample_max_value=3.0)
    assert traj.clip_fraction.max() > 0                                   # the threshold cut some values
    report = ppddpm.verify(traj)
    assert report.ok, report.table()


@pytest.mark.parametrize("family", ["euler", "euler-ancestral", "dpmsolver++"])
def test_v_prediction_is_replayed_in_sigma_space_and_by_dpm_solver(unet, family):
    assert ppddpm.verify(run(unet, family, 10, prediction_type="v_prediction")).ok


def test_the_ddpm_step_formulas_are_told_apart(unet, pipe):
    """`posterior` is the stock step (holds); `direct` (eq. 11) ignores clipping, so with clip_sample
    on it departs where clipping fires; the article's edit uses scheduler.alphas[t] (one training
    step's α), right only when no step is skipped: with clipping off it holds at 1000 steps' spacing
    but departs on a strided schedule."""
    def verified(variant, steps, clip_sample):
        pipe.scheduler = ddpm_scheduler(clip_sample=clip_sample)
        with ppddpm.patch_step(pipe.scheduler, variant):
            traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=steps, fields="all")
        return ppddpm.verify(traj)

    assert verified("posterior", 20, True).ok
    clipped = verified("direct", 20, True)
    assert not clipped.ok and clipped.first_departure.call == 0      # the random UNet's x̂_0 leaves [−1, 1] at once
    assert verified("direct", 20, False).ok                          # eq. 11 = eq. 15 → eq. 7 without clipping
    strided = verified("direct-article", 20, False)
    assert not strided.ok and "depart" in strided.summary()
    assert verified("direct-clip-consistent", 20, True).ok


def test_a_doubled_sigma_is_caught_at_the_first_noisy_step(unet, pipe):
    @ppddpm.register_variant("sigma-doubled")
    def sigma_doubled(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
        out = ppddpm.get_variant("posterior").step(scheduler, model_output, timestep, sample, generator)
        stock = ppddpm.get_variant("posterior").step(scheduler, model_output, timestep, sample, None)
        return type(out)(prev_sample=out.prev_sample + (out.prev_sample - stock.prev_sample),
                         pred_original_sample=out.pred_original_sample)

    try:
        with ppddpm.patch_step(pipe.scheduler, "sigma-doubled"):
            traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=10, fields="all")
    finally:
        ppddpm.unregister_variant("sigma-doubled")
    report = ppddpm.verify(traj)
    assert not report.ok and report.first_departure.call == 0 and report.first_departure.gaps["prev_sample"] > 0.01


def test_an_unscaled_x_T_is_caught(unet):
    """Euler run through DDPMPipeline's loop, which skips init_noise_sigma: every step is Euler's
    own (each replays), but the run starts from z instead of √(σ²+1)·z (60.8 at 10 leading steps)."""
    pipe = DDPMPipeline(unet=unet, scheduler=make(EulerDiscreteScheduler))
    pipe.set_progress_bar_config(disable=True)
    with pytest.warns(ppddpm.core.recorder.UnscaledLoopWarning):
        traj = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=10, fields="all", batch_size=4)
    report = ppddpm.verify(traj)
    assert not report.ok and not report.x_T["holds"]
    assert report.x_T["init_noise_sigma"] == pytest.approx(60.8, abs=0.05)
    assert "x_T departs" in report.summary()


class StaleHistoryLMS(LMSDiscreteScheduler):
    """A multistep bug: from the third call on, the newest derivative in the history is replaced
    by the one before it (history off by one)."""

    def step(self, model_output, timestep, sample, order=4, return_dict=True):
        if len(self.derivatives) >= 2:
            self.derivatives[-1] = self.derivatives[-2]
        return super().step(model_output, timestep, sample, order=order, return_dict=return_dict)


def test_a_multistep_history_off_by_one_is_caught(unet):
    pipe = ppddpm.SamplerPipeline(unet=unet, scheduler=make(StaleHistoryLMS))
    pipe.set_progress_bar_config(disable=True)
    report = ppddpm.verify(ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=10, fields="all"))
    assert report.family == "lms" and not report.ok and report.first_departure.call == 2


def test_what_verify_cannot_replay_is_one_clear_error(unet):
    with pytest.raises(BadValue, match="fields='all'"):
        ppddpm.verify(ppddpm.sample_trajectory(
            DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()), seed=0, num_inference_steps=5))
    with pytest.raises(BadValue, match="every=1"):
        ppddpm.verify(run(unet, "lms", 10, every=5))
    assert ppddpm.verify(run(unet, "euler-ancestral", 10, every=5)).ok       # one step at a time: any subset


def test_a_noisy_run_recorded_without_its_noise_is_one_clear_error(unet, pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=0, num_inference_steps=5,
                                    fields=("sample", "model_output", "prev_sample"))
    with pytest.raises(BadValue, match="'noise' field"):
        ppddpm.verify(traj)


def test_a_float16_recording_verifies_within_its_own_rounding(unet):
    """Frames stored as float16 (u = 2⁻¹¹) replay within the bound of that unit roundoff."""
    cls, base, pipeline_cls, call_kwargs = FAMILIES["ddim-eta1"]
    pipe = pipeline_cls(unet=unet, scheduler=make(cls))
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=10, fields="all", dtype="float16",
                                    pipe_kwargs=call_kwargs)
    assert ppddpm.verify(traj).ok


def test_a_file_written_by_ppddpm_0_1_verifies():
    """tests/data/trajectory-0.1.0.npz: 5 DDPM steps, every=2, all fields, written by ppddpm 0.1.0."""
    report = ppddpm.verify(Path(__file__).parent / "data" / "trajectory-0.1.0.npz")
    assert report.ok and [s.call for s in report.steps] == [1, 3, 4] and report.x_T is None


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_the_cli_exits_0_when_every_step_holds_and_1_naming_the_first_that_departs(tmp_path, saved_pipe_dir, pipe):
    res = cli("sample", "--model", saved_pipe_dir, "--scheduler", "euler-ancestral", "--steps", 12, "--all-fields",
              "--seed", 5, "--out", tmp_path, "--quiet")
    assert res.returncode == 0, res.stderr
    res = cli("verify", tmp_path / "trajectory_seed5.npz", "--json", tmp_path / "verify.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "12 recorded steps hold against the float64 reference" in res.stdout
    written = json.loads((tmp_path / "verify.json").read_text())
    assert written["ok"] and len(written["steps"]) == 12 and written["family"] == "euler-ancestral"

    pipe.scheduler = ddpm_scheduler()
    with ppddpm.patch_step(pipe.scheduler, "direct"):
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=10, fields="all").save(tmp_path / "direct.npz")
    res = cli("verify", tmp_path / "direct.npz")
    assert res.returncode == 1 and "first at step 0 (t=900)" in res.stdout, res.stdout + res.stderr

    res = cli("verify", tmp_path / "nothing.npz")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("algorithm_type", ["sde-dpmsolver++", "sde-dpmsolver"])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_the_sde_dpm_solvers_are_replayed_with_their_recorded_noise(unet, algorithm_type, solver_type):
    report = ppddpm.verify(run(unet, "sde-dpmsolver++", 10, algorithm_type=algorithm_type, solver_type=solver_type))
    assert report.ok, report.table()
