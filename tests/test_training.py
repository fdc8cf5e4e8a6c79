"""ppddpm.train / `ppddpm train`: the article's loop for real, saved as a plain DDPMPipeline."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from ppdiffusers import DDPMPipeline

from ppddpm.model.training import TrainConfig, learning_rate, train


def test_train_from_scratch_save_reload_with_plain_ppdiffusers_and_sample(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path / "m"), resolution=8, steps=6, batch_size=8, checkpoint_every=3,
                      warmup=2)
    result = train(cfg, progress=False)
    assert len(result.losses) == 6 and all(np.isfinite(result.losses))
    assert result.losses[0] > 0.3                       # an untrained net predicts ε badly (E‖ε‖² = 1)
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "m"))
    assert type(pipe).__name__ == "DDPMPipeline" and pipe.unet.config.sample_size == 8
    pipe.set_progress_bar_config(disable=True)
    import paddle

    images = pipe(generator=paddle.Generator().manual_seed(0, generator_name="train-test"),
                  num_inference_steps=10, batch_size=2).images
    assert len(images) == 2 and images[0].size == (8, 8)
    saved = json.loads((tmp_path / "m" / "train_losses.json").read_text())
    assert saved["losses"] == result.losses and saved["config"]["steps"] == 6


def test_resume_continues_from_the_checkpoint(tmp_path):
    out = str(tmp_path / "r")
    first = train(TrainConfig(output_dir=out, resolution=8, steps=4, batch_size=4, checkpoint_every=2), progress=False)
    more = train(TrainConfig(output_dir=out, resolution=8, steps=7, batch_size=4, checkpoint_every=2), resume=True,
                 progress=False)
    assert len(more.losses) == 7 and more.losses[:4] == first.losses
    assert (first.steps_this_run, more.steps_this_run) == (4, 3)      # what the CLI reports as "this run"
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(TrainConfig(output_dir=str(tmp_path / "none"), resolution=8, steps=2), resume=True, progress=False)


def test_stop_at_ends_early_on_the_full_schedule(tmp_path):
    """stop_at=4 of steps=6 takes the first 4 steps of the 6-step run (its learning rates, not a 4-step
    cosine), checkpoints there, and a resume with stop_at=0 finishes the schedule."""
    def cfg(name, **kw):
        return TrainConfig(output_dir=str(tmp_path / name), resolution=8, batch_size=4, warmup=1, checkpoint_every=5,
                           **kw)
    full = train(cfg("full", steps=6), progress=False)
    early = train(cfg("early", steps=6, stop_at=4), progress=False)
    short = train(cfg("short", steps=4), progress=False)
    assert early.losses == full.losses[:4] and early.steps_this_run == 4
    assert early.losses[3] != short.losses[3]             # step 2's lr differs between the 6- and 4-step cosines
    record = json.loads((tmp_path / "early" / "train_losses.json").read_text())
    assert record["config"]["stop_at"] == 4 and len(record["losses"]) == 4
    with pytest.raises(ValueError, match="the checkpoint is at step 4, past where this run stops \\(3\\)"):
        train(cfg("early", steps=6, stop_at=3), resume=True, progress=False)
    rest = train(cfg("early", steps=6), resume=True, progress=False)
    assert len(rest.losses) == 6 and rest.losses[:4] == full.losses[:4] and rest.steps_this_run == 2
    assert rest.seconds_total > rest.seconds > 0          # the clock carried over the resume
    from ppddpm.model.training import read_checkpoint, write_checkpoint

    ckpt = read_checkpoint(tmp_path / "early" / "checkpoint.safetensors")
    ckpt["seconds"] = None                                # as checkpoints before ppddpm 0.2: no clock
    write_checkpoint(tmp_path / "early" / "checkpoint.safetensors", ckpt)
    assert train(cfg("early", steps=6), resume=True, progress=False).seconds_total is None
    assert json.loads((tmp_path / "early" / "train_losses.json").read_text())["seconds_total"] is None
    with pytest.raises(ValueError, match="stop_at must be 0 \\(off\\) or 1..steps \\(6\\), got 7"):
        cfg("bad", steps=6, stop_at=7).check()


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(output_dir="x", steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5)
    assert learning_rate(cfg, 99) == pytest.approx(1e-3)
    assert learning_rate(cfg, 999) == pytest.approx(1e-4, rel=1e-3)


def test_train_cli_on_a_folder_of_images(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.RandomState(0)
    for i in range(5):
        Image.fromarray(rng.randint(0, 255, (20, 30, 3), dtype=np.uint8)).save(data / f"{i}.png")
    res = subprocess.run([sys.executable, "-m", "ppddpm", "train", "--data", str(data), "--channels", "3",
                          "--resolution", "8", "--steps", "2", "--batch-size", "2", "--out", str(tmp_path / "o"),
                          "--quiet"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "trained 2 steps" in res.stdout
    assert DDPMPipeline.from_pretrained(str(tmp_path / "o")).unet.config.in_channels == 3


@pytest.mark.parametrize("args,message", [
    (["--data", "/no/such/folder", "--steps", "2"], "--data /no/such/folder: not a directory"),
    (["--resolution", "7", "--steps", "2"], "resolution 7 must be divisible by 2"),
    (["--steps", "0"], "--steps must be a positive integer"),
])
def test_train_cli_bad_input(tmp_path, args, message):
    res = subprocess.run([sys.executable, "-m", "ppddpm", "train", *args, "--out", str(tmp_path / "o"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
