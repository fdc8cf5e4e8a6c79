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
    pngs = sorted((tmp_path / "run").glob("*.png"))
    assert [p.name for p in pngs] == ["sample_seed3_0.png", "sample_seed3_1.png"]
    assert Image.open(pngs[0]).size == (8, 8)
    traj = ppddpm.Trajectory.load(tmp_path / "run" / "trajectory_seed3.npz")
    # 40 leading-spaced steps are t = 975, 950, …, 0; every 10th step and the last: 750, 500, 250, 0
    assert traj.timesteps.tolist() == [750, 500, 250, 0]
    assert traj.prev_sample.shape == (4, 2, 1, 8, 8) and traj.meta["seed"] == 3
    assert np.array_equal(np.asarray(Image.open(pngs[1])), np.asarray(traj.images[1]))


def test_grid_and_animate_from_a_saved_run(tmp_path, saved_pipe_dir):
    assert cli("sample", "--model", saved_pipe_dir, "--steps", 100, "--out", tmp_path, "--quiet").returncode == 0
    run = tmp_path / "trajectory_seed777.npz"
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
    assert (tmp_path / "ab_direct.png").stat().st_size > 1000


def test_sample_with_another_sampler_and_ab_across_schedulers(tmp_path, saved_pipe_dir):
    res = cli("sample", "--model", saved_pipe_dir, "--scheduler", "ddim", "--eta", "1", "--steps", 10,
              "--all-fields", "--out", tmp_path / "ddim", "--quiet")
    assert res.returncode == 0, res.stderr
    traj = ppddpm.Trajectory.load(tmp_path / "ddim" / "trajectory_seed777.npz")
    assert traj.scheduler == "DDIMScheduler" and (traj.sigma[:-1] > 0).all() and len(traj) == 10
    res = cli("ab", "--model", saved_pipe_dir, "--variants", "ppdiffusers,ddim(eta=1.0, use_clipped_model_output=True)",
              "--steps", 10, "--clip", "on", "--out", tmp_path / "ab", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "'ddim(eta=1.0, use_clipped_model_output=True)' on DDIMScheduler" in res.stdout
    assert "equivalent within float32 rounding: yes" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["sample", "--every", "0"], "--every must be a positive integer, got 0"),
    (["sample", "--steps", "5000"], "--steps must be at most 1000 (the model's num_train_timesteps), got 5000"),
    (["sample", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["sample", "--seed", "-3"], "--seed must be a non-negative integer"),
    (["sample", "--model", "/no/such/dir"], "no pipeline directory at '/no/such/dir'"),
    (["sample", "--model", "google/ddpm-cifar10-32"], "could not load 'google/ddpm-cifar10-32'"),
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

    from ppddpm.models import ddpm_scheduler

    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(num_train_timesteps=50)).save_pretrained(str(tmp_path / "m"))
    res = cli("sample", "--model", tmp_path / "m", "--steps", 60, "--out", tmp_path / "o", "--quiet")
    assert res.returncode == 2 and "--steps must be at most 50 (the model's num_train_timesteps), got 60" in res.stderr
    assert cli("sample", "--model", tmp_path / "m", "--steps", 50, "--out", tmp_path / "o", "--quiet").returncode == 0


def test_a_real_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only errors raised on purpose for bad input become one-liners (ppddpm.errors)."""
    from ppddpm import cli as cli_module, plotting

    def broken(*args, **kwargs):
        raise TypeError("a bug inside plot_schedule")

    monkeypatch.setattr(plotting, "plot_schedule", broken)
    with pytest.raises(TypeError, match="a bug inside plot_schedule"):
        cli_module.main(["schedule", "--out", str(tmp_path)])
    assert cli_module.main(["grid", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
