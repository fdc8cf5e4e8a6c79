"""Hostile files and hard faults (issue 21): nothing foreign runs, nothing hangs, nothing recorded is lost.

Each test crafts the file or the fault itself — a pickle whose loading creates a folder, a `.npy`
whose header says `|O`, a FIFO, a SIGKILL — and checks the outcome from outside: the marker folder
does not exist, the process ended by itself with exit 2 and one line, the files on disk load.
Whatever could crash or hang the interpreter runs in a subprocess with a timeout.
"""
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

import ppddpm


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ppddpm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(res, *needles):
    """Exit 2, no traceback, exactly one line on stderr containing every needle."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


class _MakesAFolder:
    """Unpickling this calls os.mkdir(path): the stand-in for "runs a command"."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def crafted_pickle(file, marker, **extra):
    file.write_bytes(pickle.dumps({"unet": _MakesAFolder(marker), **extra}, protocol=2))
    return file


# --------------------------------------------------------------------------- 1. trust boundary

def test_a_crafted_pickled_checkpoint_runs_nothing_on_resume(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    crafted_pickle(out / "checkpoint.pdparams", marker, step=1)
    res = cli("train", "--resume", "--steps", 2, "--out", out, "--quiet")
    one_line_error(res, "pickled checkpoint", "--trust-pickle")
    assert not marker.exists()
    res = cli("train", "--resume", "--trust-pickle", "--steps", 2, "--out", out, "--quiet")
    assert marker.exists(), "the payload is live: trusting the file runs it (so the refusal above is what saved us)"
    one_line_error(res, "not a readable ppddpm checkpoint")


def test_checkpoints_are_safetensors_with_json_and_no_pickle(tmp_path):
    """The checkpoint's header is parsed here by hand (the safetensors layout: 8-byte little-endian
    length, then JSON); every entry is a plain numeric tensor and the training state is JSON."""
    from ppddpm.model.training import TrainConfig, train

    train(TrainConfig(output_dir=str(tmp_path / "m"), steps=2, batch_size=4, checkpoint_every=2), progress=False)
    raw = (tmp_path / "m" / "checkpoint.safetensors").read_bytes()
    assert not (tmp_path / "m" / "checkpoint.pdparams").exists()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    state = json.loads(header.pop("__metadata__")["ppddpm"])
    assert state["step"] == 2 and len(state["losses"]) == 2 and state["config"]["resolution"] == 8
    assert {v["dtype"] for v in header.values()} <= {"F32", "F64", "I64", "U32"}
    assert any(k.startswith("unet/") for k in header) and any(k.startswith("ema/") for k in header)
    assert b"\x80\x02" not in raw[8:8 + n]                              # no pickle opcode in the header


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable checkpoint"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":", "not a readable checkpoint"),        # truncated
    ("foreign", "not a ppddpm training checkpoint"),
])
def test_truncated_empty_or_foreign_checkpoints_are_one_error(tmp_path, content, message):
    from safetensors.numpy import save_file

    from ppddpm.errors import InputError
    from ppddpm.model.training import TrainConfig, train

    out = tmp_path / "o"
    out.mkdir()
    if content == "foreign":
        save_file({"weight": np.zeros((2, 2), np.float32)}, str(out / "checkpoint.safetensors"))
    else:
        (out / "checkpoint.safetensors").write_bytes(content)
    with pytest.raises(InputError, match=message):
        train(TrainConfig(output_dir=str(out), steps=2, batch_size=4), resume=True, progress=False)


def test_resume_with_another_resolution_or_width_is_refused(tmp_path):
    from ppddpm.model.training import TrainConfig, train

    out = str(tmp_path / "r")
    train(TrainConfig(output_dir=out, steps=2, batch_size=4, checkpoint_every=2), progress=False)
    with pytest.raises(ValueError, match="trained with resolution 8, this run asks for 16"):
        train(TrainConfig(output_dir=out, resolution=16, steps=4, batch_size=4), resume=True, progress=False)
    with pytest.raises(ValueError, match="trained with block_out_channels"):
        train(TrainConfig(output_dir=out, block_out_channels=(16, 32), steps=4, batch_size=4), resume=True,
              progress=False)


def test_a_pickled_checkpoint_of_ppddpm_0_2_resumes_only_when_trusted(tmp_path):
    """The old format (paddle.save of the state dict) still resumes with trust_pickle=True, to the
    same losses as a resume from the new format."""
    import paddle

    from ppddpm.errors import Untrusted
    from ppddpm.model.training import TrainConfig, read_checkpoint, train

    cfg = lambda: TrainConfig(output_dir=str(tmp_path / "a"), steps=4, batch_size=4, checkpoint_every=2,  # noqa
                              stop_at=2)
    train(cfg(), progress=False)
    ckpt = read_checkpoint(tmp_path / "a" / "checkpoint.safetensors")
    old = dict(ckpt, unet={k: paddle.to_tensor(v) for k, v in ckpt["unet"].items()})
    (tmp_path / "b").mkdir()
    paddle.save(old, str(tmp_path / "b" / "checkpoint.pdparams"))
    more = lambda name, **kw: train(TrainConfig(output_dir=str(tmp_path / name), steps=4, batch_size=4,  # noqa
                                                checkpoint_every=2), resume=True, progress=False, **kw)
    with pytest.raises(Untrusted, match="pickled checkpoint"):
        more("b")
    assert more("b", trust_pickle=True).losses == more("a").losses
    assert (tmp_path / "b" / "checkpoint.safetensors").exists()       # the next checkpoint is safetensors


def test_a_model_folder_with_pickled_weights_is_refused_unless_trusted(tmp_path, unet):
    from ppdiffusers import DDPMPipeline

    from ppddpm.errors import Untrusted
    from ppddpm.model.loading import load_pipeline
    from ppddpm.model.builders import ddpm_scheduler

    folder = tmp_path / "pickled"
    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()).save_pretrained(str(folder), safe_serialization=False)
    assert (folder / "unet" / "model_state.pdparams").exists()
    with pytest.raises(Untrusted, match="model_state.pdparams are pickled"):
        load_pipeline(folder)
    trusted = load_pipeline(folder, trust_pickle=True)
    for (k, a), (_, b) in zip(trusted.unet.state_dict().items(), unet.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), k
    marker = tmp_path / "pwned"
    crafted_pickle(folder / "unet" / "model_state.pdparams", marker)
    one_line_error(cli("sample", "--model", folder, "--steps", 2, "--out", tmp_path / "s", "--quiet"),
                   "pickled", "--trust-pickle")
    assert not marker.exists()


def test_the_bundled_model_is_safetensors_and_loads_under_the_guard():
    from ppddpm.model.loading import BUNDLED_DIR, load_pipeline

    assert [p.name for p in (BUNDLED_DIR / "unet").iterdir() if "model" in p.name] == \
        ["diffusion_paddle_model.safetensors"]
    assert load_pipeline().unet.config.sample_size == 8


@pytest.fixture
def stream(pipe, tmp_path):
    """A small streamed run on disk, complete."""
    ppddpm.sample_trajectory(pipe, seed=2, num_inference_steps=6, store="disk", path=tmp_path / "stream")
    return tmp_path / "stream"


def _npy_header(path, descr, shape):
    """Rewrite a .npy's header in place (same length) to announce another dtype / shape."""
    raw = bytearray(path.read_bytes())
    (hlen,) = struct.unpack("<H", raw[8:10])
    text = repr({"descr": descr, "fortran_order": False, "shape": shape})
    raw[10:10 + hlen] = (text + " " * (hlen - 1 - len(text)) + "\n").encode("latin1")
    path.write_bytes(bytes(raw))


def test_an_object_header_in_a_stream_is_refused_not_mapped(stream, tmp_path):
    """`|O` mapped as pointers crashes the reader with SIGSEGV: `ppddpm grid` in a subprocess must
    end with exit 2 and one line instead."""
    _npy_header(stream / "prev_sample.npy", "|O", (6, 1, 1, 8, 8))
    res = cli("grid", stream, "--out", tmp_path / "g", timeout=120)
    one_line_error(res, "not a ppddpm stream array", "|O")


def test_a_fifo_in_place_of_a_stream_array_does_not_hang(stream, tmp_path):
    (stream / "prev_sample.npy").unlink()
    os.mkfifo(stream / "prev_sample.npy")
    res = cli("grid", stream, "--out", tmp_path / "g", timeout=60)
    one_line_error(res, "FIFO")
    os.mkfifo(tmp_path / "run.npz")
    one_line_error(cli("grid", tmp_path / "run.npz", "--out", tmp_path / "g", timeout=60), "FIFO")


@pytest.mark.parametrize("mutate,message", [
    (lambda meta, arrays: meta.__setitem__("fields", "prev_sample"), "fields must be a list"),
    (lambda meta, arrays: arrays.__setitem__("timesteps", np.array(["a", "b"])), "timesteps is"),
    (lambda meta, arrays: arrays.__setitem__("prev_sample", np.zeros(3, np.float32)), "field prev_sample is"),
    (lambda meta, arrays: arrays.__setitem__("prev_sample", np.array("text")), "field prev_sample is"),
])
def test_malformed_npz_metadata_or_fields_are_one_error(pipe, tmp_path, mutate, message):
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3).save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["__ppddpm_meta__"]))
    mutate(meta, arrays)
    arrays["__ppddpm_meta__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ppddpm.TrajectoryError, match=message):
        ppddpm.Trajectory.load(tmp_path / "bad.npz")


def test_npz_metadata_that_is_a_list_and_a_two_column_steps_file_are_one_error(stream, tmp_path):
    np.savez(tmp_path / "list.npz", __ppddpm_meta__=np.array(json.dumps([1, 2])), timesteps=np.arange(2))
    with pytest.raises(ppddpm.TrajectoryError, match="not a ppddpm trajectory"):
        ppddpm.Trajectory.load(tmp_path / "list.npz")
    np.save(stream / "steps.npy", np.zeros((6, 2)))
    with pytest.raises(ppddpm.TrajectoryError, match="expected floats with 2 dimensions"):
        ppddpm.Trajectory.load(stream)


@pytest.mark.parametrize("content,message", [
    ("not json {", "not JSON"),
    ('{"reference": "posterior"}', "it needs variants"),
    ("[1, 2]", "it needs variants"),
])
def test_view_ab_that_is_not_an_ab_report_is_one_error(pipe, tmp_path, content, message):
    from ppddpm.errors import BadValue
    from ppddpm.pictures.explorer import explore

    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3)
    (tmp_path / "ab.json").write_text(content)
    with pytest.raises(BadValue, match=message):
        explore(traj, ab=tmp_path / "ab.json")
    if content.startswith("not json"):
        traj.save(tmp_path / "run.npz")
        one_line_error(cli("view", tmp_path / "run.npz", "--ab", tmp_path / "ab.json", "--out", tmp_path / "v.html"),
                       "not an A/B report: not JSON")


# --------------------------------------------------------------------------- 3. crash-consistent streams

# SIGKILL / SIGTERM at random moments of real streamed runs: tests/test_hostile_files.py (issue 32)


FILL_DISK_EVERY_10 = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import ppddpm
from ppdiffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained(sys.argv[1]); pipe.set_progress_bar_config(disable=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=400, every=2, store="disk", path=sys.argv[2])
except OSError as exc:
    print(exc)
"""


def test_the_kept_count_after_a_full_disk_is_the_count_that_loads(tmp_path, saved_pipe_dir):
    import re

    res = subprocess.run([sys.executable, "-c", FILL_DISK_EVERY_10, str(saved_pipe_dir), str(tmp_path / "full")],
                         capture_output=True, text=True, timeout=300)
    said = re.search(r"the (\d+) steps written before are kept", res.stdout)
    assert said, res.stdout + res.stderr
    loaded = ppddpm.Trajectory.load(tmp_path / "full")
    assert len(loaded) == int(said.group(1)) > 0


# --------------------------------------------------------------------------- 4. one writer per output

HOLD_LOCK = r"""
import sys, time
from ppddpm._io import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    import signal

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_error(cli("sample", "--steps", 2, "--out", out, "--quiet"),
                       f"is being written by another ppddpm run (pid {holder.pid})")
        assert not list(out.glob("*.png")) and not list(out.glob("trajectory*"))
        (out / ".sample.png.x1y2.part.png").write_bytes(b"half")          # a save the holder never finished
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert (out / ".ppddpm.lock").read_text().strip() == str(holder.pid)   # left behind by the dead writer
    res = cli("schedule", "--out", out)
    assert res.returncode == 0, res.stderr
    assert (out / "schedule.png").exists()
    assert not (out / ".sample.png.x1y2.part.png").exists()                 # a dead writer's leftover, removed
    assert not (out / ".ppddpm.lock").exists()                              # released at the end


def test_finished_outputs_are_overwritten_only_with_force(tmp_path, saved_pipe_dir):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "ab.json").write_text('{"mine": 1}')
    args = ("ab", "--model", saved_pipe_dir, "--steps", 2, "--variants", "posterior,direct", "--out", tmp_path / "ab",
            "--quiet")
    one_line_error(cli(*args), "ab.json exists", "--force")
    assert (tmp_path / "ab" / "ab.json").read_text() == '{"mine": 1}'
    assert cli(*args, "--force").returncode == 0
    assert json.loads((tmp_path / "ab" / "ab.json").read_text())["variants"] == ["posterior", "direct"]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "trajectory_seed777.npz").write_bytes(b"earlier")
    one_line_error(cli("sample", "--model", saved_pipe_dir, "--steps", 2, "--out", tmp_path / "s", "--quiet"),
                   "trajectory_seed777.npz exists", "--force")
    assert (tmp_path / "s" / "trajectory_seed777.npz").read_bytes() == b"earlier"


@pytest.mark.parametrize("command", [["train", "--steps", "1"], ["demo", "--steps", "1"],
                                     ["patches", "apply", "--to"]])
def test_an_out_that_is_a_file_is_one_error(tmp_path, command):
    (tmp_path / "file").write_text("mine")
    args = command + [tmp_path / "file"] if command[-1] == "--to" else command + ["--out", tmp_path / "file"]
    one_line_error(cli(*args), "is a file")
    assert (tmp_path / "file").read_text() == "mine"


def test_an_out_that_cannot_be_written_is_one_error(tmp_path):
    """/proc refuses new folders even to root (a chmod'ed folder would not stop root)."""
    one_line_error(cli("schedule", "--out", "/proc/ppddpm-out"), "cannot be written")


# --------------------------------------------------------------------------- 5-6. values and resources

def run_main(argv, capsys):
    """`ppddpm ARGV` in this process: (exit status, stderr)."""
    from ppddpm.cli.main import main

    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:                     # argparse's usage errors
        status = exc.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["sample", "--scheduler", "ddim", "--eta", "2"], "--eta takes a number ≥ 0 and ≤ 1"),
    (["sample", "--scheduler", "ddim", "--eta", "inf"], "--eta takes a number ≥ 0 and ≤ 1"),
    (["sample", "--seed", "99999999999999999999"], "--seed takes non-negative integers up to 4294967295"),
    (["train", "--seed", "99999999999999999999"], "--seed must be at most 4294967295"),
    (["train", "--lr", "inf"], "--lr takes a number > 0, finite"),
    (["train", "--ema-decay", "nan"], "--ema-decay takes a finite number"),
    (["ab", "--seed", "0-99999999"], "more than 10000 seeds"),
    (["eval", "--n", "100000000"], "--n must be at most 100000"),
    (["sample", "--batch-size", "10000000"], "--batch-size must be at most 4096"),
    (["animate", "run.npz", "--fps", "inf"], "--fps takes a number > 0 and ≤ 60"),
    (["ab", "--variants", "posterior,ddim(eta=-1.0)"], "eta must lie in [0, 1], got -1"),
])
def test_values_that_make_nan_or_exhaust_memory_are_one_line(argv, message, capsys):
    status, err = run_main(argv, capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_ddim_variant_with_eta_out_of_range_is_refused_unless_it_declares_its_range():
    from ppddpm.variants.ddim import ddim_written_step
    from ppddpm.variants.registry import get_variant, register_variant, unregister_variant

    for spec in ("ddim(eta=-1.0)", "ddim(eta=2.0)", "ddim-written(eta=1e999)"):
        with pytest.raises(ValueError, match="eta must"):
            get_variant(spec)
    register_variant("wide-eta", families=("ddim",), scheduler="DDIMScheduler",
                     ranges={"eta": (0.0, 2.0)})(ddim_written_step)
    try:
        assert get_variant("wide-eta(eta=1.5)").arguments == {"eta": 1.5}
    finally:
        unregister_variant("wide-eta")


def test_animate_fps_that_overflows_a_gif_frame_is_one_line(pipe, tmp_path, capsys):
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3).save(tmp_path / "run.npz")
    status, err = run_main(["animate", tmp_path / "run.npz", "--fps", "1e-300", "--out", tmp_path / "a"], capsys)
    assert status == 2 and "fps must be in [0.01, 60]" in err and len(err.strip().splitlines()) == 1, err


def test_forward_on_a_folder_or_a_non_image_is_one_line(tmp_path, capsys):
    (tmp_path / "not.png").write_text("text")
    for image, message in ((tmp_path, "is a folder"), (tmp_path / "not.png", "is not an image PIL can read")):
        status, err = run_main(["forward", "--image", image, "--out", tmp_path / "f"], capsys)
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_schedule_of_3e8_timesteps_is_refused_before_it_is_built(tmp_path, saved_pipe_dir, capsys):
    import shutil

    shutil.copytree(saved_pipe_dir, tmp_path / "m")
    config = tmp_path / "m" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), num_train_timesteps=300_000_000)))
    status, err = run_main(["schedule", "--model", tmp_path / "m", "--out", tmp_path / "s"], capsys)
    assert status == 2 and "num_train_timesteps must be an integer from 1 to 100000" in err, err


DISK_FULL_AT_SAVE = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))       # the picture does not fit: the disk is "full"
from ppddpm.cli.main import main
sys.exit(main(["schedule", "--out", sys.argv[1]]))
"""


def test_a_full_disk_at_the_final_save_is_one_line_and_leaves_no_part_file(tmp_path):
    res = subprocess.run([sys.executable, "-c", DISK_FULL_AT_SAVE, str(tmp_path / "s")], capture_output=True,
                         text=True, timeout=300)
    one_line_error(res, "writing the output failed: File too large")
    assert not list((tmp_path / "s").glob("*")), list((tmp_path / "s").iterdir())


# --------------------------------------------------------------------------- 7. distributed runs end as one

def test_nproc_beyond_the_cores_is_refused_unless_oversubscribed(capsys):
    cores = len(os.sched_getaffinity(0))
    status, err = run_main(["ab", "--nproc", cores + 98, "--steps", 2], capsys)
    assert status == 2 and f"--nproc {cores + 98} is more than the {cores} CPU cores" in err, err
    assert len(err.strip().splitlines()) == 1


def _ranks_of(tag: str) -> list:
    """Pids of the processes whose environment carries `tag` (the test's own TMPDIR)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if f"TMPDIR={tag}".encode() in fh.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _start_launch(tmp_path, saved_pipe_dir):
    """A real 2-rank gloo `ppddpm ab --nproc 2`, long enough to be caught mid-work; returns the parent
    once both ranks are at work (their scratch output files exist)."""
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "ab", "--model", str(saved_pipe_dir), "--seed", "0-7",
                             "--steps", "1000", "--mode", "free", "--seed-batch", "1", "--nproc", "2", "--out",
                             str(tmp_path / "out"), "--quiet"], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while len(list(tmp.glob("ppddpm-launch-*/rank*.out"))) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.1)
    time.sleep(2)                                    # at work: loading done, sampling under way
    assert len(_ranks_of(str(tmp))) >= 3             # the launcher and two ranks
    return proc, tmp


@pytest.mark.xdist_group("paddle-launch")      # one gloo launch at a time (each takes two cores)
def test_ctrl_c_on_a_two_rank_run_stops_every_rank_before_reporting(tmp_path, saved_pipe_dir):
    import signal
    import time

    proc, tmp = _start_launch(tmp_path, saved_pipe_dir)
    proc.send_signal(signal.SIGINT)
    t0 = time.time()
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 15, "the ranks took more than a few seconds to end"
    assert proc.returncode == 130 and "the 2 ranks were stopped" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert _ranks_of(str(tmp)) == []                 # none left when the failure is reported
    assert list(tmp.iterdir()) == []                 # scratch folder removed
    time.sleep(3)
    assert not (tmp_path / "out" / "ab.json").exists()


@pytest.mark.xdist_group("paddle-launch")      # one gloo launch at a time (each takes two cores)
def test_a_killed_parent_takes_its_ranks_and_scratch_with_it(tmp_path, saved_pipe_dir):
    import time

    proc, tmp = _start_launch(tmp_path, saved_pipe_dir)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 20
    while (_ranks_of(str(tmp)) or list(tmp.iterdir())) and time.time() < deadline:
        time.sleep(0.2)
    assert _ranks_of(str(tmp)) == [], "ranks outlived their parent"
    assert list(tmp.iterdir()) == []
    assert not (tmp_path / "out" / "ab.json").exists()
