"""Mistakes answered at once, sizes capped up front, and signals during start-up (issues 31.5, 32.4).

What the arguments decide (with --model's own small JSON files) is refused before paddle or a model
loads: the refusals run in one child process in which paddle, ppdiffusers and paddlenlp cannot be
imported at all (a `sys.meta_path` blocker), each must be one line on stderr and exit 2. For every
cap a value at its edge is accepted by the parser. A real `python -m ppddpm` killed by SIGTERM at
moments of its start-up ends with the one line and exit 143.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ppddpm.cli.main import build_parser
from ppddpm.errors import BadType, BadValue
from ppddpm.model.builders import small_unet
from ppddpm.model.training import TrainConfig, memory_estimate, unet_parameters
from ppddpm.pictures import plotting
from ppddpm.storage.trajectory import Trajectory
from ppddpm.variants.registry import get_variant

# the child: paddle and the libraries that import it cannot be imported; each argv runs through the
# command line's main() and its exit status and stderr are reported (an exception: its repr)
BLOCKED_CHILD = r"""
import contextlib, importlib.util, io, json, sys


class Blocked:   # finds paddle and co. (looking for them, as ppddpm's version check does, works); importing fails

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("paddle", "ppdiffusers", "paddlenlp"):
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked: the answer must come before paddle loads")


sys.meta_path.insert(0, Blocked())
from ppddpm.cli.main import main

results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = exc.code
        except Exception as exc:
            status = f"raised {exc!r}"
    results.append([status, err.getvalue()])
print(json.dumps(results))
"""

ALL_IDS = ",".join(["1"] * 4097)
MANY_VARIANTS = ",".join(["posterior"] * 65)

# (argv with {out}, {run}, {long_run}, {pixel}, {sd} filled in; the one line's words)
REFUSED = {
    "train --layers-per-block 3000 (a hang)": ("train --layers-per-block 3000 --out {out}",
                                               "--layers-per-block must be at most 32"),
    "train --resolution 4096": ("train --resolution 4096 --out {out}", "--resolution must be at most 1024"),
    "train --block-out-channels 3 (a paddle TypeError)": ("train --block-out-channels 3 --out {out}",
                                                          "--block-out-channels takes multiples of 8"),
    "train --block-out-channels 100000": ("train --block-out-channels 100000 --out {out}",
                                          "--block-out-channels must be at most 4096"),
    "train --steps past the checkpoint's header": ("train --steps 3000001 --out {out}",
                                                   "--steps must be at most 3000000"),
    "train whose attention needs terabytes": ("train --resolution 256 --out {out}", "GB of memory by a rough estimate"),
    "train levels the resolution cannot halve": ("train --block-out-channels 8 8 8 8 8 --out {out}",
                                                 "must be divisible by 16 for 5 UNet levels"),
    "grid --ncols 100000 (a hang)": ("grid {run} --ncols 100000 --out {out}", "--ncols must be at most 100"),
    "an option another command has (the command's own --help named)": (
        "sample --field bogus --out {out}", "ppddpm sample: error: unrecognized arguments: --field bogus (see ppddpm "
                                            "sample --help)"),
    "grid of more tiles than a figure holds": ("grid {long_run} --every 1 --ncols 100 --out {out}",
                                               "one figure holds at most 2000"),
    "animate --fps 1000 (a hang with --hold 600)": ("animate {run} --fps 1000 --hold 600 --out {out}",
                                                    "--fps takes a number > 0 and ≤ 60"),
    "animate --hold 600": ("animate {run} --hold 600 --out {out}", "--hold takes a number ≥ 0 and ≤ 60"),
    "animate of more frames than memory": ("animate {long_run} --every 1 --out {out}",
                                           "an animation holds at most 5000"),
    "animate --field bogus": ("animate {run} --field bogus --out {out}", "--field takes a recorded field"),
    "animate a field the run did not record": ("animate {run} --field noise --out {out}", "was not recorded"),
    "ab eta of the wrong type (a traceback)": (["ab", "--variants", "ddim(eta='x'),posterior", "--out", "{out}"],
                                               "eta takes a number in [0, 1], got 'x' (a string)"),
    "ab of 65 variants": (["ab", "--variants", MANY_VARIANTS, "--out", "{out}"], "at most 64 variants"),
    "ab UNet calls past the batch cap": ("ab --seed 0-63 --seed-batch 64 --batch-size 64 --mode free --out {out}",
                                         "make 8192 images in one UNet call; at most 4096"),
    "ab --steps past the bundled model's T": ("ab --steps 1001 --out {out}", "--steps must be at most 1000"),
    "sample --prompt on the bundled pixel model": ("sample --prompt cat --out {out}",
                                                   "--prompt needs a latent pipeline"),
    "sample --decode vae on the bundled model": ("sample --decode vae --out {out}",
                                                 "the bundled model is a DDPMPipeline"),
    "sample --prompt on a saved pixel folder": ("sample --model {pixel} --steps 20 --prompt cat --out {out}",
                                                "is a DDPMPipeline"),
    "sample a Stable Diffusion folder without --prompt": ("sample --model {sd} --out {out}",
                                                         "a StableDiffusionPipeline needs --prompt"),
    "sample --class-label on Stable Diffusion": ("sample --model {sd} --prompt cat --class-label 3 --out {out}",
                                                "--class-label do not apply to a StableDiffusionPipeline"),
    "sample --steps past the folder's T": ("sample --model {pixel} --steps 51 --out {out}",
                                           "--steps must be at most 50"),
    "sample 4097 class labels": (["sample", "--class-label", ALL_IDS, "--out", "{out}"], "takes at most 4096 ids"),
    "eval on Stable Diffusion": ("eval --model {sd} --out {out}", "ppddpm eval works on pixel-space pipelines"),
    "forward on Stable Diffusion": ("forward --model {sd} --out {out}", "ppddpm forward works on pixel-space"),
    "--nproc 100000 --oversubscribe": ("sample --nproc 100000 --oversubscribe --out {out}",
                                       "--nproc must be at most 256"),
}
# legitimate runs these checks must let through: under the blocker they get as far as loading the model
REACH_THE_MODEL = {
    "sample --steps 1000, the bundled model's T": "sample --steps 1000 --out {out}",
    "sample --prompt on Stable Diffusion": "sample --model {sd} --prompt cat --out {out}",
    "eval on a saved pixel folder": "eval --model {pixel} --steps 50",
}


def _folder(root, name, index, steps=None):
    """A --model folder of which only the small JSON files exist: all the early checks read."""
    folder = root / name
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    if steps:
        (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": steps}))
    return folder


def _run_file(path, n):
    """A trajectory of `n` steps of [1, 1, 2, 2] frames, saved: enough for the picture commands' checks."""
    frames = np.zeros((n, 1, 1, 2, 2), np.float32)
    Trajectory(np.arange(n)[::-1], {"prev_sample": frames, "pred_original_sample": frames}, np.zeros(n), np.zeros(n),
               {"num_inference_steps": n, "every": 1}).save(path)
    return path


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """{case: (exit status, stderr)} of REFUSED and REACH_THE_MODEL, from one blocked child."""
    root = tmp_path_factory.mktemp("early")
    places = {"run": _run_file(root / "run.npz", 3), "long_run": _run_file(root / "long.npz", 5001),
              "pixel": _folder(root, "pixel", {"_class_name": "DDPMPipeline", "unet": ["ppdiffusers", "UNet2DModel"]},
                               steps=50),
              "sd": _folder(root, "sd", {"_class_name": "StableDiffusionPipeline", "unet": ["ppdiffusers", "x"]})}
    cases = {**{k: v[0] for k, v in REFUSED.items()}, **REACH_THE_MODEL}
    argvs = []
    for i, argv in enumerate(cases.values()):
        words = argv.split() if isinstance(argv, str) else argv
        argvs.append([w.format(out=root / f"out{i}", **places) for w in words])
    res = subprocess.run([sys.executable, "-c", BLOCKED_CHILD, json.dumps(argvs)], capture_output=True, text=True,
                         timeout=300, cwd=root)
    assert res.returncode == 0, res.stderr
    return dict(zip(cases, json.loads(res.stdout.strip().splitlines()[-1])))


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_at_once_in_one_line_before_paddle_loads(answers, case):
    status, err = answers[case]
    assert status == 2, (status, err)
    assert len(err.strip().splitlines()) == 1 and REFUSED[case][1] in err and "Traceback" not in err, err


@pytest.mark.parametrize("case", list(REACH_THE_MODEL))
def test_legitimate_runs_pass_the_early_checks_and_go_on_to_load(answers, case):
    status, err = answers[case]
    # the first thing after the checks is the model: here its import is what fails
    assert str(status).startswith("raised ImportError") and "is blocked" in str(status), (status, err)


def test_help_imports_no_paddle_as_python_m_ppddpm_runs(tmp_path):
    """`python -m ppddpm --help` and an early refusal through the real entry point, with paddle and
    ppdiffusers shadowed on PYTHONPATH by packages whose import fails."""
    for name in ("paddle", "ppdiffusers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} is shadowed: the answer must come "
                                                     f"before paddle loads')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return_codes = []
    for argv, words in ((["--help"], "usage: ppddpm"), (["animate", "RUN", "--field", "bogus"], "--field takes")):
        res = subprocess.run([sys.executable, "-m", "ppddpm", *argv], capture_output=True, text=True, timeout=120,
                             env=env)
        assert words in res.stdout + res.stderr and "Traceback" not in res.stderr, res.stderr
        return_codes.append(res.returncode)
    assert return_codes == [0, 2]


# --- the caps' legitimate edges ------------------------------------------------------------------

EDGES = [
    "train --resolution 1024 --layers-per-block 32 --block-out-channels 4096 8 --steps 3000000 --batch-size 4096",
    "train --resolution 256 --block-out-channels 128 128 256 256 512 512 --steps 1000 --batch-size 64",
    "grid RUN --ncols 100",
    "animate RUN --fps 60 --hold 60 --field pred_original_sample_decoded",
    "ab --variants " + ",".join(["posterior"] * 64) + " --seed-batch 4096 --batch-size 4096",
    "sample --class-label " + ",".join(["1"] * 4096) + " --batch-size 4096 --steps 1000",
    "sample --nproc 256 --oversubscribe",
]


@pytest.mark.parametrize("argv", EDGES, ids=lambda a: a[:60])
def test_the_caps_accept_their_legitimate_edges(argv):
    build_parser().parse_args(argv.split())


def test_a_training_config_within_the_caps_passes_and_each_cap_refuses_once_over():
    TrainConfig("o").check()                                     # the default run
    TrainConfig("o", resolution=32, block_out_channels=(64, 128, 256), layers_per_block=2, batch_size=64).check()
    over = {"resolution": 2048, "layers_per_block": 33, "steps": 3_000_001, "block_out_channels": (8, 4104)}
    for key, value in over.items():
        with pytest.raises(BadValue, match=key):
            TrainConfig("o", **{key: value}).check()


def test_the_parameter_estimate_follows_ppdiffusers_own_count():
    """`unet_parameters` (what the memory estimate counts five times over) against the parameters
    of the UNet ppdiffusers builds: within 10 % (it leaves out the norms and biases)."""
    for widths, layers in (((16, 32), 1), ((8, 16, 32), 2)):
        built = sum(int(np.prod(p.shape)) for p in small_unet(16, 1, widths, layers).parameters())
        assert 0.9 <= unet_parameters(widths, layers) / built <= 1.1, (widths, layers, built)
    small, wide = TrainConfig("o", batch_size=1), TrainConfig("o", batch_size=1, block_out_channels=(64, 128))
    assert memory_estimate(wide) > memory_estimate(small)        # and the estimate grows with the model


def test_variant_arguments_of_the_wrong_type_are_one_line_naming_the_argument_and_type():
    assert get_variant("ddim-written(eta=1, use_clipped_model_output=True)").arguments["eta"] == 1   # int for a float
    for spec, words in (("ddim(eta='x')", "eta takes a number in [0, 1], got 'x' (a string)"),
                        ("ddim(eta=True)", "eta takes a number in [0, 1], got True (a boolean)"),
                        ("ddim-written(use_clipped_model_output=1)", "use_clipped_model_output takes True or False"),
                        ("ddim(use_clipped_model_output='no')", "use_clipped_model_output takes True or False")):
        with pytest.raises(BadType, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            get_variant(spec)


def test_plotting_caps_hold_for_the_api_too(tmp_path):
    traj = Trajectory.load(_run_file(tmp_path / "run.npz", 2001))
    with pytest.raises(BadValue, match="at most 100"):
        plotting.plot_grid(traj, ncols=101)
    with pytest.raises(BadValue, match="one figure holds at most 2000"):
        plotting.plot_grid(traj, every=1)
    with pytest.raises(BadValue, match=r"fps must be in \[0.01, 60\]"):
        plotting.animate(traj, "x.gif", fps=61)


# --- signals during start-up ----------------------------------------------------------------------

def _status(pid, field):
    """A signal mask of /proc/PID/status (SigCgt: signals with a handler), or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(line.split()[1], 16) for line in fh if line.startswith(field + ":"))
    except (OSError, StopIteration):
        return 0


def _mapped(pid, word):
    try:
        with open(f"/proc/{pid}/maps") as fh:
            return word in fh.read()
    except OSError:
        return False


# the moments, as /proc shows them: ppddpm's SIGTERM handler in place while the command line loads
# (signals held back); paddle's shared library mapped (its import under way: 0.4.1 raised inside its
# initialisation, "ImportError: initialization failed"); glog's failure-signal handlers in place
# (SIGBUS caught: paddle's SIGTERM handler in force, where 0.4.1 printed the C++ "FatalError" block);
# the model's weights mapped (loading it, after paddlenlp's import reset SIGTERM to its default: 0.4.1
# died of the signal, silently)
MOMENTS = {
    "while the command line loads": lambda pid: _status(pid, "SigCgt") & 1 << (signal.SIGTERM - 1),
    "while paddle's library loads": lambda pid: _mapped(pid, "libpaddle"),
    "once paddle installed its handlers": lambda pid: _status(pid, "SigCgt") & 1 << (signal.SIGBUS - 1),
    "while the model loads": lambda pid: _mapped(pid, "diffusion_paddle_model.safetensors"),
}


ATTEMPTS = 5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the moments are read from /proc")
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigterm_during_start_up_is_the_one_line_and_143(tmp_path, moment):
    """A moment is a window the polling can miss (the bundled weights map for a few ms on an idle machine):
    a run that ends before its moment was caught is run again, up to ATTEMPTS times."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONFAULTHANDLER"}    # its handlers would mark SIGBUS
    for attempt in range(ATTEMPTS):
        proc = subprocess.Popen([sys.executable, "-m", "ppddpm", "schedule", "--out", str(tmp_path / str(attempt))],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and not MOMENTS[moment](proc.pid):
            time.sleep(0.002)
        if proc.poll() is None:
            break
        assert proc.returncode == 0, proc.communicate()[1]          # missed the window: a whole, normal run
    else:
        pytest.fail(f"the moment never came in {ATTEMPTS} runs")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines() == ["ppddpm schedule: terminated (SIGTERM)"], err
