"""ppddpm.likelihood (float32 paddle) against the float64 bound of ppddpm.reference.bound, term by term.

Every comparison is also run against a deliberately wrong reference (one term changed) and must fail there:
the checks can tell a right bound from a wrong one.
"""
import math

import numpy as np
import paddle
import pytest
from ppdiffusers import DDIMScheduler, DDPMPipeline

import ppddpm
from ppddpm import reference as ref
from ppddpm.core import bound as core_bound
from ppddpm.errors import BadValue, Unsupported
from ppddpm.model.builders import ddpm_scheduler, small_unet
from ppddpm.model.data import load_digits

LN2 = math.log(2.0)
DIGITS = load_digits("test", 8)[:6]          # 17 levels: 0..16 mapped to [-1, 1]


def agrees(mine, truth, rtol, atol):
    """Whether float32 per-image bits agree with the float64 ones: |Δ| ≤ rtol·|truth| + atol everywhere (NaN fails)."""
    gap = np.abs(np.asarray(mine, np.float64) - truth)
    return bool(np.all(gap <= rtol * np.abs(truth) + atol))


@pytest.fixture(scope="module")
def tiny_unet():
    """The smallest UNet2DModel the builders make (8/16 channels, no attention): for the loops over all t."""
    paddle.seed(5)
    unet = small_unet(8, 1, block_out_channels=(8, 16), attention=False)
    unet.eval()
    return unet


@pytest.fixture(scope="module")
def wide_unet():
    """A tiny UNet with twice the image's channels out: mean and learned_range variance."""
    paddle.seed(7)
    unet = small_unet(8, 1, block_out_channels=(8, 16), attention=False, out_channels=2)
    unet.eval()
    return unet


def _pipe(unet, **config):
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(**config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _x_t(s64, x0, t, seed):
    """x_t by eq. (4) in float64, as float32, and the ε it holds (recomputed from the float32 x_t)."""
    noise = np.random.RandomState(seed).randn(*x0.shape)
    xt = ref.q_sample(s64, x0.astype(np.float64), np.full(len(x0), t), noise).astype(np.float32)
    ab = s64.alphas_cumprod[t]
    return xt, (xt - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)


def _output(unet, xt, t):
    with paddle.no_grad():
        return unet(paddle.to_tensor(xt), paddle.to_tensor(np.full(len(xt), t))).sample.numpy()


# float32 tolerance of a term: the KL is (μ̃ − μ_θ)²/(2σ²) of means whose float32 evaluation (eq. 7, and eq. 15's
# division by √ᾱ_t) carries ~10u·(|x_t| + |ε̂|)/√ᾱ_t absolute error; on these inputs (a random UNet, so
# |μ̃ − μ_θ| is far above that) it is below 1e-4 of the term, plus 1e-6 bits for the log-variance terms.
RTOL, ATOL = 1e-4, 1e-6
CASES = [(p, v) for p in ("epsilon", "sample", "v_prediction") for v in ("fixed_small", "fixed_large", "learned_range")]


@pytest.mark.parametrize("prediction_type,variance_type", CASES)
def test_vb_term_is_the_float64_bound(prediction_type, variance_type, unet, wide_unet):
    """TF `_vb_terms_bpd` at t = 0 (the decoder, eq. 13), 1, 500 and 999 (KL of eqs. 6, 7 against p_θ), with
    and without clipping x̂_0, for each prediction type and variance type; then with a wrong term in the
    reference it must fail: x̂_0 of another prediction type (t = 1, 500), the other fixed variance (t = 1,
    where β_1 = 2.2 β̃_1; at large t the two differ by less than the tolerance)."""
    model = wide_unet if variance_type == "learned_range" else unet
    pipe = _pipe(model, prediction_type=prediction_type, variance_type=variance_type)
    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    other_variance = {"fixed_small": "fixed_large", "fixed_large": "fixed_small"}.get(variance_type)
    other_prediction = {"epsilon": "v_prediction", "v_prediction": "sample", "sample": "epsilon"}[prediction_type]
    for t in (0, 1, 500, 999):
        xt, _ = _x_t(s64, DIGITS, t, seed=t)
        out = _output(model, xt, t)
        for clip in (True, False):
            mine = ppddpm.likelihood.vb_term(pipe, DIGITS, xt, t, levels=17, clip_denoised=clip)
            truth, _ = ref.vb_terms_bpd(s64, out, DIGITS, xt, t, prediction_type, variance_type, clip, levels=17)
            assert agrees(mine, truth, RTOL, ATOL), (t, clip, mine, truth)
            if t in (0, 999):
                continue      # t = 0: a random UNet's decoder misses every bin (the floor); t = 999: ~1e-6 bits
            wrong, _ = ref.vb_terms_bpd(s64, out, DIGITS, xt, t, other_prediction, variance_type, clip, levels=17)
            assert not agrees(mine, wrong, RTOL, ATOL)
            if other_variance and t == 1:
                wrong, _ = ref.vb_terms_bpd(s64, out, DIGITS, xt, t, prediction_type, other_variance, clip, levels=17)
                assert not agrees(mine, wrong, RTOL, ATOL)


def test_learned_range_reads_the_extra_channels(wide_unet, monkeypatch):
    """The variance channels enter as v = (out + 1)/2 (improved DDPM eq. 15): a reference that uses the raw
    output as v disagrees."""
    pipe = _pipe(wide_unet, variance_type="learned_range")
    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    xt, _ = _x_t(s64, DIGITS, 40, seed=1)
    out = _output(wide_unet, xt, 40)
    mine = ppddpm.likelihood.vb_term(pipe, DIGITS, xt, 40, levels=17)
    truth, _ = ref.vb_terms_bpd(s64, out, DIGITS, xt, 40, variance_type="learned_range", levels=17)
    assert agrees(mine, truth, RTOL, ATOL)
    right = ref.bound.model_log_variance
    monkeypatch.setattr(ref.bound, "model_log_variance",
                        lambda s, t, kind, v=None, ndim=4: right(s, t, kind, None if v is None else 2 * v - 1, ndim))
    wrong, _ = ref.vb_terms_bpd(s64, out, DIGITS, xt, 40, variance_type="learned_range", levels=17)
    assert not agrees(mine, wrong, RTOL, ATOL)


def _decoder_grid(levels):
    """Every level x, the mean from −12σ to +12σ around it, σ from a tenth of a bin to ten bins."""
    half = 1.0 / (levels - 1)
    x = -1.0 + 2.0 * half * np.arange(levels)
    z = np.linspace(-12, 12, 97)
    log_scales = np.log(half * np.array([0.1, 0.5, 1.0, 10.0]))
    X, Z, L = np.meshgrid(x, z, log_scales, indexing="ij")
    return X.ravel(), X.ravel() - Z.ravel() * np.exp(L.ravel()), L.ravel()


@pytest.mark.parametrize("levels", [17, 256])
def test_decoder_likelihood_is_eq13(levels, monkeypatch):
    """ppddpm's discretized decoder (paddle, float64, exact CDF) against the reference: both in float64, the
    bin probability Φ(b) − Φ(a) is exact to ~4e-16 absolute (rounding of Φ near 1), so log P agrees to
    4e-16/P (≤ 4e-4 at the 1e-12 floor). A decoder whose end bins are closed, not open to ±∞, fails."""
    x, means, log_scales = _decoder_grid(levels)
    mine = core_bound.discretized_gaussian_log_likelihood(
        *(paddle.to_tensor(v) for v in (x, means, log_scales)), levels=levels).numpy()
    truth = ref.discretized_gaussian_log_likelihood(x, means, log_scales, levels)
    tol = 4e-16 / np.maximum(np.exp(truth), 1e-12) + 1e-12
    assert np.all(np.abs(mine - truth) <= tol)
    closed = ref.discretized_gaussian_log_likelihood(x, means, log_scales, levels=10 ** 9)   # end bins as inner ones
    ends = np.abs(x) == 1
    assert not np.all(np.abs(mine[ends] - closed[ends]) <= tol[ends])
    tanh = ref.discretized_gaussian_log_likelihood(x, means, log_scales, levels, cdf="tanh")
    assert 1e-5 < np.abs(np.exp(tanh) - np.exp(truth)).max() < 1e-3     # TF's approximation: ~1.6e-4 in P


def test_prior_is_the_kl_to_the_standard_normal():
    """L_T = KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1)), bits/dim; the float32 terms of a KL near 0 (ᾱ_T ≈ 4e-5)
    round at ~1e-7 nats. A prior at ᾱ_{T−1} (one step short) is off by more than that."""
    sched = ddpm_scheduler()
    s64 = ref.Schedule.from_scheduler(sched)
    mine = core_bound.prior_bpd(core_bound.bound_tables(sched), paddle.to_tensor(DIGITS)).numpy()
    truth = ref.prior_bpd(s64, DIGITS)
    assert agrees(mine, truth, 1e-4, 1e-7)
    short = ref.prior_bpd(ref.Schedule(s64.betas[:-1]), DIGITS)
    assert not agrees(mine, short, 1e-4, 1e-7)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_eq12_the_bound_is_a_weighted_epsilon_mse(variance_type, unet):
    """eq. (12): with ε-prediction, fixed σ_t² and no clipping, L_{t} = β²/(2σ²α(1−ᾱ))·‖ε − ε̂‖²/D + C_t (nats),
    C_t the KL of the variances (0 for fixed_small). Tolerance as for a term (RTOL, ATOL). A weight with
    1 − ᾱ_{t−1} in place of 1 − ᾱ_t fails (at t = 1, 10, 100: where the two differ)."""
    pipe = _pipe(unet, variance_type=variance_type, clip_sample=False)
    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    weight, constant = ref.eq12_weight(s64, variance_type), ref.eq12_constant(s64, variance_type)
    sigma2 = np.exp(ref.model_log_variance(s64, np.arange(1000), variance_type, ndim=1))
    prev = np.append(0.5, s64.alphas_cumprod[:-1])          # (t = 0 has no eq. 12 term)
    wrong_weight = s64.betas ** 2 / (2 * sigma2 * s64.alphas * (1.0 - prev))
    for t in (1, 10, 100, 999):
        xt, eps = _x_t(s64, DIGITS, t, seed=t)
        eps_mse = ((eps - _output(unet, xt, t)) ** 2).reshape(len(xt), -1).mean(1)
        mine = ppddpm.likelihood.vb_term(pipe, DIGITS, xt, t, levels=17, clip_denoised=False)
        assert agrees(mine, (weight[t] * eps_mse + constant[t]) / LN2, RTOL, ATOL), t
        if t < 999:               # (1 − ᾱ_998)/(1 − ᾱ_999) − 1 ≈ 1e-6: the wrong weight is right there
            assert not agrees(mine, (wrong_weight[t] * eps_mse + constant[t]) / LN2, RTOL, ATOL), t
    # C_t: 0 for fixed_small (to float64 rounding), ½(ln 2.2 + 1/2.2 − 1) = 0.12 at t = 1 for fixed_large
    assert np.abs(constant[1:]).max() < 1e-15 if variance_type == "fixed_small" else constant[1] > 0.1


def _small_T_pipe(unet):
    """T = 20 with β up to 0.3, so that x_T is nearly N(0, I): the whole bound in 20 UNet calls."""
    return _pipe(unet, num_train_timesteps=20, beta_end=0.3)


def test_bpd_sums_every_term_with_a_fresh_x_t_per_t(tiny_unet):
    """calc_bpd_loop: total = L_T + Σ_t L_t; term t is the reference's at x_t made with default_rng([seed, t]);
    mse[:, t] is ‖x̂_0 − x_0‖²/D. The same bound in batches of 4 and of 6 agrees (UNet batches round alike to
    1e-5). A reference fed another t's noise disagrees."""
    pipe = _small_T_pipe(tiny_unet)
    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    report = ppddpm.likelihood.bpd(pipe, DIGITS, seed=3, levels=17, batch_size=4)
    for t in range(20):
        noise = np.random.default_rng([3, t]).standard_normal(DIGITS.shape, dtype=np.float32)
        xt = ref.q_sample(s64, DIGITS.astype(np.float64), np.full(6, t), noise).astype(np.float32)
        truth, x0 = ref.vb_terms_bpd(s64, _output(tiny_unet, xt, t), DIGITS, xt, t, levels=17)
        assert agrees(report.terms[:, t], truth, RTOL, ATOL), t
        assert agrees(report.mse[:, t], ((x0 - DIGITS) ** 2).reshape(6, -1).mean(1), 1e-4, 1e-6), t
        if t:
            other = np.random.default_rng([3, t + 1]).standard_normal(DIGITS.shape, dtype=np.float32)
            xt2 = ref.q_sample(s64, DIGITS.astype(np.float64), np.full(6, t), other).astype(np.float32)
            wrong, _ = ref.vb_terms_bpd(s64, _output(tiny_unet, xt2, t), DIGITS, xt2, t, levels=17)
            assert not agrees(report.terms[:, t], wrong, RTOL, ATOL), t
    assert agrees(report.prior, ref.prior_bpd(s64, DIGITS), 1e-4, 1e-7)
    np.testing.assert_allclose(report.total, report.prior + report.terms.sum(1), rtol=1e-12)
    again = ppddpm.likelihood.bpd(pipe, DIGITS, seed=3, levels=17, batch_size=6)
    np.testing.assert_allclose(again.terms, report.terms, rtol=1e-5, atol=1e-7)
    some = ppddpm.likelihood.bpd(pipe, DIGITS, seed=3, levels=17, timesteps=5)
    assert len(some.timesteps) == 5 and np.isnan(some.terms).sum() == 6 * 15
    np.testing.assert_allclose(some.terms[:, some.timesteps], report.terms[:, some.timesteps], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(some.total, some.prior + some.terms[:, some.timesteps].sum(1) * 20 / 5, rtol=1e-12)
    assert "L_0 (decoder)" in report.table() and report.to_json().startswith("{")


def _report_of(terms, drawn):
    """A BoundReport holding given per-image terms at the drawn timesteps (no model: the estimator alone)."""
    B, T = terms.shape
    held = np.full((B, T), np.nan)
    held[:, drawn] = terms[:, drawn]
    prior = np.zeros(B)
    total = prior + held[:, drawn].sum(1) * T / len(drawn)
    return ppddpm.likelihood.BoundReport(total, held, prior, held, np.asarray(drawn), np.zeros(T), 17, 0, True,
                                         "epsilon", "fixed_small")


def test_the_timestep_draw_is_unbiased_and_its_standard_error_is_right():
    """K of T timesteps without replacement: over 4000 draws the estimates average to the full sum (within 4
    of their standard deviations / √4000) and the mean of the stated timestep_error² is the estimator's
    variance within 6 % (4000 draws: the variance is known to ±√(2/4000) ≈ 2 %, 3σ). The same error
    without the finite-population correction (1 − K/T = 0.6 here) is 40 % off and fails."""
    T, K, B = 50, 20, 3
    rng = np.random.RandomState(0)
    terms = np.exp(-np.arange(T) / 8.0)[None] * (1 + 0.1 * rng.rand(B, T))       # most bits at small t, as here
    estimates, errors2 = [], []
    for _ in range(4000):
        report = _report_of(terms, np.sort(rng.choice(T, K, replace=False)))
        estimates.append(report.mean)
        errors2.append(report.timestep_error ** 2)
    estimates = np.array(estimates)
    assert abs(estimates.mean() - terms.sum(1).mean()) <= 4 * estimates.std() / math.sqrt(4000)
    assert abs(np.mean(errors2) / estimates.var() - 1) < 0.06
    assert abs(np.mean(errors2) / (1 - K / T) / estimates.var() - 1) >= 0.06


def test_bad_input_is_one_line(unet, wide_unet):
    pipe = _pipe(unet)
    bpd = ppddpm.likelihood.bpd
    for images, says in ((np.full((2, 1, 8, 8), np.nan, np.float32), "NaN"),
                         (DIGITS * 1.5, "must lie in \\[-1, 1\\]"),
                         (DIGITS[:, :, :4], "do not fit this UNet"),
                         (DIGITS[0], "batch \\[B, C, H, W\\]")):
        with pytest.raises(BadValue, match=says):
            bpd(pipe, images, levels=17)
    with pytest.raises(BadValue, match="not on 256 levels"):
        bpd(pipe, DIGITS, levels=256)                       # the digits' 17 levels are not on the 8-bit grid
    for k in (1, 1001, 2.5):
        with pytest.raises(BadValue, match="timesteps must be an integer from 2"):
            bpd(pipe, DIGITS, levels=17, timesteps=k)
    ddim = DDPMPipeline(unet=unet, scheduler=DDIMScheduler())
    with pytest.raises(Unsupported, match="DDPM-like scheduler.*DDIMScheduler"):
        bpd(ddim, DIGITS, levels=17)
    with pytest.raises(Unsupported, match="variance_type"):
        bpd(_pipe(unet, variance_type="fixed_small_log"), DIGITS, levels=17)
    with pytest.raises(Unsupported, match="needs a UNet with 2 output channels"):
        bpd(_pipe(unet, variance_type="learned_range"), DIGITS, levels=17, timesteps=2)
    broken = small_unet(8, 1, block_out_channels=(8, 16), attention=False)
    broken.eval()
    for p in broken.parameters():
        p.set_value(paddle.full_like(p, float("nan")))
    with pytest.raises(BadValue, match="bound is not finite at t = "):          # said at the first chunk of t
        bpd(_pipe(broken), DIGITS, levels=17, timesteps=3)
    with pytest.raises(BadValue, match="t must be integer timesteps in 0..999"):
        ppddpm.likelihood.vb_term(pipe, DIGITS, DIGITS, 1000, levels=17)


def test_the_bundled_model_at_a_few_timesteps():
    """The trained model, where the terms are small and the float32 care matters: t = 0 (its decoder hits the
    bins, ~0 bits), 1 (the largest KL), 999 (a KL of ~1e-6 bits)."""
    pipe = ppddpm.load_pipeline()
    s64 = ref.Schedule.from_scheduler(pipe.scheduler)
    for t in (0, 1, 999):
        xt, _ = _x_t(s64, DIGITS, t, seed=t)
        mine = ppddpm.likelihood.vb_term(pipe, DIGITS, xt, t, levels=17)
        truth, _ = ref.vb_terms_bpd(s64, _output(pipe.unet, xt, t), DIGITS, xt, t, levels=17)
        assert agrees(mine, truth, RTOL, 1e-8), t
