"""ppddpm.record / sample_trajectory / Trajectory: the recording core (issue: foundation)."""
import re
import threading

import numpy as np
import paddle
import pytest
from conftest import assert_is_the_reference_step, interrupted_after, reference_sigma, reference_x0
from ppdiffusers import DDPMPipeline, DDPMScheduler

import ppddpm
from ppddpm.model.builders import ddpm_scheduler
from ppddpm.storage.trajectory import to_pil
from hand_loop import hand_loop


@pytest.fixture(scope="module")
def hand_runs(unet):
    """Hand-written loops for seed 777 at 1000 and at 50 steps (computed once)."""
    return {steps: hand_loop(unet, ddpm_scheduler(), 777, steps, scaled=False) for steps in (1000, 50)}


@pytest.mark.parametrize("steps", [1000, 50])
@pytest.mark.parametrize("every", [1, 50])
def test_recorder_equals_hand_written_loop_bitwise(pipe, hand_runs, steps, every):
    hand = hand_runs[steps]
    traj = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=steps, every=every)
    keep = ppddpm.kept_steps(steps, every)
    np.testing.assert_array_equal(traj.timesteps, hand.timesteps[keep])
    # bitwise: same seed, same generator, same float32 operations
    assert np.array_equal(traj.prev_sample, hand.prev_sample[keep])
    assert np.array_equal(traj.pred_original_sample, hand.pred_original_sample[keep])
    assert traj.prev_sample.dtype == np.float32 and traj.prev_sample.shape == (len(keep), 1, 1, 8, 8)


def test_last_recorded_prev_sample_is_what_the_pipeline_turns_into_images(pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=20, batch_size=2, every=7)
    assert traj.timesteps[-1] == 0
    rebuilt = to_pil(traj.prev_sample[-1])
    assert len(traj.images) == 2
    for mine, theirs in zip(rebuilt, traj.images):
        assert np.array_equal(np.asarray(mine), np.asarray(theirs))


def test_every_keeps_every_kth_step_and_always_the_last():
    assert ppddpm.kept_steps(1000, 50).tolist() == list(range(49, 1000, 50))      # 20 steps, t = 950 … 0
    assert ppddpm.kept_steps(10, 3).tolist() == [2, 5, 8, 9]
    assert ppddpm.kept_steps(10, 10).tolist() == [9]
    assert ppddpm.kept_steps(10, 1000).tolist() == [9]
    assert ppddpm.kept_steps(1, 1).tolist() == [0]


def test_every_larger_than_the_run_records_only_the_last_step(pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=10, every=1000)
    assert traj.timesteps.tolist() == [0]


def test_what_led_to_each_step_is_recorded_and_reproduces_it(pipe):
    """x_{t-1} = μ̃(clip(x̂_0(x_t, ε̂)), x_t) + σ_t z, recomputed in float64 (`ppddpm.reference`) from the
    recorded x_t, ε̂ and z, gives the recorded x̂_0, σ_t and x_{t-1} to float32 rounding (conftest's bounds)."""
    traj = ppddpm.sample_trajectory(pipe, seed=5, num_inference_steps=30, every=1, fields="all")
    sched = pipe.scheduler
    for i, t in enumerate(traj.timesteps):
        raw, clipped, x0_error = reference_x0(sched, traj.sample[i], traj.model_output[i], t)
        assert np.abs(traj.pred_original_sample_unclipped[i] - raw).max() <= x0_error     # eq. (15)
        assert np.abs(traj.pred_original_sample[i] - clipped).max() <= x0_error           # clip
        sigma, sigma_error = reference_sigma(sched, t)
        assert traj.noise_std[i] == pytest.approx(sigma, rel=sigma_error, abs=0)
        assert_is_the_reference_step(traj.prev_sample[i], sched, "posterior", traj.sample[i], traj.model_output[i],
                                     traj.noise[i], t)                                   # eq. (7) + σ_t z
        if i + 1 < len(traj):
            assert np.array_equal(traj.sample[i + 1], traj.prev_sample[i])   # x_{t-1} feeds the next step
    assert not traj.noise[-1].any()       # the last step adds no noise
    # with a random UNet |x̂_0| > 1 almost everywhere early on: clipping fires
    assert traj.clip_fraction[0] > 0.5 and 0 <= traj.clip_fraction.min()


def test_default_fields_store_only_x_t_and_x0(pipe):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=10)
    assert traj.fields == ("prev_sample", "pred_original_sample")
    with pytest.raises(KeyError, match="'noise' was not recorded.*fields="):
        traj.noise


def test_only_that_scheduler_instance_is_touched(pipe, unet):
    other = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    class_step = DDPMScheduler.__dict__["step"]
    with ppddpm.record(pipe) as traj:
        assert "step" in pipe.scheduler.__dict__
        assert "step" not in other.scheduler.__dict__
        assert DDPMScheduler.__dict__["step"] is class_step
        other(generator=paddle.Generator().manual_seed(9, generator_name="other-9"), num_inference_steps=5)
    assert len(traj) == 0                     # the other pipeline's steps were not recorded
    assert "step" not in pipe.scheduler.__dict__


def test_step_restored_and_partial_steps_kept_when_the_run_raises(pipe, tmp_path):
    with pytest.raises(KeyboardInterrupt), interrupted_after(pipe, 7):
        with ppddpm.record(pipe, every=2) as traj:
            pipe(generator=paddle.Generator().manual_seed(2, generator_name="kbd-2"), num_inference_steps=20)
    assert "step" not in pipe.scheduler.__dict__
    assert traj.timesteps.tolist() == [900, 800, 700]        # steps 2, 4, 6 of 20 (t = 950, 900, …) were kept
    assert not traj.complete
    loaded = ppddpm.Trajectory.load(traj.save(tmp_path / "partial.npz"))
    assert np.array_equal(loaded.prev_sample, traj.prev_sample) and not loaded.complete


def test_two_pipelines_recorded_at_once_in_threads(unet):
    pipes = [DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()) for _ in range(2)]
    results = {}

    def run(k, steps, batch):
        results[k] = ppddpm.sample_trajectory(pipes[k], seed=k, num_inference_steps=steps, batch_size=batch)

    threads = [threading.Thread(target=run, args=a) for a in ((0, 30, 1), (1, 45, 2))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results[0].prev_sample.shape[:2] == (30, 1) and results[1].prev_sample.shape[:2] == (45, 2)
    for traj in results.values():        # each recorded exactly its own run, start to end
        assert traj.complete and traj.timesteps[-1] == 0
        rebuilt = to_pil(traj.prev_sample[-1])
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(traj.images, rebuilt))
    assert all("step" not in p.scheduler.__dict__ for p in pipes)


def test_nested_records_on_two_pipelines(unet):
    a, b = (DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()) for _ in range(2))
    with ppddpm.record(a) as ta, ppddpm.record(b, every=5) as tb:
        a(generator=paddle.Generator().manual_seed(1, generator_name="nest-a"), num_inference_steps=10)
        b(generator=paddle.Generator().manual_seed(1, generator_name="nest-b"), num_inference_steps=10)
    assert len(ta) == 10 and len(tb) == 2
    assert np.array_equal(ta.prev_sample[[4, 9]], tb.prev_sample)      # same seed, same model


def test_save_load_round_trip_with_metadata(pipe, tmp_path):
    traj = ppddpm.sample_trajectory(pipe, seed=11, num_inference_steps=12, every=4, fields="all")
    path = traj.save(tmp_path / "run.npz")
    back = ppddpm.Trajectory.load(path)
    for name in ppddpm.FIELDS:
        assert np.array_equal(back.field(name), traj.field(name))
    assert back.columns == traj.columns
    for name in traj.columns:                      # every per-step column, by name: t, call, stage, noise std, …
        assert np.array_equal(back.column(name), traj.column(name)), name
    meta = back.meta
    assert meta["seed"] == 11 and meta["num_inference_steps"] == 12 and meta["every"] == 4
    assert meta["scheduler_config"]["clip_sample"] is True and meta["variant"] == "ppdiffusers"
    assert set(meta["versions"]) == {"ppddpm", "ppdiffusers", "paddle"}
    assert back.complete and [im.size for im in back.images] == [(8, 8)]


def test_save_is_atomic_and_refuses_other_suffixes(pipe, tmp_path):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5)
    with pytest.raises(ValueError, match=r"\.npz"):
        traj.save(tmp_path / "run.npy")
    traj.save(tmp_path / "run.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]        # no temporary left behind


def test_load_rejects_files_that_are_not_trajectories(tmp_path, pipe):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ppddpm.TrajectoryError, match="not a ppddpm trajectory"):
        ppddpm.Trajectory.load(tmp_path / "other.npz")
    good = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=5).save(tmp_path / "good.npz")
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ppddpm.TrajectoryError, match="truncated or corrupt"):
        ppddpm.Trajectory.load(tmp_path / "cut.npz")
    (tmp_path / "text.npz").write_text("hello")       # not "pickled data": it is not a zip at all
    with pytest.raises(ppddpm.TrajectoryError, match="not a ppddpm trajectory: not a .npz \\(zip\\) archive"):
        ppddpm.Trajectory.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        ppddpm.Trajectory.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("every", [0, -1, 1.5, True, "50"])
def test_every_must_be_a_positive_integer(pipe, every):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        with ppddpm.record(pipe, every=every):
            pass


def test_unknown_field_is_named_with_the_choices(pipe):
    with pytest.raises(ValueError, match="unknown field.*'x_t'.*choose from prev_sample"):
        with ppddpm.record(pipe, fields=("x_t",)):
            pass


def test_one_record_block_holds_one_run(pipe):
    with pytest.raises(RuntimeError, match="one sampling run"):
        with ppddpm.record(pipe):
            for k in range(2):
                pipe(generator=paddle.Generator().manual_seed(k, generator_name=f"twice-{k}"), num_inference_steps=3)


def test_recording_pipeline_returns_the_articles_triple(saved_pipe_dir):
    pipe = ppddpm.RecordingDDPMPipeline.from_pretrained(str(saved_pipe_dir))
    assert isinstance(pipe, ppddpm.RecordingDDPMPipeline)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(seed=777, num_inference_steps=100)
    images = output[0].images
    all_images, all_x_0 = output[1], output[2]
    assert len(all_images) == len(all_x_0) == 100
    # the article's plotting code, verbatim but for the range (100 steps here)
    for i in range(1, 100, 50):
        img = all_images[i][0].resize((64, 64))
        assert img.size == (64, 64)
    assert np.array_equal(np.asarray(all_images[-1][0]), np.asarray(images[0]))
    plain = ppddpm.sample_trajectory(pipe, seed=777, num_inference_steps=100)
    assert np.array_equal(pipe.trajectory.prev_sample, plain.prev_sample)


def test_float16_store_halves_memory(pipe):
    full = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=10)
    half = ppddpm.sample_trajectory(pipe, seed=4, num_inference_steps=10, dtype="float16")
    assert half.prev_sample.dtype == np.float16
    assert half.prev_sample.nbytes * 2 == full.prev_sample.nbytes
    np.testing.assert_allclose(half.prev_sample, full.prev_sample, rtol=1e-3, atol=1e-3)  # float16: 11-bit mantissa


def test_a_file_written_by_ppddpm_0_1_still_loads():
    """tests/data/trajectory-0.1.0.npz: 5 DDPM steps of a random 8x8 UNet, every=2, all fields,
    saved by ppddpm 0.1.0 (no scheduler name, no stages)."""
    from pathlib import Path

    old = ppddpm.Trajectory.load(Path(__file__).parent / "data" / "trajectory-0.1.0.npz")
    assert old.meta["versions"]["ppddpm"] == "0.1.0" and old.complete
    assert old.timesteps.dtype == np.int64 and old.timesteps.tolist() == [600, 200, 0]
    assert old.scheduler == "DDPMScheduler" and old.stages.tolist() == ["", "", ""]
    assert old.prev_sample.shape == (3, 1, 1, 8, 8) and set(old.fields) == set(ppddpm.FIELDS)
    assert old.noise_std[-1] == 0 and not old.noise[-1].any()
    with pytest.warns(DeprecationWarning, match="noise_std"):
        assert np.array_equal(old.sigma, old.noise_std)          # its name of then, still read
    assert old.clip_fraction.shape == (3, 1)                     # the batch's share: 0.1 kept no other


def test_columns_a_0_1_file_lacks_are_derived_from_its_metadata_or_named_as_missing():
    """tests/data/trajectory-0.1.0.npz (5 DDPM steps of 1000 training steps, every=2): which calls its rows
    are follows from `every`; ᾱ_t and ᾱ_prev from its config, here against the DDPM paper's linear β
    schedule (β_t from 1e-4 to 0.02, ᾱ_t = Π (1 − β_s)) in float64 written out; σ_t it never had."""
    from pathlib import Path

    from ppddpm.errors import Unknown

    old = ppddpm.Trajectory.load(Path(__file__).parent / "data" / "trajectory-0.1.0.npz")
    assert old.column("call").tolist() == [1, 3, 4]                        # calls 2, 4 and the last of 5
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    t, prev = np.array([600, 200, 0]), np.array([400, 0, -1])              # 5 steps: t = 800, 600, …, 0
    np.testing.assert_allclose(old.column("alpha_bar"), alpha_bar[t], rtol=1e-12)
    np.testing.assert_allclose(old.column("alpha_bar_prev"), np.where(prev >= 0, alpha_bar[prev], 1.0), rtol=1e-12)
    with pytest.raises(Unknown, match="column .noise_level. is not in this trajectory"):
        old.column("noise_level")


def test_a_trajectory_names_its_scheduler_and_full_config(pipe, tmp_path):
    traj = ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=4)
    again = ppddpm.Trajectory.load(traj.save(tmp_path / "t.npz"))
    assert again.scheduler == "DDPMScheduler" and again.meta["sampler"] == "ddpm"
    config = again.meta["scheduler_config"]
    assert config["clip_sample"] is True and config["variance_type"] == "fixed_small"
    assert DDPMScheduler(**{k: v for k, v in config.items() if not k.startswith("_")}).config.beta_end == 0.02


@pytest.mark.parametrize("kwargs,message", [
    (dict(seed=True), "seed must be a non-negative integer, got True"),
    (dict(num_inference_steps=True), "num_inference_steps must be a positive integer, got True"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(every=2.0), "every must be a positive integer (1 records every step, 50 every 50th), got 2.0"),
])
def test_integer_arguments_are_checked_one_way(pipe, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ppddpm.sample_trajectory(pipe, **kwargs)


def test_progress_is_shown_where_someone_watches(monkeypatch):
    from ppddpm._progress import wanted

    assert wanted(True) and not wanted(False)
    assert not wanted(None)                                   # under pytest
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setitem(__import__("sys").modules, "ipykernel", object())
    assert wanted(None)                                       # in a notebook kernel
    monkeypatch.setenv("PPDDPM_PROGRESS", "0")
    assert not wanted(None)


def test_a_stream_stopped_before_its_first_recorded_step_loads_empty(pipe, tmp_path):
    """every=10: the field files come with call 9's frames; Ctrl-C at call 3 leaves meta.json and
    steps.npy only, and the folder still loads (no steps), as the CLI's interrupt message promises."""
    with pytest.raises(KeyboardInterrupt), interrupted_after(pipe, 3):
        ppddpm.sample_trajectory(pipe, seed=0, num_inference_steps=20, every=10, store="disk", path=tmp_path / "s")
    assert not (tmp_path / "s" / "prev_sample.npy").exists()
    partial = ppddpm.Trajectory.load(tmp_path / "s")
    assert len(partial) == 0 and not partial.complete


def test_a_trajectory_writer_streams_what_it_is_given_as_numpy_reads_it(tmp_path):
    """The writer the recorder hands its arrays to, used by hand: the folder it streams holds the
    frames and numbers given, read back by numpy itself (np.load, json) — and loads as a Trajectory."""
    import json

    from ppddpm.storage.writer import TrajectoryWriter

    frames = np.random.RandomState(0).randn(3, 2, 1, 4, 4).astype(np.float32)
    writer = TrajectoryWriter(("prev_sample",), {"seed": 1}, store="disk", path=tmp_path / "run")
    writer.start(rows=3, columns=("timesteps", "noise_std", "stages"), sample_columns=("clip_fraction",))
    writer.allocate({"prev_sample": (2, 1, 4, 4)}, batch=2)
    for k, (t, stage) in enumerate([(30, ""), (20, "predictor"), (10, "corrector")]):
        writer.append({"prev_sample": frames[k]},
                      {"timesteps": t, "noise_std": 0.25 * k, "clip_fraction": [0.5, 0.25 * k], "stages": stage})
        writer.commit()
        assert json.loads((tmp_path / "run" / "meta.json").read_text())["steps_on_disk"] == k + 1
    writer.close(complete=True)
    assert np.array_equal(np.load(tmp_path / "run" / "prev_sample.npy"), frames)
    steps = np.load(tmp_path / "run" / "steps.npy")          # (t, noise std, stage code): the columns named
    assert steps.tolist() == [[30, 0.0, 0], [20, 0.25, 1], [10, 0.5, 2]]
    assert np.load(tmp_path / "run" / "clip_fraction.npy").tolist() == [[0.5, 0.0], [0.5, 0.25], [0.5, 0.5]]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["complete"] and meta["seed"] == 1 and meta["fields"] == ["prev_sample"]
    assert meta["step_columns"] == ["timesteps", "noise_std", "stages"] and meta["sample_columns"] == ["clip_fraction"]
    back = ppddpm.Trajectory.load(tmp_path / "run")
    assert back.complete and back.timesteps.tolist() == [30, 20, 10] and back.noise_std.tolist() == [0.0, 0.25, 0.5]
    assert back.stages.tolist() == ["", "predictor", "corrector"] and np.array_equal(back.prev_sample, frames)


def test_reading_a_filling_trajectory_asks_its_source_first_until_the_writer_closes():
    """`source.sync()` is how a recorder's steps still on the device reach a Trajectory read mid-run."""
    from ppddpm.storage.writer import TrajectoryWriter

    class Source:
        syncs = 0

        def sync(self):
            self.syncs += 1

    source = Source()
    writer = TrajectoryWriter(("prev_sample",), source=source)
    writer.start(rows=2)
    writer.allocate({"prev_sample": (1, 1, 2, 2)}, batch=1)
    writer.append({"prev_sample": np.ones((1, 1, 2, 2))}, {"timesteps": 5, "stages": ""})
    traj = writer.trajectory
    assert len(traj) == 1 and traj.prev_sample.tolist() == [[[[[1.0, 1.0], [1.0, 1.0]]]]]
    assert source.syncs == 2                       # one per read: the timesteps (len), the frames
    writer.close(complete=False)
    assert len(traj) == 1 and source.syncs == 2 and not traj.complete
