"""The `ppddpm` command line: real runs on a small saved pipeline, and one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import ppddpm


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_sample_writes_pngs_and_a_trajectory(tmp_path, saved_pipe_dir):
    res = cli("sample", "--model", saved_pipe_dir, "--seed", 3, "--steps", 40, "--every", 10, "--batch-size", 2,
              "--out", tmp_path / "run", "--quiet")
    assert res.returncode == 0, res.stderr
    pngs = sorted(p.name for p in (tmp_path / "run").glob("*.png"))
    # batch images are named for the batch: image 0 of a batch is not the seed's batch-1 sample
    assert pngs == ["sample_seed3_batch2_0.png", "sample_seed3_batch2_1.png", "sheet_seed3_batch2.png"]
    assert not (tmp_path / "run" / "trajectory_seed3_batch2").exists()        # the stream became the .npz
    traj = ppddpm.Trajectory.load(tmp_path / "run" / "trajectory_seed3_batch2.npz")
    # 40 leading-spaced steps are t = 975, 950, …, 0; every 10th step and the last: 750, 500, 250, 0
    assert traj.timesteps.tolist() == [750, 500, 250, 0]
    assert traj.prev_sample.shape == (4, 2, 1, 8, 8) and traj.meta["seed"] == 3
    big = np.asarray(Image.open(tmp_path / "run" / "sample_seed3_batch2_1.png"))
    assert big.shape == (128, 128)                                             # 8 px ×16, nearest
    assert np.array_equal(big[::16, ::16], np.asarray(traj.images[1]))         # the pipeline's own pixels
    res = cli("sample", "--model", saved_pipe_dir, "--seed", 3, "--steps", 5, "--out", tmp_path / "one", "--quiet")
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == ["sample_seed3.png"]


def test_ctrl_c_during_sample_keeps_the_steps_done(tmp_path, saved_pipe_dir):
    """SIGINT mid-run, as a user's Ctrl-C: exit 130, one line saying where the steps are, and the
    partial run loads and draws."""
    import signal
    import time

    # batch 8 makes the run last long enough (~10 s here) to be caught mid-way; the child gets the
    # terminal's default SIGINT handling whatever its parent (a pytest worker) inherited
    proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "sample", "--model", str(saved_pipe_dir), "--steps",
                             "1000", "--batch-size", "8", "--out", str(tmp_path), "--quiet"], stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    steps = tmp_path / "trajectory_seed777_batch8" / "steps.npy"
    deadline = time.time() + 120
    def fewer_than_20_steps_on_disk():
        return not steps.exists() or steps.stat().st_size < 128 + 32 * 20

    while proc.poll() is None and time.time() < deadline and fewer_than_20_steps_on_disk():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted after" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    partial = ppddpm.Trajectory.load(tmp_path / "trajectory_seed777_batch8")
    assert 20 <= len(partial) < 1000 and not partial.complete
    res = cli("grid", tmp_path / "trajectory_seed777_batch8", "--out", tmp_path / "g")
    assert res.returncode == 0 and "a partial run" in res.stdout, res.stderr
    res = cli("sample", "--model", saved_pipe_dir, "--steps", 5, "--batch-size", 8, "--out", tmp_path, "--quiet")
    assert res.returncode == 2 and "holds an earlier (interrupted?) run" in res.stderr        # nothing overwritten


def test_grid_and_animate_from_a_saved_run(tmp_path, saved_pipe_dir):
    assert cli("sample", "--model", saved_pipe_dir, "--steps", 100, "--out", tmp_path, "--quiet").returncode == 0
    run = tmp_path / "trajectory_seed777.npz"          # batch 1: named for the seed alone
    res = cli("grid", run, "--every", 10, "--out", tmp_path / "g")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "g").iterdir()} == {"grid_x_t.png", "grid_x0.png", "trajectory.png"}
    res = cli("animate", run, "--out", tmp_path / "a")
    assert res.returncode == 0, res.stderr
    gif = Image.open(tmp_path / "a" / "prev_sample.gif")
    assert gif.n_frames == 100


def test_ab_prints_the_table_and_writes_json(tmp_path, saved_pipe_dir):
    res = cli("ab", "--model", saved_pipe_dir, "--variants", "ppdiffusers,direct", "--steps", 30, "--clip", "on",
              "--mode", "free", "--seed", "1,2", "--plot", "--out", tmp_path, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "direct vs ppdiffusers" in res.stdout and "equivalent within float32 rounding: no" in res.stdout
    data = json.loads((tmp_path / "ab.json").read_text())
    assert data["seeds"] == [1, 2] and data["summary"]["direct"]["equivalent"] is False
    assert all((tmp_path / f"ab_direct_seed{s}.png").stat().st_size > 1000 for s in (1, 2))     # each seed its plot


def test_sample_with_another_sampler_and_ab_across_schedulers(tmp_path, saved_pipe_dir):
    res = cli("sample", "--model", saved_pipe_dir, "--scheduler", "ddim", "--eta", "1", "--steps", 10,
              "--all-fields", "--out", tmp_path / "ddim", "--quiet")
    assert res.returncode == 0, res.stderr
    traj = ppddpm.Trajectory.load(tmp_path / "ddim" / "trajectory_seed777.npz")
    assert traj.scheduler == "DDIMScheduler" and (traj.noise_std[:-1] > 0).all() and len(traj) == 10
    res = cli("ab", "--model", saved_pipe_dir, "--variants", "ppdiffusers,ddim(eta=1.0, use_clipped_model_output=True)",
              "--steps", 10, "--clip", "on", "--out", tmp_path / "ab", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "'ddim(eta=1.0, use_clipped_model_output=True)' on DDIMScheduler" in res.stdout
    assert "equivalent within float32 rounding: yes" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["sample", "--every", "0"], "--every must be a positive integer, got 0"),
    (["sample", "--every", "500", "--steps", "100"], "--every 500 is more than --steps 100"),
    (["sample", "--steps", "5000"], "--steps must be at most 1000 (the model's num_train_timesteps), got 5000"),
    (["sample", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["sample", "--seed", "-3"], "--seed takes non-negative integers"),
    (["sample", "--model", "/no/such/dir"], "no pipeline directory at '/no/such/dir'"),
    (["sample", "--model", "google/ddpm-cifar10-32"], "could not load 'google/ddpm-cifar10-32': the model hubs "
                                                      "(ppdiffusers, Hugging Face) are not reachable from here"),
    (["ab", "--variants", "posterior,drect"], "unknown step variant 'drect'; known: ppdiffusers"),
    (["ab", "--variants", "posterior"], "--variants needs at least two"),
    (["grid", "missing.npz"], "no trajectory at missing.npz"),
    (["patches", "apply", "nope", "--to", "x"], "unknown patch 'nope'"),
    (["ab", "--variants", "posterior,ddim(eta=1.0"], "bad variant spec 'ddim(eta=1.0': not a name or a call"),
    (["ab", "--variants", "posterior,ddim(etta=1)"], "variant 'ddim' takes no argument 'etta'"),
    (["sample", "--eta", "1"], "--eta is DDIM's η (eq. 16); use it with --scheduler ddim"),
    (["sample", "--scheduler", "ddim", "--eta", "-1"], "--eta takes a number ≥ 0"),
    (["upstream", "--variant", "nope"], "unknown step variant 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_corrupt_npz_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 this is not really a zip")
    res = cli("grid", tmp_path / "bad.npz", "--out", tmp_path)
    assert res.returncode == 2 and "truncated or corrupt" in res.stderr and "Traceback" not in res.stderr


def test_patches_list_and_check():
    res = cli("patches", "check")
    assert res.returncode == 0 and res.stdout.count(" ok") == 3


def test_steps_are_checked_against_the_models_own_T(tmp_path, unet):
    from ppdiffusers import DDPMPipeline

    from ppddpm.model.builders import ddpm_scheduler

    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(num_train_timesteps=50)).save_pretrained(str(tmp_path / "m"))
    res = cli("sample", "--model", tmp_path / "m", "--steps", 60, "--out", tmp_path / "o", "--quiet")
    assert res.returncode == 2 and "--steps must be at most 50 (the model's num_train_timesteps), got 60" in res.stderr
    assert cli("sample", "--model", tmp_path / "m", "--steps", 50, "--out", tmp_path / "o", "--quiet").returncode == 0


def test_a_real_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only errors raised on purpose for bad input become one-liners (ppddpm.errors)."""
    from ppddpm.cli import main as cli_module
    from ppddpm.pictures import plotting

    def broken(*args, **kwargs):
        raise TypeError("a bug inside plot_schedule")

    monkeypatch.setattr(plotting, "plot_schedule", broken)
    with pytest.raises(TypeError, match="a bug inside plot_schedule"):
        cli_module.main(["schedule", "--out", str(tmp_path)])
    assert cli_module.main(["grid", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2


@pytest.mark.parametrize("args,message", [
    (["forward", "--image", "digit99999"], "image 'digit99999': use 'digit' or 'digit0' … 'digit9'"),
    (["forward", "--image", "digitx"], "image 'digitx': use 'digit' or 'digit0' … 'digit9'"),
    (["schedule", "--out", "afile"], "--out afile is a file; give a folder"),
    (["eval", "--n", "2", "--out", "afile"], "--out afile is a file; give a folder"),
])
def test_newcomers_bad_input_is_one_line_too(tmp_path, args, message):
    (tmp_path / "afile").write_text("x")
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2 and message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert (tmp_path / "afile").read_text() == "x"                  # nothing lost


def test_forward_digit_n_is_a_digit_n(tmp_path):
    """'digit3' is the first held-out image *of a 3*, not the held-out image at index 3."""
    from ppddpm.model.data import load_digits
    from ppddpm.pictures.plotting import load_image

    digits, labels = load_digits("test", 16, with_labels=True)
    for n in (3, 9):
        assert np.array_equal(load_image(f"digit{n}", resolution=16), digits[np.nonzero(labels == n)[0][0]])


def test_eval_keeps_its_samples_and_a_contact_sheet(tmp_path, saved_pipe_dir):
    res = cli("eval", "--model", saved_pipe_dir, "--n", 4, "--steps", 5, "--out", tmp_path / "ev", "--quiet")
    assert res.returncode == 0, res.stderr
    scores = json.loads((tmp_path / "ev" / "scores.json").read_text())
    with np.load(tmp_path / "ev" / "samples.npz") as npz:
        assert npz["samples"].shape == (4, 1, 8, 8) and npz["seeds"].tolist() == [0, 1, 2, 3]
    sheet = Image.open(tmp_path / "ev" / "samples.png")
    assert sheet.size == (4 * (8 * 6 + 2) + 2, 8 * 6 + 2 + 2)          # 4 tiles of 8x8 ×6 (TILE_PX 48), 2-pixel gaps
    assert scores["samples"]["n"] == 4
    cover = scores["coverage"]                    # the 4 samples are one window; each is named one digit
    assert cover["window"] == 4 and sum(cover["counts"]) == 4 and 1 <= cover["fewest"] <= 4
    assert f"digits named in every 4 consecutive seeds: at least {cover['fewest']} of 10" in res.stdout
    mode = (tmp_path / "ev" / "scores.json").stat().st_mode & 0o777
    (tmp_path / "plain").write_text("x")
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777          # not mkstemp's 0600


def test_eval_scores_many_samples_chunk_by_chunk_as_the_formulas_give_for_all_at_once(tmp_path, saved_pipe_dir):
    """300 samples arrive in more than one chunk (4 batches of 64 a chunk); the scores are those of the
    metrics' formulas over all 300 at once, computed here with numpy/scipy from the kept samples."""
    from scipy import linalg

    from ppddpm.analysis.metrics import classifier
    from ppddpm.model.data import load_digits

    res = cli("eval", "--model", saved_pipe_dir, "--n", 300, "--steps", 3, "--seed", 5, "--out", tmp_path / "ev",
              "--quiet")
    assert res.returncode == 0, res.stderr
    with np.load(tmp_path / "ev" / "samples.npz") as npz:
        x, seeds = npz["samples"], npz["seeds"]
    assert x.shape == (300, 1, 8, 8) and x.dtype == np.float32 and seeds.tolist() == list(range(5, 305))
    assert Image.open(tmp_path / "ev" / "samples.png").size == (16 * 50 + 2, 19 * 50 + 2)   # 16 a row, 19 rows
    clf, _ = classifier()                        # the instrument (an MLP on real digits), not the code under test
    feats = np.clip((x.reshape(300, 64).astype(np.float64) + 1) / 2, 0, 1)
    p = clf.predict_proba(feats)
    marginal, eps = p.mean(0), 1e-12
    kl = (p * (np.log(p + eps) - np.log(marginal + eps))).sum(1)

    def hidden(f):
        return np.maximum(f @ clf.coefs_[0] + clf.intercepts_[0], 0)

    a, b = hidden(feats), hidden(np.clip((load_digits("train", 8).reshape(-1, 64) + 1) / 2, 0, 1))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fd = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * np.real(linalg.sqrtm(ca @ cb)))
    got = json.loads((tmp_path / "ev" / "scores.json").read_text())
    # sums in another order: float64 rounding, ~1e-15 relative; sqrtm of a near-singular product amplifies it
    np.testing.assert_allclose([got["samples"][k] for k in ("confidence", "class_entropy", "inception_score")],
                               [p.max(1).mean(), -(marginal * np.log(marginal + eps)).sum(), np.exp(kl.mean())],
                               rtol=1e-12)
    assert got["samples"]["frechet_distance"] == pytest.approx(float(fd), rel=1e-6)
    assert got["samples"]["n"] == 300
    assert got["coverage"]["counts"] == np.bincount(clf.predict(feats), minlength=10).tolist()


def test_train_options_become_the_train_config_field_by_field():
    """Every `ppddpm train` option that sets the training is the TrainConfig field of its name (--out is
    output_dir), and the command line's defaults are the config's own."""
    from ppddpm.cli.main import build_parser
    from ppddpm.model.training import TrainConfig

    args = build_parser().parse_args([
        "train", "--data", "imgs", "--resolution", "16", "--channels", "3", "--steps", "50", "--batch-size", "8",
        "--lr", "0.01", "--warmup", "5", "--lr-schedule", "constant", "--ema-decay", "0.9", "--block-out-channels",
        "16", "32", "64", "--layers-per-block", "2", "--stop-at", "20", "--seed", "4", "--checkpoint-every", "10",
        "--out", "o", "--resume", "--quiet", "--prediction-type", "v_prediction", "--loss", "hybrid", "--precision",
        "float16", "--log-every", "7"])
    assert TrainConfig.from_options(vars(args)) == TrainConfig(
        output_dir="o", data="imgs", resolution=16, channels=3, steps=50, batch_size=8, lr=0.01, warmup=5,
        lr_schedule="constant", ema_decay=0.9, block_out_channels=(16, 32, 64), layers_per_block=2, stop_at=20,
        seed=4, checkpoint_every=10, prediction_type="v_prediction", loss="hybrid", precision="float16", log_every=7)
    assert TrainConfig.from_options(vars(build_parser().parse_args(["train"]))) == TrainConfig(output_dir="runs/train")


def test_version_and_help_show_what_a_newcomer_needs():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"ppddpm {ppddpm.__version__}"
    res = cli("sample", "--help")
    assert res.returncode == 0 and "(default: 1)" in " ".join(res.stdout.split())       # --every's default shown
