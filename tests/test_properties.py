"""Property-based checks (hypothesis) over random β schedules, step counts and shapes."""
import numpy as np
import paddle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppddpm
from ppddpm.analysis.ab import K_ROUNDINGS, UNIT_ROUNDOFF
from ppddpm.model.builders import ddpm_scheduler
from hand_loop import hand_loop


@st.composite
def setups(draw):
    T = draw(st.integers(20, 1000))
    rng = np.random.RandomState(draw(st.integers(0, 2 ** 31 - 1)))
    betas = np.sort(rng.uniform(1e-5, draw(st.floats(1e-3, 0.05)), T))    # any increasing schedule
    steps = draw(st.integers(1, T))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    vt = draw(st.sampled_from(["fixed_small", "fixed_large"]))
    return betas, steps, shape, vt, rng


def fake_model(x, t):
    """A cheap, deterministic stand-in for ε_θ: the property is about the step, not the net."""
    return 0.5 * x + 0.01 * float(t) ** 0.5


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_posterior_and_direct_agree_without_clipping(setup):
    betas, steps, shape, vt, rng = setup
    sched = ddpm_scheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(), clip_sample=False,
                           variance_type=vt)
    sched.set_timesteps(min(steps, 50))          # a prefix of strided steps is enough per example
    posterior, direct = ppddpm.get_variant("posterior").step, ppddpm.get_variant("direct").step
    for t in sched.timesteps[:8]:
        x = paddle.to_tensor(rng.randn(*shape).astype("float32") * 3)
        eps = paddle.to_tensor(rng.randn(*shape).astype("float32"))
        paddle.seed(1)
        a = posterior(sched, eps, t, x).prev_sample.numpy()
        paddle.seed(1)
        b = direct(sched, eps, t, x).prev_sample.numpy()
        omab = 1.0 - float(sched.alphas_cumprod[int(t)])
        bound = K_ROUNDINGS * UNIT_ROUNDOFF / omab * (np.abs(x.numpy()).max() + np.abs(eps.numpy()).max() + 1)
        assert np.abs(a - b).max() <= bound


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups(), st.integers(1, 7))
def test_recorder_matches_a_hand_written_loop(setup, every):
    betas, steps, shape, vt, rng = setup
    steps = min(steps, 60)
    x = paddle.to_tensor(rng.randn(*shape).astype("float32"))

    def sched():
        return ddpm_scheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(), variance_type=vt)

    plain = hand_loop(fake_model, sched(), 5, steps, x_T=x)
    s = sched()
    with ppddpm.record(s, every=every) as traj:
        hand_loop(fake_model, s, 5, steps, x_T=x)
    keep = ppddpm.kept_steps(len(plain.timesteps), every)
    assert traj.timesteps.tolist() == plain.timesteps[keep].tolist()
    assert np.array_equal(traj.prev_sample, plain.prev_sample[keep])
    assert np.array_equal(traj.pred_original_sample, plain.pred_original_sample[keep])
