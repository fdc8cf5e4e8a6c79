"""Pictures read the run file, not the scheduler (issue 30): grids, trajectories, frames, GIFs, clip maps,
the explorer and `ppddpm view / grid / animate` work in an interpreter where paddle and ppdiffusers cannot
be imported at all (a meta-path finder refuses them), on the kinds of file the test suite writes: each
sampler kind, npz and streamed, cut short, latent with decoded frames, and files of ppddpm 0.1 and 0.4."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import interrupted_after
from ppdiffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline

import ppddpm
from ppddpm.model.builders import ddpm_scheduler, tiny_latent_pipeline

BLOCKED = r"""
import importlib.abc, json, sys, traceback

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("paddle", "ppdiffusers", "paddlenlp"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Refuse())
from ppddpm.cli.main import main
from ppddpm.pictures import explorer, plotting
from ppddpm.storage.trajectory import Trajectory

runs, out = json.loads(sys.argv[1]), sys.argv[2]
for name, path in runs.items():
    try:
        traj = Trajectory.load(path)
        plotting.plot_grid(traj, save=f"{out}/{name}-grid.png")
        if {"prev_sample", "pred_original_sample"} <= set(traj.fields):
            plotting.plot_trajectory(traj)
        plotting.animate(traj, f"{out}/{name}.gif", mp4=False, every=10)       # frames, as the GIF takes them
        plotting.plot_clip_map(traj)
        explorer.explore(traj, other=traj)
        print(name, "ok", flush=True)
    except Exception:
        print(name, "FAILED", traceback.format_exc().replace("\n", " | "), flush=True)
first = next(iter(runs.values()))
for command in (["view", first, "--out", f"{out}/cli.html"], ["grid", first, "--out", f"{out}/cli-grid"],
                ["animate", first, "--out", f"{out}/cli-gif"]):
    print(command[0], "exit", main(command), flush=True)
print("imported", sorted(m for m in sys.modules if m.split(".")[0] in ("paddle", "ppdiffusers")))
"""


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def run_files(unet, tmp_path_factory):
    """One file of each kind, written by this version (and tests/data's 0.1 file)."""
    folder = tmp_path_factory.mktemp("runs")
    ddpm = _quiet(DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()))
    files = {"ddpm-all": ppddpm.sample_trajectory(ddpm, seed=1, num_inference_steps=20, batch_size=2,
                                                  fields="all").save(folder / "ddpm.npz")}
    ddim = _quiet(DDIMPipeline(unet=unet, scheduler=ppddpm.with_config(ddpm_scheduler(), cls=DDIMScheduler)))
    files["ddim"] = ppddpm.sample_trajectory(ddim, seed=1, num_inference_steps=10, pipe_kwargs={"eta": 1.0}
                                             ).save(folder / "ddim.npz")
    for name in ("euler-ancestral", "heun"):                # σ-space; Heun with its two stages, streamed
        ppddpm.sample_trajectory(ppddpm.with_sampler(ddpm, name), seed=1, num_inference_steps=6, store="disk",
                                 path=folder / name)
        files[name] = folder / name
    with pytest.raises(KeyboardInterrupt), interrupted_after(ddpm, 30):
        ppddpm.sample_trajectory(ddpm, seed=1, num_inference_steps=1000, store="disk", path=folder / "cut")
    files["cut-short"] = folder / "cut"
    ldm = _quiet(tiny_latent_pipeline("ldm", 10))
    files["latent-decoded"] = ppddpm.sample_trajectory(ldm, seed=1, num_inference_steps=3, decode="vae"
                                                       ).save(folder / "ldm.npz")
    files["ppddpm-0.1"] = Path(__file__).parent / "data" / "trajectory-0.1.0.npz"
    files["ppddpm-0.4"] = Path(__file__).parent / "data" / "trajectory-0.4.1-heun.npz"
    return {name: str(path) for name, path in files.items()}


def test_pictures_and_the_explorer_need_no_paddle(run_files, tmp_path):
    res = subprocess.run([sys.executable, "-c", BLOCKED, json.dumps(run_files), str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert [line for line in lines if line.split()[1:2] == ["FAILED"]] == []
    assert {line.split()[0] for line in lines if line.endswith(" ok")} == set(run_files)
    assert ["view exit 0", "grid exit 0", "animate exit 0"] == [line for line in lines if " exit " in line]
    assert lines[-1] == "imported []"                      # the blocker held: nothing of paddle was loaded
    assert (tmp_path / "cli.html").stat().st_size > 10_000 and (tmp_path / "latent-decoded.gif").exists()


def test_the_blocker_does_block(tmp_path):
    """The check above can fail: code that needs ppdiffusers is refused in that interpreter."""
    script = BLOCKED.split("from ppddpm.cli.main")[0] + "import ppdiffusers\n"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "ppdiffusers is not installed here" in res.stderr
