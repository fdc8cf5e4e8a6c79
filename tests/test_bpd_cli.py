"""`ppddpm bpd`: the bound's table, --json and --plot; bad input is one line, exit 2, and nothing written."""
import json

import numpy as np
import paddle
import pytest
from ppdiffusers import DDIMScheduler, DDPMPipeline

import ppddpm
from ppddpm.cli.main import main
from ppddpm.model.builders import ddpm_scheduler, small_unet
from ppddpm.model.data import load_digits


def test_bpd_prints_the_bound_and_writes_json_and_plot(tmp_path, saved_pipe_dir, capsys):
    """The report of the API on the first --n held-out digits, printed and written; the JSON's mean is the API's."""
    status = main(["bpd", "--model", str(saved_pipe_dir), "--n", "4", "--timesteps", "3", "--json",
                   str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png"), "--quiet"])
    out = capsys.readouterr().out
    assert status == 0 and "variational bound on 4 images, 17 levels, T = 1000 (3 of T drawn" in out
    data = json.loads((tmp_path / "b.json").read_text())
    api = ppddpm.likelihood.bpd(ppddpm.load_pipeline(str(saved_pipe_dir)), load_digits("test", 8)[:4], levels=17,
                                timesteps=3)
    assert np.isclose(data["mean_bpd"], api.mean, rtol=1e-6) and len(data["terms"][0]) == 1000
    assert (tmp_path / "b.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory):
    """Saved pipelines bpd must refuse: a DDIM scheduler, a 16x16 UNet (the digits upscaled are off their 17
    levels), NaN weights."""
    root = tmp_path_factory.mktemp("odd")
    paddle.seed(0)
    unet = small_unet(8, 1, block_out_channels=(8, 16), attention=False)
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(str(root / "ddim"))
    DDPMPipeline(unet=small_unet(16, 1, block_out_channels=(8, 16), attention=False),
                 scheduler=ddpm_scheduler()).save_pretrained(str(root / "sixteen"))
    for p in unet.parameters():
        p.set_value(paddle.full_like(p, float("nan")))
    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()).save_pretrained(str(root / "nan"))
    return root


@pytest.mark.parametrize("args,says", [
    (["--timesteps", "1"], "timesteps must be an integer from 2"),
    (["--timesteps", "1001"], "T = 1000"),
    (["--levels", "256"], "not on 256 levels"),
    (["--levels", "1"], "--levels must be"),
    (["--n", "360"], "--n must be at most 359"),
    (["--model", "{odd}/ddim"], "DDPM-like scheduler"),
    (["--model", "{odd}/sixteen"], "not on 17 levels"),
    (["--model", "{odd}/nan", "--timesteps", "4"], "NaN or inf"),      # the loader's check (or the bound's)
    (["--json", "{tmp}/missing/b.json"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, says, tmp_path, saved_pipe_dir, odd_models, capsys):
    args = [a.format(odd=odd_models, tmp=tmp_path) for a in args]
    model = [] if "--model" in args else ["--model", str(saved_pipe_dir)]
    outputs = [] if "--json" in args else ["--json", str(tmp_path / "b.json")]
    with pytest.raises(SystemExit) as usage:        # argparse's refusals exit from inside the parser
        status = main(["bpd", "--n", "2", "--quiet", "--plot", str(tmp_path / "b.png"), *model, *outputs, *args])
        raise SystemExit(status)
    err = capsys.readouterr().err
    assert usage.value.code == 2 and says in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not list(tmp_path.rglob("b.*"))


def test_what_the_model_files_decide_is_said_before_the_model_loads(tmp_path, saved_pipe_dir, capsys):
    """--timesteps past the model's T is refused from its scheduler_config.json: the folder here has no weights,
    so an answer about the weights would mean the model was loaded first."""
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(saved_pipe_dir, bare)
    shutil.rmtree(bare / "unet")
    assert main(["bpd", "--model", str(bare), "--timesteps", "1001", "--quiet"]) == 2
    assert "timesteps must be an integer from 2" in capsys.readouterr().err
