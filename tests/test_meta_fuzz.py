"""A trajectory's metadata fuzzed field by field (hypothesis): every file whose metadata holds a wrong type
or value either loads and then verifies and views, or is refused with one InputError of one line naming
the field — never another exception (issue 32: `view`/`verify` traced back on `num_inference_steps`
"abc", NaN or a list, `scheduler_config` a number, `conditioning` a string, `set_timesteps` inf,
`step_arguments` 5, `num_train_timesteps` 10¹², an unknown prediction type).

Cheap: one tiny run is recorded once (a .npz and a streamed folder); each example rewrites only the
metadata of a copy — the .npz's JSON member, the folder's meta.json — with the zip and json modules,
and no paddle runs inside hypothesis.
"""
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppddpm
from ppddpm.errors import InputError
from ppddpm.pictures.explorer import explore
from ppddpm.storage.trajectory import Trajectory

META_MEMBER = "__ppddpm_meta__.npy"
# the metadata fields the readers use (view, verify, grid, decode), each a path into the JSON
FIELDS = [(k,) for k in ("format", "format_version", "fields", "scheduler", "sampler", "variant", "scheduler_config",
                         "num_inference_steps", "set_timesteps", "every", "seed", "batch_size", "chunk", "complete",
                         "steps_run", "steps_recorded", "steps_on_disk", "first_nonfinite", "store", "dtype", "model",
                         "versions", "step_arguments", "space", "latent", "decoded", "conditioning", "shown_as")]
FIELDS += [("scheduler_config", k) for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                             "trained_betas", "prediction_type", "variance_type", "clip_sample",
                                             "clip_sample_range", "thresholding", "dynamic_thresholding_ratio",
                                             "sample_max_value", "timestep_spacing", "steps_offset", "solver_order")]
FIELDS += [("conditioning", k) for k in ("prompt", "guidance_scale", "class_labels", "class_names")]
FIELDS += [("step_arguments", "eta"), ("versions", "ppddpm"), ("shown_as", "prev_sample")]

WRONG = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
    st.sampled_from([0, 1, -1, 3, 1000, 10 ** 12, 2 ** 63, 0.5, 1e12, 1e300]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["abc", "epsilon", "linear", "float16", "latent", "DDIMScheduler", "ddim", "x" * 2000]),
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=2), st.none(), st.floats()), max_size=4),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.just([[[[[]]]]]), st.just({"a": {"b": {"c": [1, {"d": None}]}}}))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, unet):
    """One tiny DDPM run (4 steps, all fields), as a .npz and as a streamed folder, and its metadata."""
    from ppdiffusers import DDPMPipeline

    from ppddpm.model.builders import ddpm_scheduler

    root = tmp_path_factory.mktemp("meta")
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=4, fields="all").save(root / "run.npz")
    ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=4, fields="all", store="disk", path=root / "stream")
    return root


def with_meta(recorded, target, edit, folder):
    """A copy of the recorded .npz (or streamed folder) in `folder` whose metadata is `edit(meta)`."""
    if target == "stream":
        out = folder / "stream"
        shutil.copytree(recorded / "stream", out)
        meta = json.loads((out / "meta.json").read_text())
        (out / "meta.json").write_text(json.dumps(edit(meta)))
        return out
    out = folder / "run.npz"
    with zipfile.ZipFile(recorded / "run.npz") as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == META_MEMBER:
                buffer = io.BytesIO()
                np.save(buffer, np.array(json.dumps(edit(json.loads(str(np.load(io.BytesIO(data))))))))
                data = buffer.getvalue()
            dst.writestr(info.filename, data)
    return out


def setting(path, value, delete):
    def edit(meta):
        holder = meta
        for key in path[:-1]:
            if not isinstance(holder.get(key), dict):
                holder[key] = {}
            holder = holder[key]
        if delete:
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = value
        return meta
    return edit


def one_line_or_fine(action):
    """Run `action`: None if it returned, the message if it raised one InputError of one line; any other
    exception (a traceback in the CLI) fails the test."""
    try:
        action()
    except InputError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        return str(exc)
    return None


@SETTINGS
@given(target=st.sampled_from(["npz", "stream"]), path=st.sampled_from(FIELDS), value=WRONG, delete=st.booleans())
def test_metadata_of_any_type_loads_verifies_and_views_or_is_one_line(recorded, tmp_path_factory, target, path,
                                                                     value, delete):
    run = with_meta(recorded, target, setting(path, value, delete), tmp_path_factory.mktemp("f"))
    refused = one_line_or_fine(lambda: Trajectory.load(run))
    if refused is None:                       # a value the schema accepts: every reader copes with it
        one_line_or_fine(lambda: ppddpm.verify(run))
        one_line_or_fine(lambda: explore(run))


@pytest.mark.parametrize("path, value, says", [
    (("num_inference_steps",), "abc", "num_inference_steps must be an integer from 0 to 200012, got 'abc'"),
    (("num_inference_steps",), float("nan"), "num_inference_steps must be an integer"),
    (("num_inference_steps",), [4], "num_inference_steps must be an integer"),
    (("scheduler_config",), 5, "scheduler_config must be null or an object, got 5"),
    (("conditioning",), "a cat", "conditioning must be null or an object, got 'a cat'"),
    (("set_timesteps",), float("inf"), "set_timesteps must be null or an integer from 1 to 100000, got inf"),
    (("step_arguments",), 5, "step_arguments must be null or an object"),
    (("scheduler_config", "num_train_timesteps"), 10 ** 12,
     "scheduler_config.num_train_timesteps must be an integer from 1 to 100000, got 1000000000000"),
    (("scheduler_config", "num_train_timesteps"), 2 * 10 ** 8, "from 1 to 100000, got 200000000"),
    (("scheduler_config", "prediction_type"), "noise",
     "scheduler_config.prediction_type must be one of 'epsilon', 'sample', 'v_prediction', got 'noise'"),
])
@pytest.mark.parametrize("target", ["npz", "stream"])
def test_the_probes_metadata_is_refused_in_one_line_naming_the_field(recorded, tmp_path, target, path, value, says):
    run = with_meta(recorded, target, setting(path, value, False), tmp_path)
    with pytest.raises(InputError, match="its metadata's") as caught:
        Trajectory.load(run)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_files_of_earlier_versions_and_fresh_runs_still_load(recorded, tmp_path):
    """ppddpm 0.1's file (tests/data) and this version's own .npz and stream pass the schema unchanged."""
    from pathlib import Path

    old = Trajectory.load(Path(__file__).parent / "data" / "trajectory-0.1.0.npz")
    assert old.meta["versions"]["ppddpm"] == "0.1.0" and len(old) == 3
    for run in (recorded / "run.npz", recorded / "stream"):
        assert len(Trajectory.load(run)) == 4
