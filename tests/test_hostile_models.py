"""Hostile model folders and training checkpoints (issue 32): no code runs from any file, in any
pipeline, and every model file is checked before it is used.

The folders are real tiny pipelines written by ppdiffusers' `save_pretrained` (Stable Diffusion with
a tokenizer, a safety checker and its feature extractor; LDM; DiT; DDPM), then edited: a component's
weights replaced by a pickle whose loading would create a marker folder, a safetensors file written
with a crafted header (by the test's own writer, from the format's specification), a config value out
of range, a FIFO. Each case checks the outcome from outside — exit status 2 and one line, the marker
absent — and the guard that runs while ppdiffusers loads is tested on its own too (the folder scan
skipped), so that either layer alone refuses every pickle. The safetensors checks are compared with
the safetensors library itself (hypothesis mutates headers; whatever ppddpm accepts, the library
reads). Honest files pass: the bundled model, the tiny pipelines, a checkpoint of a 3-step run.
"""
import json
import os
import pickle
import shutil
import struct
import threading
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppddpm
from ppddpm.cli.main import main
from ppddpm.errors import InputError, Untrusted
from ppddpm.model.guard import guarded


class _MakesAFolder:
    """Unpickling this calls os.mkdir(path): the stand-in for "runs a command"."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def payload(marker) -> bytes:
    return pickle.dumps({"weight": _MakesAFolder(marker)}, protocol=2)


def run(argv, capsys):
    """`ppddpm ARGV` in this process: (exit status, its stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def one_line(status, err, *needles):
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


# --------------------------------------------------------------------------- the honest folders

@pytest.fixture(scope="module")
def folders(tmp_path_factory, saved_pipe_dir):
    """Tiny pipelines as `save_pretrained` writes them (random weights, CPU, seconds)."""
    from ppdiffusers import LDMTextToImagePipeline, UNet2DConditionModel
    from ppdiffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
    from ppdiffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from ppdiffusers.transformers import CLIPConfig, CLIPImageProcessor

    from ppddpm.model.builders import tiny_latent_pipeline

    root = tmp_path_factory.mktemp("models")
    sd = tiny_latent_pipeline("stable-diffusion", tokenizer=True)
    sd.safety_checker = StableDiffusionSafetyChecker(CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8), projection_dim=8))
    sd.feature_extractor = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    sd.register_to_config(safety_checker=("stable_diffusion", "StableDiffusionSafetyChecker"),
                          feature_extractor=("ppdiffusers.transformers", "CLIPImageProcessor"),
                          requires_safety_checker=True)
    paths = {"ddpm": saved_pipe_dir}
    for kind, pipe in (("sd", sd), ("ldm", tiny_latent_pipeline("ldm")), ("dit", tiny_latent_pipeline("dit"))):
        pipe.save_pretrained(str(root / kind))
        paths[kind] = root / kind
    ldm = tiny_latent_pipeline("ldm")       # a text-to-image LDM (not one ppddpm records): vqvae, bert, UNet
    LDMTextToImagePipeline(vqvae=ldm.vqvae, bert=LDMBertModel(LDMBertConfig(
        vocab_size=100, max_position_embeddings=16, encoder_layers=1, encoder_ffn_dim=16, encoder_attention_heads=2,
        head_dim=8, d_model=16)), tokenizer=None, scheduler=ldm.scheduler, unet=UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=2),
    ).save_pretrained(str(root / "ldm-text"))
    paths["ldm-text"] = root / "ldm-text"
    return paths


def copy_of(folders, kind, tmp_path):
    shutil.copytree(folders[kind], tmp_path / kind)
    return tmp_path / kind


SAMPLE = {"sd": ["--prompt", "a cat"], "dit": ["--class-label", "1"]}


def sample(folder, kind, tmp_path, capsys):
    return run(["sample", "--model", folder, "--steps", 2, "--out", tmp_path / "out", "--quiet",
                *SAMPLE.get(kind, [])], capsys)


def test_the_honest_folders_load_and_are_the_saved_weights(folders):
    """Every tiny pipeline passes every check and loads the weights it was saved with (the bundled
    model: tests/test_hostile.py)."""
    from safetensors.numpy import load_file

    for kind in ("sd", "ldm", "dit", "ddpm"):
        pipe = ppddpm.load_pipeline(folders[kind])
        for component in ("unet", "vae", "vqvae", "transformer", "text_encoder", "safety_checker"):
            files = sorted((folders[kind] / component).glob("*.safetensors"))
            if files:
                saved, loaded = load_file(str(files[0])), getattr(pipe, component).state_dict()
                assert saved.keys() == loaded.keys(), (kind, component)
                assert all(np.array_equal(saved[k], loaded[k].numpy()) for k in saved), (kind, component)
        assert type(pipe).__name__ == {"sd": "StableDiffusionPipeline", "ldm": "LDMPipeline", "dit": "DiTPipeline",
                                       "ddpm": "DDPMPipeline"}[kind]
        assert kind != "sd" or pipe.safety_checker is not None


# --------------------------------------------------------------------------- 1. no code from any file

PICKLED = [      # (folder, component, library listed in model_index.json; None: as saved)
    ("sd", "text_encoder", None), ("sd", "text_encoder", "paddlenlp.transformers"), ("sd", "unet", None),
    ("sd", "vae", None), ("sd", "safety_checker", None), ("dit", "transformer", None), ("dit", "vae", None),
    ("ldm", "vqvae", None), ("ldm", "unet", None), ("ddpm", "unet", None),
]


def pickle_component(folder, component, marker, library=None):
    """The component's safetensors weights replaced by a pickled `model_state.pdparams` carrying the payload."""
    for weights in (folder / component).glob("*.safetensors"):
        weights.unlink()
    (folder / component / "model_state.pdparams").write_bytes(payload(marker))
    if library:
        index = json.loads((folder / "model_index.json").read_text())
        index[component][0] = library
        (folder / "model_index.json").write_text(json.dumps(index))


def guard_alone(folder):
    """ppdiffusers' own from_pretrained of the folder's class under the guard, the folder scan skipped."""
    import ppdiffusers

    index = json.loads((folder / "model_index.json").read_text())
    nulls = {k: None for k, v in index.items() if v == [None, None]}
    with pytest.raises(Untrusted):
        with guarded(str(folder)):
            getattr(ppdiffusers, index["_class_name"]).from_pretrained(str(folder), **nulls)


@pytest.mark.parametrize("kind,component,library", PICKLED)
def test_a_pickled_component_is_refused_and_runs_nothing(folders, tmp_path, capsys, kind, component, library):
    folder, marker = copy_of(folders, kind, tmp_path), tmp_path / "pwned"
    pickle_component(folder, component, marker, library)
    one_line(*sample(folder, kind, tmp_path, capsys), f"component {component!r}", "model_state.pdparams are pickled",
             "--trust-pickle")
    assert not marker.exists()
    guard_alone(folder)
    assert not marker.exists()


def test_a_nested_pipeline_or_a_pipeline_ppddpm_does_not_record_runs_nothing(folders, tmp_path, capsys):
    """A DDPM folder whose unet is a Stable Diffusion pipeline with a pickled text encoder, and a
    text-to-image LDM with a pickled bert: refused by class before anything loads; and were they
    loaded, the guard refuses the pickle."""
    nested, marker = copy_of(folders, "ddpm", tmp_path), tmp_path / "pwned"
    shutil.rmtree(nested / "unet")
    shutil.copytree(folders["sd"], nested / "unet")
    pickle_component(nested / "unet", "text_encoder", marker)
    index = json.loads((nested / "model_index.json").read_text())
    (nested / "model_index.json").write_text(json.dumps(dict(index, unet=["ppdiffusers", "StableDiffusionPipeline"])))
    one_line(*sample(nested, "ddpm", tmp_path, capsys),
             "component 'unet' is ['ppdiffusers', 'StableDiffusionPipeline']")
    guard_alone(nested)
    text = copy_of(folders, "ldm-text", tmp_path)
    pickle_component(text, "bert", marker)
    one_line(*sample(text, "ldm", tmp_path, capsys), "LDMTextToImagePipeline, which ppddpm does not know")
    guard_alone(text)
    assert not marker.exists()


def torch_zip(path, marker):
    """A torch-format checkpoint (a zip holding archive/data.pkl) whose pickle carries the payload."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload(marker))
    return path


def test_every_unpickling_entry_point_is_refused_while_a_load_is_guarded(tmp_path):
    """paddle.load, pickle, numpy, ppdiffusers' and paddlenlp's readers: each refused inside the guard
    (the audit hook), none creates the marker; outside the guard the same payload is live."""
    import paddle
    import paddlenlp.transformers.model_utils as nlp
    from ppdiffusers.utils import smart_load, torch_load

    marker = tmp_path / "pwned"
    file = tmp_path / "weights.pdparams"
    file.write_bytes(payload(marker))
    zipped = torch_zip(tmp_path / "pytorch_model.bin", marker)
    readers = [lambda: paddle.load(str(file)), lambda: pickle.loads(file.read_bytes()),
               lambda: np.load(file, allow_pickle=True), lambda: smart_load(str(file)),
               lambda: torch_load(str(zipped)), lambda: nlp.paddlenlp_load(str(file), map_location="cpu")]
    for read in readers:
        with pytest.raises(Untrusted, match="posix.mkdir|weights.pdparams|pytorch_model.bin"):
            with guarded("test"):
                read()
        assert not marker.exists()
    pickle.loads(file.read_bytes())
    assert marker.exists(), "the payload is live: outside a guarded load pickle runs it"


# --------------------------------------------------------------------------- 2. safetensors, by ppddpm

def st_bytes(header: dict, data: bytes, length=None) -> bytes:
    """A safetensors file per the format's specification: u64 little-endian header length, JSON, data."""
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def honest_parts(path):
    """(header, data) of an honest safetensors file, parsed by hand from the specification."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _set(name, **spec):
    return lambda h, d: (dict(h, **{name: dict(h[name], **spec)}), d)


def _poke(name, value):
    """One value of a float32 tensor set to `value` (the bytes at its begin)."""
    def edit(h, d):
        begin = h[name]["data_offsets"][0]
        return h, d[:begin] + np.float32(value).tobytes() + d[begin + 4:]
    return edit


def _overlap(h, d):
    """Of two tensors of 32 floats, the later one's bytes declared to be the earlier one's."""
    a, b = sorted(("conv_in.bias", "conv_norm_out.bias"), key=lambda k: h[k]["data_offsets"])
    return dict(h, **{b: dict(h[b], data_offsets=h[a]["data_offsets"])}), d


def _drop(name):
    """A tensor removed with its bytes (the rest of the file still tiles its data)."""
    def edit(h, d):
        b, e = h[name]["data_offsets"]
        shift = lambda o: o - (e - b) if o >= e else o        # noqa: E731
        rest = {k: v if k == "__metadata__" else dict(v, data_offsets=[shift(o) for o in v["data_offsets"]])
                for k, v in h.items() if k != name}
        return rest, d[:b] + d[e:]
    return edit


def _past_end(h, d):
    last = max((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][1])
    b, e = h[last]["data_offsets"]
    return dict(h, **{last: dict(h[last], data_offsets=[b + 64, e + 64])}), d


CRAFTED = [
    ("zero bytes", lambda h, d: b"", "it is 0 bytes"),
    ("header length 2^62", lambda h, d: st_bytes(h, d, length=2 ** 62), "header length 4611686018427387904"),
    ("header not JSON", lambda h, d: struct.pack("<Q", 9) + b"{not json" + d, "its header is not JSON"),
    ("header a list", lambda h, d: st_bytes([1], d), "does not start with a JSON object"),
    ("offsets negative", _set("conv_in.bias", data_offsets=[-128, 0]), "0 ≤ begin ≤ end"),
    ("offsets overlapping", _overlap, "overlaps"),
    ("offsets past the end", _past_end, "past its end"),
    ("bytes that belong to no tensor", lambda h, d: st_bytes(h, d + b"\0" * 8), "last 8 bytes belong to no tensor"),
    ("shape × item size ≠ bytes", _set("conv_in.bias", shape=[33]), "is 132 bytes, but its data_offsets"),
    ("unknown dtype", _set("conv_in.bias", dtype="F12"), "has dtype 'F12'"),
    ("shape disagreeing with config.json", _set("conv_in.weight", shape=[16, 2, 3, 3]),
     "tensor 'conv_in.weight' has shape [16, 2, 3, 3], the UNet2DModel unet/config.json describes has [32, 1, 3, 3]"),
    ("int32 for a float weight", _set("conv_in.weight", dtype="I32"), "'conv_in.weight' is stored as I32"),
    ("a tensor missing", _drop("conv_in.bias"), "lacks 1 of the 144 tensors"),
    ("NaN weight", _poke("conv_in.bias", np.nan), "tensor 'conv_in.bias' holds NaN"),
    ("inf weight", _poke("time_embedding.linear_1.weight", -np.inf),
     "'time_embedding.linear_1.weight' holds NaN or inf"),
    ("torch layout", lambda h, d: (dict(h, __metadata__={"format": "pt"}), d), "format 'pt'"),
]


@pytest.mark.parametrize("what,craft,message", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_a_crafted_weights_file_is_one_line(folders, tmp_path, capsys, what, craft, message):
    folder = copy_of(folders, "ddpm", tmp_path)
    weights = folder / "unet" / "diffusion_paddle_model.safetensors"
    made = craft(*honest_parts(weights))
    weights.write_bytes(made if isinstance(made, bytes) else st_bytes(*made))
    one_line(*sample(folder, "ddpm", tmp_path, capsys), message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.npz"))


HEADER_VALUES = {       # what hypothesis writes into a header entry: plausible values and junk
    "dtype": st.sampled_from(["F32", "F16", "BF16", "I32", "I64", "U8", "BOOL", "F64", "F12", "f32", "", 3, None]),
    "shape": st.one_of(st.lists(st.integers(-2, 12), max_size=3), st.just("x"), st.none(),
                       st.lists(st.booleans(), min_size=1, max_size=2)),
    "data_offsets": st.one_of(st.lists(st.integers(-8, 72), min_size=2, max_size=2),
                              st.lists(st.integers(0, 72), max_size=3), st.just([0, 2 ** 64])),
}


def library_reads(path):
    """What the safetensors library makes of a file: name → (shape, dtype), reading every tensor numpy
    can hold (bfloat16 it cannot: its shape only); None if it refuses the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            out = {}
            for k in f.keys():
                piece = f.get_slice(k)
                if piece.get_dtype() != "BF16":
                    assert list(f.get_tensor(k).shape) == list(piece.get_shape())
                out[k] = (list(piece.get_shape()), piece.get_dtype())
            return out
    except Exception:            # the library's own error types: whatever it refuses
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_headers_are_refused_or_read_by_the_safetensors_library_too(tmp_path, data):
    """Whatever header ppddpm accepts, the safetensors library reads, with the same shapes and dtypes;
    whatever that library refuses, ppddpm refuses in one line (it may refuse more)."""
    from safetensors.numpy import save_file

    from ppddpm.model.tensorfile import read_header

    path = tmp_path / "t.safetensors"
    save_file({"a": np.ones((2, 3), np.float32), "b": np.arange(4, dtype=np.int64), "c": np.zeros(5, np.float16)},
              str(path))
    header, payload_bytes = honest_parts(path)
    for name, key in data.draw(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from(list(HEADER_VALUES))),
                                        min_size=1, max_size=3)):
        header[name][key] = data.draw(HEADER_VALUES[key])
    text = json.dumps(header).encode()
    delta = data.draw(st.sampled_from([0, 0, 0, -1, 1, 2 ** 33]))
    path.write_bytes(struct.pack("<Q", max(0, len(text) + delta)) + text + payload_bytes)
    try:
        ours = {k: (list(t.shape), t.dtype) for k, t in read_header(path).tensors.items()}
    except InputError as exc:
        assert "\n" not in str(exc)
        ours = None
    theirs = library_reads(path)
    if ours is not None:
        assert theirs == ours
    if theirs is None:
        assert ours is None


# --------------------------------------------------------------------------- 2. configs in range, regular files

def _edit(file, **values):
    def edit(folder):
        path = folder / file
        path.write_text(json.dumps(dict(json.loads(path.read_text()), **values)))
    return edit


CONFIGS = [
    ("unet", _edit("unet/config.json", sample_size=-8), "sample_size must be an integer from 1 to 2048, got -8"),
    ("unet", _edit("unet/config.json", block_out_channels=[4096] * 4, down_block_types=["DownBlock2D"] * 4,
                   up_block_types=["UpBlock2D"] * 4), "block_out_channels must be integers from 1 to 2048"),
    ("unet", _edit("unet/config.json", layers_per_block=3000), "layers_per_block must be an integer from 1"),
    ("unet", _edit("unet/config.json", in_channels=0), "in_channels must be an integer from 1"),
    ("unet", _edit("unet/config.json", norm_num_groups=7), "norm_num_groups 7 must divide"),
    ("unet", _edit("unet/config.json", _class_name="VQModel"), "disagrees with model_index.json"),
    ("scheduler", _edit("scheduler/scheduler_config.json", beta_end=2.0), "0 < beta_start ≤ beta_end ≤ 1"),
    ("scheduler", _edit("scheduler/scheduler_config.json", beta_start=0.0), "0 < beta_start ≤ beta_end ≤ 1"),
    ("scheduler", _edit("scheduler/scheduler_config.json", beta_start=0.5, beta_end=0.1), "got 0.5 and 0.1"),
    ("scheduler", _edit("scheduler/scheduler_config.json", trained_betas=[1.5] * 1000), "trained_betas must be 1000"),
    ("scheduler", _edit("scheduler/scheduler_config.json", _class_name="FooScheduler"), "'FooScheduler' is not a sch"),
    ("scheduler", _edit("scheduler/scheduler_config.json", variance_type="wide"), "variance_type must be one of"),
    ("scheduler", _edit("scheduler/scheduler_config.json", num_train_timesteps=10 ** 10), "num_train_timesteps must"),
    ("index", _edit("model_index.json", scheduler=["ppdiffusers", "FooScheduler"]),
     "component 'scheduler' is ['ppdiffusers', 'FooScheduler']"),
    ("index", _edit("model_index.json", unet=["paddlenlp.transformers", "BertModel"]), "component 'unet'"),
    ("index", _edit("model_index.json", extra=["ppdiffusers", "UNet2DModel"]), "component 'extra'"),
    ("stray file", lambda folder: (folder / "unet" / "loader.py").write_text("import os"), "a .py file"),
]


@pytest.mark.parametrize("where,edit,message", CONFIGS, ids=[f"{c[0]}: {c[2][:24]}" for c in CONFIGS])
def test_a_config_out_of_range_is_refused_before_anything_is_built(folders, tmp_path, capsys, where, edit, message):
    folder = copy_of(folders, "ddpm", tmp_path)
    edit(folder)
    one_line(*sample(folder, "ddpm", tmp_path, capsys), message)


def test_a_fifo_in_place_of_a_model_file_is_one_line(folders, tmp_path, capsys):
    """model_index.json or a config that is a FIFO: refused, not opened (a reader would block until a
    writer came; a watchdog plays that writer after 60 s, so a regression fails instead of hanging)."""
    for name in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        folder = tmp_path / name.replace("/", "-")
        shutil.copytree(folders["ddpm"], folder)
        fifo = folder / name
        fifo.unlink()
        os.mkfifo(fifo)
        watchdog = threading.Timer(60, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
        watchdog.start()
        try:
            one_line(*sample(folder, "ddpm", tmp_path, capsys), "is a FIFO")
        finally:
            watchdog.cancel()


# --------------------------------------------------------------------------- 3. training checkpoints

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The checkpoint of a real 3-step `ppddpm train`."""
    from ppddpm.model.training import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(output_dir=str(out), steps=3, batch_size=4, checkpoint_every=3), progress=False)
    return out / "checkpoint.safetensors"


def resume(checkpoint_file, tmp_path, edit=None):
    """Resume a 4-step run from an (edited) copy of the checkpoint; returns the run's losses."""
    from ppddpm.model.training import TrainConfig, train

    out = tmp_path / "resumed"
    out.mkdir()
    header, data = honest_parts(checkpoint_file)
    if edit is not None:
        header, data = edit(header, data)
    (out / "checkpoint.safetensors").write_bytes(st_bytes(header, data))
    return train(TrainConfig(output_dir=str(out), steps=4, batch_size=4), resume=True, progress=False).losses


@pytest.mark.parametrize("edit,message", [
    (_poke("unet/conv_in.weight", np.nan), "tensor 'unet/conv_in.weight' holds NaN"),
    (_poke("optimizer/param3_moment2_0", np.inf), "tensor 'optimizer/param3_moment2_0' holds NaN or infinite"),
    (_poke("ema/5", np.nan), "tensor 'ema/5' holds NaN"),
    (_set("unet/conv_in.weight", dtype="I32"), "'unet/conv_in.weight' is stored as I32"),
    (_past_end, "past its end"),
    (lambda h, d: (h, d[:-4]), "past its end"),
], ids=["nan weight", "inf moment", "nan ema", "int32 weight", "offsets past the end", "truncated"])
def test_a_damaged_checkpoint_is_refused_naming_the_tensor(checkpoint, tmp_path, edit, message):
    """What `--resume` reads (`read_checkpoint`), edited: one line naming the tensor."""
    from ppddpm.model.training import read_checkpoint

    header, data = edit(*honest_parts(checkpoint))
    (tmp_path / "checkpoint.safetensors").write_bytes(st_bytes(header, data))
    with pytest.raises(InputError) as refused:
        read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert message in str(refused.value) and "\n" not in str(refused.value), str(refused.value)


def test_an_ema_of_other_shapes_is_refused_on_resume(checkpoint, tmp_path):
    with pytest.raises(InputError, match="its 144 EMA weights do not fit this run's 144 UNet parameters"):
        resume(checkpoint, tmp_path, _set("ema/0", shape=[1, 32, 3, 3]))


def test_the_real_checkpoint_resumes_and_the_command_line_names_a_nan(checkpoint, tmp_path, capsys):
    assert len(resume(checkpoint, tmp_path)) == 4
    out = tmp_path / "cli"
    out.mkdir()
    header, data = _poke("ema/5", np.nan)(*honest_parts(checkpoint))
    (out / "checkpoint.safetensors").write_bytes(st_bytes(header, data))
    one_line(*run(["train", "--resume", "--steps", 4, "--batch-size", 4, "--out", out, "--quiet"], capsys),
             "tensor 'ema/5' holds NaN")
