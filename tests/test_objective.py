"""`ppddpm train --prediction-type / --loss / --precision`: the objectives, their resume rule, and the record of
what float16 / bfloat16 would flush — held against numpy's own float16 cast and a bit-level bfloat16 rounding."""
import json
import math

import numpy as np
import paddle
import pytest
from ppdiffusers import DDPMPipeline

from ppddpm import reference as ref
from ppddpm.core import bound as core_bound
from ppddpm.core.rng import make_generator, release_generator
from ppddpm.model import precision
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.model.training import TrainConfig, train


def _cfg(out, **kw):
    """A run of 3 steps (unless `kw` says) of a UNet small enough for a test, every step's underflow logged."""
    return TrainConfig(**{**dict(output_dir=str(out), resolution=8, steps=3, batch_size=4, warmup=1,
                                 checkpoint_every=2, block_out_channels=(8, 16), attention=False, log_every=1), **kw})


def _edge_values():
    """|x| log-uniform over 1e-50…1e40 and every threshold of both formats ± a few float32 ulps, both signs."""
    rng = np.random.RandomState(0)
    spread = 10.0 ** rng.uniform(-50, 40, 20000)
    edges = [v for fmt in precision.FORMATS for v in precision.thresholds(fmt)]
    near = [np.nextafter(np.float32(e), np.float32(d), dtype=np.float32) for e in edges for d in (0, np.inf)]
    with np.errstate(over="ignore"):        # bfloat16's overflow threshold (+ulps) is beyond float32's range: inf
        values = np.concatenate([spread, edges, np.float64(near), [0.0]]).astype(np.float32)
    return np.concatenate([values, -values])


def _bfloat16(x32):
    """float32 → bfloat16 → float32 by the bits: round to nearest even on the top 16 bits (infinities stay)."""
    bits = x32.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def _oracle(x32, cast, smallest_normal):
    """Shares of zero / subnormal / overflow after a real cast, among all entries (nonzero inputs for 'zero')."""
    with np.errstate(over="ignore"):
        y = np.abs(cast(x32).astype(np.float64))
    return [np.mean((y == 0) & (x32 != 0)), np.mean((y > 0) & (y < smallest_normal)), np.mean(np.isinf(y))]


def _shares(values, scale):
    got = [float(v) for v in precision.shares_on_device(paddle.to_tensor(values), scale)]
    return {fmt: (got[6 * k:6 * k + 3], got[6 * k + 3:6 * k + 6]) for k, fmt in enumerate(precision.FORMATS)}


def test_the_underflow_shares_are_what_a_real_cast_does(monkeypatch):
    """float16 against numpy's float16 cast, bfloat16 against bit-level rounding, unscaled and × 2^16: equal to
    the entry (shares of 40 000 values, so to 1/40 000; float32 means of 0/1 masks are exact at this size). A
    float16 smallest normal of 2^-15 instead of 2^-14 (a wrong threshold) disagrees."""
    x = _edge_values()
    oracles = {"float16": lambda v: _oracle(v, np.float16, 2.0 ** -14),
               "bfloat16": lambda v: _oracle(v, _bfloat16, 2.0 ** -126)}
    for scale in (2.0 ** 16, 1024.0):
        got = _shares(x, scale)
        with np.errstate(over="ignore"):
            scaled = (x.astype(np.float64) * scale).astype(np.float32)
        for fmt, oracle in oracles.items():
            assert np.allclose(got[fmt][0], oracle(x), atol=0.5 / x.size, rtol=0), fmt
            assert np.allclose(got[fmt][1], oracle(scaled), atol=0.5 / x.size, rtol=0), (fmt, scale)
    assert 0 < oracles["float16"](x)[1] and 0 < oracles["bfloat16"](x)[1]     # the sample reaches each case
    monkeypatch.setitem(precision.FORMATS, "float16", (2.0 ** -24, 2.0 ** -15, 65504.0, 32.0))
    assert not np.allclose(_shares(x, 2.0 ** 16)["float16"][0], oracles["float16"](x), atol=0.5 / x.size, rtol=0)


def test_targets_are_epsilon_x0_and_v():
    """training_target against the float64 definitions: ε; x_0; v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (float32: 1e-6).
    A v with the signs swapped fails."""
    rng = np.random.RandomState(1)
    x0, eps, t = rng.randn(5, 1, 4, 4), rng.randn(5, 1, 4, 4), np.array([0, 3, 100, 500, 999])
    s64 = ref.Schedule.from_scheduler(ddpm_scheduler())
    a = np.sqrt(s64.alphas_cumprod[t])[:, None, None, None]
    truth = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - np.sqrt(1 - a ** 2) * x0}
    for kind, want in truth.items():
        tables = core_bound.bound_tables(ddpm_scheduler(prediction_type=kind))
        got = core_bound.training_target(tables, *(paddle.to_tensor(v, "float32") for v in (x0, eps)),
                                         paddle.to_tensor(t)).numpy()
        assert np.abs(got - want).max() <= 1e-6, kind
    assert np.abs(got - (np.sqrt(1 - a ** 2) * eps - a * x0)).max() > 0.1


def test_hybrid_trains_the_variance_through_the_bound_and_not_the_mean():
    """improved DDPM: inside L_hybrid the bound's gradient reaches the variance channels only (the mean's is
    stopped); without the stop it reaches the mean too."""
    tables = core_bound.bound_tables(ddpm_scheduler(variance_type="learned_range"))
    rng = np.random.RandomState(2)
    x0 = paddle.to_tensor(np.round(rng.uniform(-1, 1, (3, 1, 4, 4)) * 8) / 8, "float32")
    x_t = paddle.to_tensor(rng.randn(3, 1, 4, 4), "float32")
    t_host = np.array([0, 5, 400])
    for frozen in (True, False):
        out = paddle.to_tensor(rng.randn(3, 2, 4, 4), "float32", stop_gradient=False)
        bits, _ = core_bound.vb_terms_bpd(tables, out, x0, x_t, paddle.to_tensor(t_host), t_host, clip_denoised=False,
                                          levels=17, frozen_mean=frozen)
        bits.sum().backward()
        grad = out.grad.numpy()
        assert np.abs(grad[:, 1:]).max() > 0
        assert (np.abs(grad[:, :1]).max() == 0) == frozen


@pytest.mark.parametrize("prediction_type,loss", [("sample", "simple"), ("v_prediction", "simple"),
                                                  ("epsilon", "vlb"), ("epsilon", "hybrid")])
def test_each_objective_trains_and_saves_what_it_predicts(prediction_type, loss, tmp_path):
    """Three steps of each objective: finite losses, the saved scheduler carries the target (and learned_range for
    hybrid, with the UNet's outputs doubled), and the saved pipeline samples with plain ppdiffusers."""
    out = tmp_path / "m"
    result = train(_cfg(out, prediction_type=prediction_type, loss=loss), progress=False)
    assert len(result.losses) == 3 and np.isfinite(result.losses).all()
    pipe = DDPMPipeline.from_pretrained(str(out))
    assert pipe.scheduler.config.prediction_type == prediction_type
    assert pipe.scheduler.config.variance_type == ("learned_range" if loss == "hybrid" else "fixed_small")
    assert pipe.unet.config.out_channels == (2 if loss == "hybrid" else 1)
    pipe.set_progress_bar_config(disable=True)
    g = make_generator(0)
    images = pipe(generator=g, num_inference_steps=3, batch_size=2, output_type="np").images
    release_generator(g)
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()


def test_resume_refuses_another_target_or_loss_and_keeps_the_underflow_record(tmp_path):
    """A checkpoint of one objective is not resumed as another (one line, nothing trained); the same objective
    resumes, and the underflow record continues from the checkpoint's step (logged every step here)."""
    out = tmp_path / "r"
    train(_cfg(out, loss="vlb"), progress=False)
    for change, says in ((dict(loss="simple"), "--loss vlb, this run asks for --loss simple"),
                         (dict(loss="vlb", prediction_type="sample"),
                          "--prediction-type epsilon, this run asks for --prediction-type sample")):
        with pytest.raises(ValueError, match=says) as caught:
            train(_cfg(out, steps=5, **change), resume=True, progress=False)
        assert "\n" not in str(caught.value)
    more = train(_cfg(out, steps=5, loss="vlb"), resume=True, progress=False)
    record = json.loads((out / "train_losses.json").read_text())
    assert len(more.losses) == 5 and record["underflow"]["steps"] == [0, 1, 2, 3, 4]
    assert record["config"]["loss"] == "vlb"


def test_low_precision_on_a_cpu_says_it_computes_float32(tmp_path):
    """--precision bfloat16 / float16 on this CPU: one line says paddle's auto_cast stayed float32, and the losses
    are the float32 run's, bit for bit (nothing pretends to be 16-bit); the record is kept either way."""
    said = []
    base = train(_cfg(tmp_path / "f32"), progress=False, log=said.append)
    assert not any("auto_cast" in s for s in said)
    for kind in ("bfloat16", "float16"):
        said = []
        low = train(_cfg(tmp_path / kind, precision=kind), progress=False, log=said.append)
        notes = [s for s in said if "auto_cast computes float32" in s]
        assert len(notes) == 1 and f"--precision {kind}" in notes[0] and "\n" not in notes[0]
        assert low.losses == base.losses
        record = json.loads((tmp_path / kind / "train_losses.json").read_text())
        assert record["precision_note"] == notes[0]
        shares = record["underflow"]["gradients"]["float16"]
        assert record["underflow"]["scale"] == 2.0 ** 16 and len(shares["subnormal"]) == 3
        assert all(0 <= v <= 1 for v in shares["zero"] + shares["subnormal_scaled"]) and math.isfinite(
            record["underflow"]["loss_values"]["float16"]["zero"][0])
