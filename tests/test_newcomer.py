"""What a newcomer reads: --help's defaults, progress only where someone watches, titles that
say what the tiles show, animations a person watches, labels, and messages that say what to do."""
import argparse
import contextlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import ppddpm
from ppddpm.pictures import plotting as P


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


# --- --help -----------------------------------------------------------------------------------

def _help_blocks(parser, command, monkeypatch):
    """{first option string: its whole help entry} as `ppddpm COMMAND --help` prints it."""
    monkeypatch.setenv("COLUMNS", "3000")               # one entry a line or two, never wrapped mid-text
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    blocks, current = {}, None
    for line in text.getvalue().splitlines():
        if re.match(r"^  -", line):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def test_every_option_with_a_default_shows_it_once(monkeypatch):
    from ppddpm.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    checked = 0
    for command, sub in commands.items():
        blocks = _help_blocks(parser, command, monkeypatch)
        for action in sub._actions:
            if not action.option_strings or action.option_strings[0] in ("-h", "--help"):
                continue
            entry = blocks[action.option_strings[0]]
            mentions = entry.count("default")
            if action.default is None or action.default is False:      # flags, and options off unless given
                assert mentions <= 1, f"{command} {entry}"
            else:
                assert mentions == 1, f"ppddpm {command}: {entry!r} should state its default once"
            checked += 1
    assert checked > 60
    # the ones the issue names, as printed
    wanted = {"sample": {"--out": "(default: runs/sample)", "--batch-size": "(default: 1)"},
              "ab": {"--steps": "(default: 1000)", "--mode": "(default: shadow)", "--out": "(default: runs/ab)"},
              "train": {"--lr": "(default: 0.002)", "--seed": "(default: 0)", "--checkpoint-every": "(default: 250)",
                        "--block-out-channels": "(default: 32 64)"},
              "animate": {"--field": "(default: prev_sample)", "--every": "--every 1 for every recorded step"},
              "upstream": {"--scheduler": "(default: ddpm)"}}
    for command, options in wanted.items():
        blocks = _help_blocks(parser, command, monkeypatch)
        for option, text in options.items():
            assert text in blocks[option], blocks[option]


# --- progress ---------------------------------------------------------------------------------

def _sample_on_a_terminal(tmp_path, saved_pipe_dir, name, stdout_on_terminal=True, **env_extra):
    """`ppddpm sample` with stderr (and stdout, unless told) on a pseudo-terminal, as in a shell;
    returns what the terminal showed."""
    import pty

    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST", "PPDDPM_PROGRESS")}
    env.update(env_extra)
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))   # a terminal's 100 columns
    proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "sample", "--model", str(saved_pipe_dir), "--steps", "10",
                             "--out", str(tmp_path / name)], env=env, stdin=subprocess.DEVNULL,
                            stdout=follower if stdout_on_terminal else subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:                  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0, shown.decode(errors="replace")
    return shown.decode(errors="replace")


def test_the_cli_shows_progress_only_where_someone_watches(tmp_path, saved_pipe_dir):
    bar = "10/10"                                          # tqdm's count at the end of a 10-step run
    assert bar in _sample_on_a_terminal(tmp_path, saved_pipe_dir, "tty")
    assert bar not in _sample_on_a_terminal(tmp_path, saved_pipe_dir, "log", stdout_on_terminal=False)   # `> log`
    # PPDDPM_PROGRESS=0 goes through the same rule (test_progress_rule_reads_both_streams, test_recording)


def test_progress_rule_reads_both_streams(monkeypatch):
    from ppddpm._progress import wanted

    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.delenv("PPDDPM_PROGRESS", raising=False)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(sys, "stderr", Stream(True))
    monkeypatch.setattr(sys, "stdout", Stream(True))
    assert wanted(None)
    monkeypatch.setattr(sys, "stdout", Stream(False))          # make demo > log
    assert not wanted(None)
    monkeypatch.setenv("PPDDPM_PROGRESS", "1")
    assert wanted(None) and not wanted(False)
    monkeypatch.setattr(sys, "stdout", Stream(True))
    monkeypatch.setenv("PPDDPM_PROGRESS", "0")
    assert not wanted(None)


# --- titles computed from the run -------------------------------------------------------------

def _tile_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.images and ax.axison and ax.get_title()]


def test_grid_title_says_the_spacing_the_tiles_have(pipe):
    """100 steps recorded every 10: the grid cannot be every 50 in t; the tiles are 100 apart and
    the title says so."""
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=100, every=10)
    fig = P.plot_grid(traj, every_t=50)
    shown_t = [int(t.split("=")[1]) for t in _tile_titles(fig)]
    gaps = set(-np.diff(shown_t))
    title = fig._suptitle.get_text()
    assert gaps == {100} and "every 100 in t" in title, title
    assert "100 sampling steps" in title and "every 10 recorded: 10" in title


def _sigma(t):
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) in float64, for the linear β schedule 1e-4 … 0.02 over T = 1000 (eq. 4),
    linearly interpolated between integer t as the Euler-type schedulers define it for a fractional t."""
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    return np.interp(t, np.arange(1000), np.sqrt((1 - alpha_bar) / alpha_bar))


def test_heun_grid_counts_steps_labels_stages_and_shows_the_models_scale(unet):
    from ppdiffusers import HeunDiscreteScheduler

    from ppddpm.model.builders import ddpm_scheduler

    heun = ppddpm.SamplerPipeline(unet=unet, scheduler=HeunDiscreteScheduler.from_config(ddpm_scheduler().config))
    traj = ppddpm.sample_trajectory(heun, seed=3, num_inference_steps=5, fields=("prev_sample", "pred_original_sample"))
    assert len(traj) == 9                                            # 2n − 1 calls of step
    fig = P.plot_grid(traj, "prev_sample", every=1)
    title = fig._suptitle.get_text()
    assert "5 sampling steps, 9 step calls" in title and "x_t/√(σ²+1), the scale the model sees" in title, title
    titles = _tile_titles(fig)
    assert len(set(titles)) == len(titles) == 9                      # t = 0 twice, told apart by its stage
    assert titles[-2:] == ["t=0\ncorrector", "t=0\npredictor"]
    # each tile is x_{t−1} / √(σ² + 1) with σ of the state it is at: the next call's t, 0 at the end
    t = np.asarray(traj.timesteps, np.float64)
    sigma_out = np.append(_sigma(t[1:]), 0.0)
    tiles = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images and ax.axison]
    for i, shown in enumerate(tiles):
        expected = np.clip(np.asarray(traj.prev_sample[i, 0, 0], np.float64) / np.sqrt(sigma_out[i] ** 2 + 1) / 2 + 0.5,
                           0, 1)
        # float32 frames and σ against a float64 σ: a few float32 roundings of values in [0, 1]
        np.testing.assert_allclose(shown, expected, rtol=0, atol=1e-5)


# --- animation length -------------------------------------------------------------------------

def test_default_animation_of_a_long_run_is_a_watchable_length(tmp_path):
    n = 1000
    traj = ppddpm.Trajectory(np.arange(n - 1, -1, -1), {"prev_sample": np.zeros((n, 1, 1, 4, 4), np.float32)},
                             np.zeros(n), np.zeros(n), {"every": 1, "num_inference_steps": n})
    P.animate(traj, tmp_path / "long.gif", mp4=False)
    frames = Image.open(tmp_path / "long.gif").n_frames
    assert 90 <= frames <= P.MAX_FRAMES                              # ~10 s at 10 fps, spread over the run
    assert P.frame_steps(n)[0] == 0 and P.frame_steps(n)[-1] == n - 1
    P.animate(traj, tmp_path / "every.gif", mp4=False, every=7)
    assert Image.open(tmp_path / "every.gif").n_frames == len(range(0, n, 7)) + 1      # and the last


# --- view --with labels ----------------------------------------------------------------------

def test_view_with_labels_the_runs_by_what_differs(tmp_path, pipe):
    from ppddpm.pictures.explorer import run_labels

    a = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=4)
    b = ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=4)
    assert run_labels(a, b) == ("seed 1", "seed 2")
    assert run_labels(a, b, ("a.npz", "b.npz")) == ("a.npz (seed 1)", "b.npz (seed 2)")
    page = ppddpm.pictures.explorer.explore(a, other=b).html
    assert '"other_name": "seed 2"' in page and "seed 1 vs seed 2" in page


# --- training: interrupted, resumed -----------------------------------------------------------

TINY = ["--resolution", "8", "--batch-size", "2", "--block-out-channels", "8", "16", "--checkpoint-every", "2",
        "--quiet"]


def test_interrupted_training_says_what_was_kept_and_how_to_resume(tmp_path):
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "train", "--steps", "100000", "--out", str(out), *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not (out / "checkpoint.safetensors").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    kept = re.search(r"kept (\S+) \(step (\d+)\); resume with: (.*)$", err.strip())
    assert kept and kept.group(1) == str(out / "checkpoint.safetensors"), err
    command = shlex.split(kept.group(3))
    assert command[:2] == ["ppddpm", "train"] and "--resume" in command
    step = int(kept.group(2))
    res = cli(*command[1:], "--stop-at", step + 2)                   # the printed command, stopped soon after
    assert res.returncode == 0, res.stderr
    assert f"resumed from {out} at step {step}" in res.stdout
    assert "changes the learning-rate schedule" not in res.stdout       # the same --steps: the same schedule


def test_a_resume_with_other_steps_says_it_changes_the_schedule(tmp_path):
    from ppddpm.model.training import TrainConfig, train

    out = str(tmp_path / "r")
    small = dict(output_dir=out, resolution=8, batch_size=2, checkpoint_every=2, block_out_channels=(8, 16), warmup=1)
    train(TrainConfig(steps=4, **small), progress=False)
    said = []
    train(TrainConfig(steps=10, **small), resume=True, progress=False, log=said.append)
    note = next(line for line in said if "learning-rate schedule" in line)
    # cosine from lr to lr/10 after 1 warm-up step, at step 4: over 4 steps it has ended (lr/10), over 10 it has not
    lr = 2e-3
    old = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, (4 - 1) / (4 - 1)))))
    new = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (4 - 1) / (10 - 1))))
    assert "steps 4 → 10" in note and f"{new:.3g} instead of {old:.3g}" in note, note


# --- ab: every seed plotted, shell-safe names, seeds once ------------------------------------

def test_ab_plots_each_seed_under_shell_safe_names_and_runs_a_seed_once(tmp_path, saved_pipe_dir):
    res = cli("ab", "--model", saved_pipe_dir, "--variants", "ppdiffusers,ddim(eta=1.0)", "--steps", 5,
              "--seed", "1,2,1", "--plot", "--out", tmp_path, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "--seed names 1 more than once; running each seed once" in res.stderr
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["ab_ddim-eta-1.0_seed1.png", "ab_ddim-eta-1.0_seed2.png"]
    assert all(shlex.quote(name) == name for name in pngs)              # nothing a shell would read
    one, two = (np.asarray(Image.open(tmp_path / name)) for name in pngs)
    assert one.shape != two.shape or not np.array_equal(one, two)        # two seeds, two figures
    import json

    assert json.loads((tmp_path / "ab.json").read_text())["seeds"] == [1, 2]


def test_import_and_load_print_no_paddle_or_setuptools_noise(tmp_path):
    """`import ppddpm` then the bundled model, in a fresh interpreter: no "No ccache found", no
    "Setuptools is replacing distutils" (warnings ppddpm cannot act on); nothing else on stderr."""
    res = subprocess.run([sys.executable, "-c", "import ppddpm; ppddpm.load_pipeline(); print('loaded')"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "loaded", res.stderr
    assert res.stderr.strip() == "", res.stderr


def test_what_a_newcomer_met_on_the_second_pass(tmp_path, saved_pipe_dir):
    """A reader that closes the pipe ends `ppddpm verify` quietly (141, not verify's 1 with a
    traceback); UniPC's default runs (ppddpm's fix of its solve's dtype mix); --force clears an
    earlier interrupted run's stream folder instead of refusing."""
    import subprocess
    import sys
    from pathlib import Path

    run = Path(__file__).parent / "data" / "trajectory-0.1.0.npz"
    proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "verify", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                              # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                              timeout=600)

    res = cli("sample", "--model", saved_pipe_dir, "--scheduler", "unipc", "--steps", 5, "--out", tmp_path / "u")
    assert res.returncode == 0 and (tmp_path / "u").is_dir(), res.stderr
    stream = tmp_path / "f" / "trajectory_seed1"
    stream.mkdir(parents=True)
    (stream / "meta.json").write_text("{}")          # what an interrupted run leaves behind
    assert cli("sample", "--model", saved_pipe_dir, "--seed", 1, "--steps", 3, "--out", tmp_path / "f",
               "--quiet").returncode == 2
    res = cli("sample", "--model", saved_pipe_dir, "--seed", 1, "--steps", 3, "--out", tmp_path / "f", "--quiet",
              "--force")
    assert res.returncode == 0 and "removed" in res.stderr, res.stderr
    assert (tmp_path / "f" / "trajectory_seed1.npz").exists() and not stream.exists()
