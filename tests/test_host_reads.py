"""Recording and compare do not read the device from the host per step (issues 14 and 22).

Every `numpy()`, `item()`, `bool()`, `float()` and `int()` of a paddle tensor makes the host wait
for the device; on a GPU each is a synchronisation. `host_reads` wraps those five methods of
`paddle.Tensor` (the outermost call only: `item()` reading through `numpy()` is one read) and
counts them during a real pipeline run, recorded and not; the first test checks the instrument.
"""
import numpy as np
import paddle
import pytest

from conftest import nan_from_t500

import ppddpm
from ppddpm.core.transfer import host_reads

STEPS = 60


def test_the_counter_sees_the_pipelines_own_reads(pipe):
    """The instrument first: ppdiffusers' DDPM loop and step read the device a few times per step
    (`if t > 0`, the progress bar, …), and the counter sees them."""
    x = paddle.ones([2])
    with host_reads() as reads:
        x.numpy(), float(x.sum()), x.sum().item(), bool(x.all()), int(x.sum())
        _ = x * 2                                             # device work: not a read
    assert sorted(name for name, _ in reads.elements()) == ["__bool__", "__float__", "__int__", "item", "numpy"]
    with host_reads() as plain:
        pipe(generator=paddle.Generator().manual_seed(0), num_inference_steps=STEPS)
    assert sum(plain.values()) >= 2 * STEPS, plain


@pytest.mark.parametrize("chunk", [None, 8])
def test_recording_every_step_adds_a_few_reads_per_chunk_not_per_step(pipe, chunk):
    with host_reads() as plain:
        pipe(generator=paddle.Generator().manual_seed(0), num_inference_steps=STEPS)
    with host_reads() as recorded:
        traj = ppddpm.sample_trajectory(pipe, seed=0, num_inference_steps=STEPS, every=1, chunk=chunk)
    added = sum(recorded.values()) - sum(plain.values())
    chunks = -(-STEPS // traj.meta["chunk"])
    fields = len(traj.fields)
    # per chunk: one read per field and one for the packed numbers (t, NaN check, clipped share),
    # and one for the chunk's σ_t (computed once its t is on the host)
    assert added <= (fields + 2) * chunks, (recorded - plain).most_common(8)     # 0.1 added ~8 per step
    assert len(traj) == STEPS and traj.complete


@pytest.mark.parametrize("mode", ["shadow", "free"])
def test_an_ab_adds_a_few_reads_per_chunk_not_per_step(pipe, mode):
    """compare's statistics (max/mean |Δ prev_sample|, max |Δ pred_original_sample|, scale, clipped
    share) stay on the device and travel a chunk of steps at a time, the final samples in one read.
    The baseline is the reads the two step formulas make by themselves (ppdiffusers' `if t > 0`,
    the variants' t as an int), each stepping its own scheduler copy through the same timesteps."""
    variants = ["posterior", "direct"]
    with host_reads() as steps_alone:
        for variant in variants:
            scheduler = ppddpm.with_config(pipe.scheduler)
            scheduler.set_timesteps(STEPS)
            x = paddle.zeros([1, 1, 8, 8])
            with ppddpm.patch_step(scheduler, variant), paddle.no_grad():
                for t in scheduler.timesteps:
                    scheduler.step(x, t, x)
    with host_reads() as ab:
        report = ppddpm.compare(pipe, variants, seed=0, num_inference_steps=STEPS, mode=mode)
    added = ab - steps_alone
    assert sum(steps_alone.values()) >= STEPS                 # the instrument sees the steps' own reads
    # the chunk of rows (60 steps: one chunk), the finals, and at the start the timesteps (one read per
    # scheduler) and ᾱ; 0.3 read each step's statistics (~6 per step)
    assert sum(added.values()) <= 8, added.most_common(8)
    assert report.max_abs_prev["direct"].shape == (STEPS, 1)


def test_chunks_are_chosen_from_the_frame_size_and_bounded():
    from ppddpm.core.transfer import MAX_CHUNK, MEMORY_BUDGET, chunk_for

    assert chunk_for(2 * 1024) == MAX_CHUNK                              # 16x16 digits: 64 steps
    big = 8 * 3 * 256 * 256 * 4                                         # x_t of a 256² batch of 8: 6 MiB
    assert chunk_for(big) == MEMORY_BUDGET // (2 * big) == 2
    assert chunk_for(10 * MEMORY_BUDGET) == 1                            # never 0


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_every_chunk_size_records_the_same_bits(pipe, chunk):
    """Frames and numbers do not depend on how they travelled: chunk 1 is a transfer per step."""
    ref = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=30, every=1, fields="all", chunk=1)
    traj = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=30, every=1, fields="all", chunk=chunk)
    for name in ppddpm.FIELDS:
        assert np.array_equal(traj.field(name), ref.field(name)), name
    for key in ("timesteps", "sigma", "clip_fraction", "stages"):
        assert np.array_equal(getattr(traj, key), getattr(ref, key)), key


def test_reading_a_trajectory_mid_run_brings_the_steps_so_far(pipe):
    """Frames wait on the device for their chunk; looking at the Trajectory during the run (here from
    a hook on the UNet, called before each step, as a notebook callback would) moves them over first."""
    seen = []
    with ppddpm.record(pipe, every=1, chunk=16) as traj:
        hook = pipe.unet.register_forward_post_hook(lambda layer, inputs, output: seen.append(len(traj)))
        try:
            pipe(generator=paddle.Generator().manual_seed(0), num_inference_steps=20)
        finally:
            hook.remove()
    assert seen == list(range(20)) and len(traj) == 20


def test_a_nan_is_reported_at_its_chunk_naming_its_first_step(pipe):
    with ppddpm.patch_step(pipe.scheduler, nan_from_t500):          # NaN from t = 500 (step 9) on
        with pytest.raises(FloatingPointError, match=r"step 9 \(t=500\)"):
            with ppddpm.record(pipe, every=1, chunk=4, on_nonfinite="raise") as traj:
                pipe(generator=paddle.Generator().manual_seed(1), num_inference_steps=20)
    # step 9 is in the chunk of steps 8-11, which reaches the host when 12-15 is sent (two buffers)
    assert len(traj) == 16 and traj.meta["first_nonfinite"] == [9, 500] and not traj.complete
