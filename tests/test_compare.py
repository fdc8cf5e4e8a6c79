"""ppddpm.compare: the equivalence A/B, shadow and free (issue: step variants).

The claims, on a real ppdiffusers UNet2DModel + DDPMScheduler (random weights: with
clipping off |x_t| grows to ~1e3, the hardest case for a relative tolerance):
- clip_sample=False: all four routes agree within the float32 rounding bound;
- clip_sample=True: "direct" departs, "posterior" and "direct-clip-consistent" still agree.
"""
import json
import uuid

import numpy as np
import paddle
import pytest
from ppdiffusers import DDPMPipeline

import ppddpm
from ppddpm.analysis.ab import K_ROUNDINGS, UNIT_ROUNDOFF
from ppddpm.model.builders import ddpm_scheduler

ALL = ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"]


def make(unet, variance_type):
    return DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(variance_type=variance_type))


CASES = [(50, vt, mode) for vt in ("fixed_small", "fixed_large") for mode in ("shadow", "free")] + \
        [(1000, "fixed_small", "shadow"), (1000, "fixed_large", "free")]


@pytest.mark.parametrize("steps,variance_type,mode", CASES)
def test_all_routes_agree_without_clipping(unet, steps, variance_type, mode):
    report = ppddpm.compare(make(unet, variance_type), ALL, seed=777, num_inference_steps=steps, mode=mode,
                            clip_sample=False)
    assert report.equivalent(), report.table()
    assert report.summary()["posterior"]["max_abs_prev"] == 0.0            # bitwise: same float32 operations
    assert report.summary()["clipping"]["steps_with_clipping"] == 0


@pytest.mark.parametrize("steps,variance_type,mode", CASES)
def test_clipping_breaks_only_the_direct_route(unet, steps, variance_type, mode):
    report = ppddpm.compare(make(unet, variance_type), ALL, seed=777, num_inference_steps=steps, mode=mode,
                            clip_sample=True)
    assert report.equivalent("posterior") and report.equivalent("direct-clip-consistent"), report.table()
    assert not report.equivalent("direct")
    s = report.summary()
    # it departs exactly where clipping fired: at the first step, and at every step where x̂_0 was clipped
    fired = (report.clip_fraction["ppdiffusers"] > 0).any(axis=1)
    assert fired[0] and s["direct"]["first_departing_t"] == report.timesteps[0]
    if mode == "shadow":
        # only where clipping fired; nearly everywhere it did (a tiny clip at t≈0, where the
        # bound is loosest, can stay within rounding)
        departed, clipped = set(report.departures("direct").tolist()), set(np.nonzero(fired)[0].tolist())
        assert departed <= clipped and len(departed) >= 0.9 * len(clipped)
    assert s["clipping"]["steps_with_clipping"] == fired.sum() > 0


def test_the_bound_is_relative_and_tight_enough_to_matter(unet):
    """Unclipped, the direct route's worst step uses a sizeable share of the bound (so the
    bound is not vacuous) while |x_t| reaches hundreds."""
    report = ppddpm.compare(make(unet, "fixed_small"), ["ppdiffusers", "direct"], seed=777,
                            num_inference_steps=1000, mode="shadow", clip_sample=False)
    s = report.summary()["direct"]
    assert report.scale["ppdiffusers"].max() > 100
    assert 1e-3 < s["worst_ratio_to_bound"] <= 1.0
    assert report.step_bound()[0, 0] == pytest.approx(
        K_ROUNDINGS * UNIT_ROUNDOFF / report.one_minus_alpha_bar[0] * report.scale["ppdiffusers"][0, 0])


def test_shadow_reference_is_the_real_pipeline_trajectory(pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=50)
    report = ppddpm.compare(pipe, ["ppdiffusers", "direct"], seed=777, num_inference_steps=50)
    assert np.array_equal(report.final["ppdiffusers"][0], traj.prev_sample[-1])


def test_a_list_of_seeds_is_many_solo_runs_at_once(pipe):
    report = ppddpm.compare(pipe, ["ppdiffusers", "direct"], seed=[3, 777, 5], num_inference_steps=30, mode="free")
    assert report.max_abs_prev["direct"].shape == (30, 3)
    for k, seed in enumerate([3, 777, 5]):
        solo = ppddpm.sample_trajectory(pipe, seed=seed, num_inference_steps=30).prev_sample[-1]
        # same x_T and z as the solo run; the batched UNet call may round differently (float32)
        np.testing.assert_allclose(report.final["ppdiffusers"][k], solo, rtol=0, atol=1e-4)
    text = report.table()
    assert "median" in text and "3 seed(s)" in text


def test_report_table_and_json(pipe, tmp_path):
    report = ppddpm.compare(pipe, ["posterior", "direct"], seed=1, num_inference_steps=20, clip_sample=True,
                            mode="free")
    text = report.table(rows=5)
    assert "direct vs posterior" in text and "equivalent within float32 rounding: no" in text
    assert "clipping of x̂_0 fired at 20 of 20 steps" in text
    header = next(line for line in text.splitlines() if line.lstrip().startswith("t "))
    assert header.split() == ["t", "max|Δx_t-1|", "mean|Δx_t-1|", "max|Δx̂_0|", "bound", "clipped", "vs", "bound"]
    final = next(line for line in text.splitlines() if line.startswith("final samples"))
    assert f"max|Δ| {report.final_max_abs('direct')[0]:.3e} in [-1, 1] units" in final and "as displayed" in final
    data = json.loads(report.to_json(tmp_path / "ab.json"))
    assert data == json.loads((tmp_path / "ab.json").read_text())
    assert data["summary"]["direct"]["equivalent"] is False and len(data["timesteps"]) == 20
    assert data["summary"]["direct"]["final_psnr_db"][0] < 60


@pytest.mark.parametrize("kwargs,match", [
    ({"variants": ["direct"]}, "at least two variants"),
    ({"variants": "direct"}, "at least two variants"),
    ({"variants": ["direct", "nope"]}, "unknown step variant 'nope'"),
    ({"mode": "both"}, "mode must be 'shadow' or 'free'"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"seed": []}, "seed must be a non-negative integer"),
    ({"num_inference_steps": 0}, "num_inference_steps must be a positive integer"),
    ({"num_inference_steps": 1001}, "at most 1000"),
    ({"clip_sample": "yes"}, "clip_sample must be None"),
])
def test_bad_arguments(pipe, kwargs, match):
    args = {"variants": ["posterior", "direct"], "num_inference_steps": 5, **kwargs}
    with pytest.raises((ValueError, KeyError), match=match):
        ppddpm.compare(pipe, args.pop("variants"), **args)


def test_compare_never_modifies_the_pipelines_scheduler(pipe):
    before = dict(pipe.scheduler.config)
    ppddpm.compare(pipe, ["posterior", "direct"], num_inference_steps=5, clip_sample=False, thresholding=True)
    assert dict(pipe.scheduler.config) == before and "step" not in pipe.scheduler.__dict__


def test_unbatched_lanes_are_their_solo_runs_whatever_else_shares_the_run(pipe):
    """batched=False: a route's numbers do not depend on which other variants or seeds are in the
    run, and each lane is bitwise the solo run of its variant with its seed."""
    kw = dict(seed=[3, 4], num_inference_steps=15, mode="free", clip_sample=True, batched=False)
    small = ppddpm.compare(pipe, ["posterior", "direct"], **kw)
    large = ppddpm.compare(pipe, ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"], **kw)
    assert np.array_equal(small.max_abs_prev["direct"], large.max_abs_prev["direct"])
    assert np.array_equal(small.final["direct"], large.final["direct"])
    for seed_index, seed in enumerate((3, 4)):
        with ppddpm.patch_step(pipe.scheduler, "direct"):
            solo = ppddpm.sample_trajectory(pipe, seed=seed, num_inference_steps=15)
        assert np.array_equal(large.final["direct"][seed_index], solo.prev_sample[-1])


def test_batched_lanes_differ_only_by_the_unets_batch_rounding(pipe):
    """batched=True (the default, one UNet call a step): paddle's float32 convolution rounds
    differently at another batch size, so the same route in a larger run differs — by rounding
    (here < 1e-4 of |x| after 15 steps with clipping), not by formula."""
    kw = dict(seed=[3, 4], num_inference_steps=15, mode="free", clip_sample=True)
    small = ppddpm.compare(pipe, ["posterior", "direct"], **kw)
    large = ppddpm.compare(pipe, ["ppdiffusers", "posterior", "direct", "direct-clip-consistent"], **kw)
    gap = np.abs(small.final["direct"] - large.final["direct"]).max()
    assert gap <= 1e-4 * np.abs(large.final["direct"]).max()
    assert small.meta["batched"] is True


def test_finals_streamed_to_disk_are_the_finals_held_in_memory(pipe, tmp_path):
    """finals_to: each seed group's final samples go to its own .npy as the group ends, and the report
    reads them from there (a memory map, a group at a time) — the same bits as a run that holds them."""
    kw = dict(seed=[3, 4, 5, 6, 7], num_inference_steps=8, mode="free", clip_sample=True, seed_batch=2)
    held = ppddpm.compare(pipe, ["posterior", "direct"], **kw)
    streamed = ppddpm.compare(pipe, ["posterior", "direct"], finals_to=tmp_path / "finals", **kw)
    files = sorted(p.name for p in (tmp_path / "finals").iterdir())
    assert files == ["finals-00000.npy", "finals-00001.npy", "finals-00002.npy"]      # 5 seeds in groups of 2
    assert np.load(tmp_path / "finals" / "finals-00002.npy").shape == (2, 1) + held.final["direct"].shape[1:]
    for v in ("posterior", "direct"):
        assert np.array_equal(np.asarray(streamed.final[v]), held.final[v])
        assert np.array_equal(streamed.final[v][4], held.final[v][4])
        assert np.array_equal(streamed.final[v][3, 0], held.final[v][3, 0])
    assert streamed.summary() == held.summary()
    assert streamed.table() == held.table()


def test_the_statistics_are_numpys_over_the_lanes_solo_runs(pipe, unet):
    """Every per-step statistic, against numpy over hand-written solo runs of each lane (batched=False
    makes each lane bitwise its solo run): max|x_t|, max|ε̂| (the UNet called again on the hand loop's
    x_t), |x̂_0| > 1 shares of eq. (15)'s x̂_0 in float64, and |Δ| of prev_sample and x̂_0 between the
    routes. Maxima are exact; the mean to float32 summation order; a share to one value of the 64 that
    sits on the clip boundary in float32 but not in float64."""
    from hand_loop import hand_loop, predict
    from ppdiffusers.utils.paddle_utils import randn_tensor

    seeds, steps = [3, 4], 12
    report = ppddpm.compare(pipe, ["ppdiffusers", "direct"], seed=seeds, num_inference_steps=steps, mode="free",
                            clip_sample=True, batched=False)
    ab = pipe.scheduler.alphas_cumprod.numpy().astype(np.float64)
    for k, seed in enumerate(seeds):
        stock = hand_loop(unet, ddpm_scheduler(clip_sample=True), seed, steps, scaled=False)
        direct_scheduler = ddpm_scheduler(clip_sample=True)
        with ppddpm.patch_step(direct_scheduler, "direct"):
            direct = hand_loop(unet, direct_scheduler, seed, steps, scaled=False)
        x_T = randn_tensor((1, 1, 8, 8), generator=paddle.Generator().manual_seed(seed), dtype=unet.dtype).numpy()
        x_t = np.concatenate([x_T[None], stock.prev_sample[:-1]])
        with paddle.no_grad():
            eps = np.stack([predict(unet, paddle.to_tensor(x), int(t)).numpy() for x, t in zip(x_t, stock.timesteps)])
        flat = lambda a: a.reshape(steps, -1)                                   # noqa: E731
        np.testing.assert_array_equal(report.scale["ppdiffusers"][:, k],
                                      (np.abs(flat(x_t)).max(1) + np.abs(flat(eps)).max(1) + np.float32(1)))
        x0 = (flat(x_t) - np.sqrt(1 - ab[stock.timesteps])[:, None] * flat(eps)) / np.sqrt(ab[stock.timesteps])[:, None]
        np.testing.assert_allclose(report.clip_fraction["ppdiffusers"][:, k], (np.abs(x0) > 1).mean(1), atol=1 / 64)
        d_prev = np.abs(flat(direct.prev_sample) - flat(stock.prev_sample))
        np.testing.assert_array_equal(report.max_abs_prev["direct"][:, k], d_prev.max(1))
        np.testing.assert_allclose(report.mean_abs_prev["direct"][:, k], d_prev.mean(1, dtype=np.float64), rtol=1e-6)
        d_x0 = np.abs(flat(direct.pred_original_sample) - flat(stock.pred_original_sample))
        np.testing.assert_array_equal(report.max_abs_x0["direct"][:, k], d_x0.max(1))
        assert report.clip_fraction["ppdiffusers"][:, k].max() > 0 and d_prev.max() > 0      # not vacuous


@pytest.mark.parametrize("content, match", [
    (np.array([{"code": "runs"}], dtype=object), "is not a ppddpm stream array"),
    (np.zeros((2, 1, 1, 8, 8), np.float32), "is not a ppddpm stream array"),
    (np.zeros((1, 3, 1, 1, 8, 8), np.float32), r"holds finals of shape \(1, 3, 1, 1, 8, 8\); expected variant 1 of 2"),
])
def test_streamed_finals_read_only_a_float_array_of_their_shape(tmp_path, content, match):
    """A finals file replaced on disk (a pickled object array, floats of another rank or of other sizes) is
    refused by its header, before anything is unpickled or mapped, in one line."""
    from ppddpm.analysis.series import StreamedFinals
    from ppddpm.storage.format import TrajectoryError

    np.save(tmp_path / "finals-00000.npy", content, allow_pickle=True)
    with pytest.raises(TrajectoryError, match=match):
        StreamedFinals([(str(tmp_path / "finals-00000.npy"), 1, 2)])[0]


def test_shadow_statistics_with_thresholding_batches_and_seeds_across_chunks(unet):
    """Shadow mode, dynamic thresholding, batch 2, two seeds, 70 steps (more than one chunk of 64), against
    numpy over a hand-written run of the reference: the x_t and ε̂ it saw, the Imagen share of x̂_0 it
    thresholds (per sample: s = clip(quantile(|x̂_0|, 0.9), 1, 1.5), share of |x̂_0| > s; a value on the
    boundary may flip between float32 and float64, one of 128), and each variant's |Δ| from the
    reference at the same (x_t, ε̂, z) — each step's z drawn again from the seed in the pipeline's order."""
    from hand_loop import hand_loop, predict
    from ppdiffusers.utils.paddle_utils import randn_tensor

    from ppddpm.variants.ddpm import direct_step, posterior_step

    config = dict(thresholding=True, sample_max_value=1.5, dynamic_thresholding_ratio=0.9)
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(**config))
    seeds, steps, shape = [1, 2], 70, (2, 1, 8, 8)
    report = ppddpm.compare(pipe, ["posterior", "direct"], seed=seeds, num_inference_steps=steps, batch_size=2,
                            batched=False)
    sched = ddpm_scheduler(**config)
    sched.set_timesteps(steps)
    ab = sched.alphas_cumprod.numpy().astype(np.float64)
    fresh = lambda seed: paddle.Generator().manual_seed(seed, generator_name=f"stats-{uuid.uuid4()}")  # noqa: E731
    for k, seed in enumerate(seeds):
        with ppddpm.patch_step(reference := ddpm_scheduler(**config), "posterior"):
            run = hand_loop(unet, reference, seed, steps, batch_size=2, scaled=False)
        x_T = randn_tensor(shape, generator=fresh(seed), dtype=unet.dtype).numpy()
        x_t = np.concatenate([x_T[None], run.prev_sample[:-1]])
        with paddle.no_grad():
            eps = np.stack([predict(unet, paddle.to_tensor(x), int(t)).numpy() for x, t in zip(x_t, run.timesteps)])
        np.testing.assert_array_equal(report.scale["posterior"][:, k], np.abs(x_t).reshape(steps, -1).max(1)
                                      + np.abs(eps).reshape(steps, -1).max(1) + np.float32(1))
        root = lambda a: np.sqrt(a[run.timesteps])[:, None, None, None, None]           # noqa: E731
        x0 = np.abs((x_t - root(1 - ab) * eps) / root(ab)).reshape(steps, 2, -1)
        s = np.clip(np.quantile(x0, 0.9, axis=2, keepdims=True), 1, 1.5)
        np.testing.assert_allclose(report.clip_fraction["posterior"][:, k], (x0 > s).mean((1, 2)), atol=1 / 128)
        d_prev, d_x0 = [], []
        for i, t in enumerate(run.timesteps):
            outs = []
            for step in (posterior_step, direct_step):
                gen = fresh(seed)
                for _ in range(i + 1):                           # x_T, then the z of every step before this one
                    randn_tensor(shape, generator=gen, dtype=unet.dtype)
                outs.append(step(sched, paddle.to_tensor(eps[i]), int(t), paddle.to_tensor(x_t[i]), generator=gen))
            d_prev.append(np.abs(outs[1].prev_sample.numpy() - outs[0].prev_sample.numpy()).ravel())
            d_x0.append(np.abs(outs[1].pred_original_sample.numpy() - outs[0].pred_original_sample.numpy()).max())
        np.testing.assert_array_equal(report.max_abs_prev["direct"][:, k], np.max(d_prev, axis=1))
        np.testing.assert_allclose(report.mean_abs_prev["direct"][:, k], np.mean(d_prev, axis=1, dtype=np.float64),
                                   rtol=1e-6)
        np.testing.assert_array_equal(report.max_abs_x0["direct"][:, k], d_x0)
        assert report.clip_fraction["posterior"][:, k].max() > 0 and np.max(d_prev) > 0         # not vacuous


def test_a_step_without_x0_at_some_steps_has_nan_there_only(pipe):
    """A variant whose step returns no x̂_0 at some steps (t = 800 and 400 of 900, 800, …, 0): its Δ x̂_0
    is NaN at exactly those steps, for every seed, and 0 elsewhere (it is the posterior route); its
    Δ prev_sample and the reference's numbers are unaffected."""
    from ppdiffusers.schedulers.scheduling_ddpm import DDPMSchedulerOutput

    from ppddpm.variants.ddpm import posterior_step

    def sometimes(scheduler, model_output, timestep, sample, generator=None, return_dict=True):
        out = posterior_step(scheduler, model_output, timestep, sample, generator=generator)
        if int(timestep) in (800, 400):
            return DDPMSchedulerOutput(prev_sample=out.prev_sample, pred_original_sample=None)
        return out

    ppddpm.register_variant("test-x0-sometimes")(sometimes)
    try:
        report = ppddpm.compare(pipe, ["posterior", "test-x0-sometimes"], seed=[1, 2], num_inference_steps=10)
        plain = ppddpm.compare(pipe, ["posterior", "direct"], seed=[1, 2], num_inference_steps=10)
    finally:
        ppddpm.unregister_variant("test-x0-sometimes")
    dx0 = report.max_abs_x0["test-x0-sometimes"]
    assert np.isnan(dx0[[1, 5]]).all() and (np.delete(dx0, [1, 5], axis=0) == 0).all()
    assert (report.max_abs_prev["test-x0-sometimes"] == 0).all()
    assert np.array_equal(report.scale["posterior"], plain.scale["posterior"])
    assert np.array_equal(report.clip_fraction["posterior"], plain.clip_fraction["posterior"])
