"""Nothing is lost, nothing leaks: streaming, interruption, full disks, NaN, threads, atomic saves."""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from ppdiffusers import DDPMPipeline

import ppddpm
from conftest import assert_is_the_reference_step, interrupted_after, nan_from_t500
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.core.recorder import NonFiniteWarning


def test_streamed_recording_equals_the_in_memory_one(pipe, tmp_path):
    mem = ppddpm.sample_trajectory(pipe, seed=8, num_inference_steps=60, every=3, fields="all")
    disk = ppddpm.sample_trajectory(pipe, seed=8, num_inference_steps=60, every=3, fields="all",
                                    store="disk", path=tmp_path / "run")
    back = ppddpm.Trajectory.load(tmp_path / "run")
    assert back.complete and len(back) == 20
    for name in ppddpm.FIELDS:
        assert np.array_equal(back.field(name), mem.field(name))
        assert np.array_equal(disk.field(name), mem.field(name))
    assert np.array_equal(back.timesteps, mem.timesteps) and np.array_equal(back.noise_std, mem.noise_std)
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"meta.json", "steps.npy", "clip_fraction.npy"} | {
        f"{f}.npy" for f in ppddpm.FIELDS}                 # the columns kept per sample have a file each


def test_an_interrupted_streamed_run_leaves_a_loadable_partial_trajectory(pipe, tmp_path):
    with pytest.raises(KeyboardInterrupt), interrupted_after(pipe, 13):
        ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=40, store="disk", path=tmp_path / "cut")
    partial = ppddpm.Trajectory.load(tmp_path / "cut")
    assert len(partial) == 12 and not partial.complete
    assert json.loads((tmp_path / "cut" / "meta.json").read_text())["complete"] is False
    assert "step" not in pipe.scheduler.__dict__


FILL_DISK = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # a write past the limit fails with EFBIG instead
import ppddpm
from ppdiffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained(sys.argv[1]); pipe.set_progress_bar_config(disable=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # every file may grow to 3000 bytes: the disk "fills"
try:
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=50, store="disk", path=sys.argv[2])
except OSError as exc:
    print(exc)
    sys.exit(3)
"""


def test_a_disk_that_fills_while_streaming_gives_a_clear_error_and_a_marked_partial_file(tmp_path, saved_pipe_dir):
    res = subprocess.run([sys.executable, "-c", FILL_DISK, str(saved_pipe_dir), str(tmp_path / "full")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    assert "streaming the trajectory to" in res.stdout and "File too large" in res.stdout
    assert "meta.json marks the recording incomplete" in res.stdout
    partial = ppddpm.Trajectory.load(tmp_path / "full")
    assert 0 < len(partial) < 50 and not partial.complete
    assert np.isfinite(partial.prev_sample).all()


def test_nan_from_a_broken_variant_is_detected_at_its_first_step(pipe):
    with ppddpm.patch_step(pipe.scheduler, nan_from_t500):
        with pytest.warns(NonFiniteWarning, match=r"first at step 9 \(t=500\)"):
            traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=20)
        assert traj.meta["first_nonfinite"] == [9, 500]
        assert traj.first_nonfinite() == (9, 500)
        with pytest.raises(FloatingPointError, match=r"step 9 \(t=500\)"):
            ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=20, on_nonfinite="raise")
    assert "step" not in pipe.scheduler.__dict__


def test_two_pipelines_patched_and_recorded_in_threads_do_not_interfere(unet):
    """Each thread's trajectory is its own variant's formula applied to its own recorded
    (x_t, ε̂, z), to float32 rounding of the float64 reference, at every step."""
    runs = {"direct": None, "posterior": None}
    errors = []

    def worker(variant):
        try:
            pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler(clip_sample=True))
            with ppddpm.patch_step(pipe.scheduler, variant):
                runs[variant] = (pipe.scheduler, ppddpm.sample_trajectory(
                    pipe, seed=4, num_inference_steps=40, fields="all"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in runs]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for variant, (sched, traj) in runs.items():
        assert traj.meta["variant"] == variant and "step" not in sched.__dict__
        for i, t in enumerate(traj.timesteps):
            assert_is_the_reference_step(traj.prev_sample[i], sched, variant, traj.sample[i], traj.model_output[i],
                                         traj.noise[i], t)


def test_a_failed_save_leaves_the_previous_file_intact(pipe, tmp_path, monkeypatch):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5)
    path = traj.save(tmp_path / "run.npz")
    before = path.read_bytes()

    def disk_full(file, **arrays):
        with open(file, "wb") as fh:
            fh.write(b"PK partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        traj.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]


def test_streaming_refuses_a_non_empty_folder_and_needs_a_path(pipe, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        with ppddpm.record(pipe, store="disk", path=tmp_path / "x"):
            pass
    with pytest.raises(ValueError, match="needs path="):
        with ppddpm.record(pipe, store="disk"):
            pass
    with pytest.raises(ValueError, match="store must be one of"):
        with ppddpm.record(pipe, store="cloud"):
            pass
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
