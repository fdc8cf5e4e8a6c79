"""The loaders against random bytes and mutated headers (hypothesis): every file either loads or
raises one clear ppddpm error — never a signal (a crash), a hang or any other exception.

The loads run in a separate worker process, so a segfault or a hang cannot take pytest down: the
test sends the worker a path, and waits at most WAIT seconds for its one-line verdict. The
starting points are real files written by ppddpm (a trajectory .npz, a streamed folder, a training
checkpoint, an ab.json); hypothesis flips, inserts and truncates their bytes, rewrites .npy
headers with other dtypes and shapes, and swaps JSON values.
"""
import json
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppddpm

WAIT = 20          # seconds a load may take before it counts as a hang (the files are a few KB)

WORKER = r"""
import sys, traceback
from pathlib import Path
from ppddpm.errors import InputError


def load(kind, path):
    if kind == "trajectory":
        from ppddpm.storage.trajectory import Trajectory
        return Trajectory.load(path)
    if kind == "checkpoint":
        from ppddpm.model.training import read_checkpoint
        return read_checkpoint(path)
    from ppddpm.pictures.explorer import _ab_curve
    return _ab_curve(path)


counts = {}
for line in sys.stdin:
    kind, path = line.rstrip("\n").split(" ", 1)
    try:
        out = load(kind, Path(path))
        if kind == "trajectory":                     # touch every array: a bad mapping fails here
            for f in out.fields:
                out.field(f)[:].sum()
            out.timesteps.sum(), out.noise_std.sum()
        verdict = "ok"
    except InputError as exc:
        msg = str(exc)
        verdict = "error " + type(exc).__name__ + (" MULTILINE" if "\n" in msg.strip() else "")
    except BaseException as exc:
        verdict = "BUG " + type(exc).__name__ + ": " + " | ".join(traceback.format_exc().splitlines()[-3:])
    print(verdict, flush=True)
"""


class Worker:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "import numpy as np\n" + WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def load(self, kind, path) -> str:
        import select

        self.proc.stdin.write(f"{kind} {path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
        if not ready:
            self.proc.kill()
            pytest.fail(f"loading {kind} {path} hung for {WAIT} s")
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=10)
            pytest.fail(f"loading {kind} {path} killed the process (exit {code}: a signal if negative)")
        return line.strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, unet):
    """Real files of each kind, written by ppddpm."""
    from ppdiffusers import DDPMPipeline

    from ppddpm.model.builders import ddpm_scheduler
    from ppddpm.model.training import TrainConfig, train

    root = tmp_path_factory.mktemp("seeds")
    pipe = DDPMPipeline(unet=unet, scheduler=ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    traj = ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=4, fields="all")
    traj.save(root / "run.npz")
    with np.load(root / "run.npz") as npz:                  # the same members deflated, by numpy
        np.savez_compressed(root / "deflated.npz", **{k: npz[k] for k in npz.files})
    ppddpm.sample_trajectory(pipe, seed=3, num_inference_steps=4, store="disk", path=root / "stream")
    train(TrainConfig(output_dir=str(root / "train"), steps=1, batch_size=2, block_out_channels=(8, 16),
                      checkpoint_every=1), progress=False)
    report = ppddpm.compare(pipe, ["posterior", "direct"], seed=1, num_inference_steps=3)
    report.to_json(root / "ab.json")
    return root


def mutate(data: bytes, edits) -> bytes:
    """Apply (kind, position, bytes) edits: overwrite, insert, or truncate at the position."""
    data = bytearray(data)
    for kind, pos, chunk in edits:
        pos = pos % (len(data) + 1)
        if kind == "overwrite":
            data[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            data[pos:pos] = chunk
        else:
            del data[pos:]
    return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["overwrite", "insert", "truncate"]), st.integers(0, 10 ** 6),
                           st.binary(min_size=1, max_size=16)), min_size=1, max_size=4)
DESCRS = st.sampled_from(["|O", "<f4", "<f8", "<i8", "|b1", "<c16", "|V8", "<U3", "|S0", "<f2", ">f4", "[('a','<f4')]"])
SHAPES = st.lists(st.integers(-2, 2 ** 40), min_size=0, max_size=6).map(tuple)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def verdict_ok(verdict):
    assert verdict == "ok" or (verdict.startswith("error ") and "MULTILINE" not in verdict), verdict


@SETTINGS
@given(kind=st.sampled_from(["run.npz", "train/checkpoint.safetensors", "ab.json"]), edits=EDITS)
def test_mutated_files_load_or_fail_with_one_clear_error(worker, seeds, tmp_path_factory, kind, edits):
    target = tmp_path_factory.mktemp("m") / kind.split("/")[-1]
    target.write_bytes(mutate((seeds / kind).read_bytes(), edits))
    loader = {"run.npz": "trajectory", "checkpoint.safetensors": "checkpoint", "ab.json": "ab"}[target.name]
    verdict_ok(worker.load(loader, target))


@SETTINGS
@given(data=st.binary(max_size=512))
def test_random_bytes_are_one_clear_error(worker, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("r")
    for name, loader in (("x.npz", "trajectory"), ("x.safetensors", "checkpoint"), ("ab.json", "ab")):
        (folder / name).write_bytes(data)
        assert worker.load(loader, folder / name).startswith("error "), data


@SETTINGS
@given(field=st.sampled_from(["prev_sample.npy", "steps.npy", "clip_fraction.npy"]), descr=DESCRS, shape=SHAPES,
       fortran=st.booleans(), meta_value=st.one_of(st.none(), st.integers(-5, 10 ** 12), st.text(max_size=5),
                                                  st.lists(st.integers(), max_size=3)))
def test_streams_with_mutated_headers_or_metadata(worker, seeds, tmp_path_factory, field, descr, shape, fortran,
                                                  meta_value):
    folder = tmp_path_factory.mktemp("s") / "stream"
    shutil.copytree(seeds / "stream", folder)
    raw = (folder / field).read_bytes()
    (hlen,) = struct.unpack("<H", raw[8:10])
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape})
    header = header + " " * max(0, hlen - 1 - len(header)) + "\n"
    (folder / field).write_bytes(raw[:8] + struct.pack("<H", len(header)) + header.encode("latin1") + raw[10 + hlen:])
    meta = json.loads((folder / "meta.json").read_text())
    meta["steps_on_disk"] = meta_value
    (folder / "meta.json").write_text(json.dumps(meta))
    verdict_ok(worker.load("trajectory", folder))


@SETTINGS
@given(member=st.sampled_from(["prev_sample", "timesteps", "noise_std", "clip_fraction", "stages", "__ppddpm_meta__"]),
       descr=DESCRS,
       shape=SHAPES)
def test_npz_members_with_mutated_headers(worker, seeds, tmp_path_factory, member, descr, shape):
    """A header announcing another dtype or shape — 10¹² frames, say — inside a valid zip."""
    import zipfile

    target = tmp_path_factory.mktemp("z") / "run.npz"
    with zipfile.ZipFile(seeds / "run.npz") as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == member + ".npy":
                (hlen,) = struct.unpack("<H", data[8:10])
                header = repr({"descr": descr, "fortran_order": False, "shape": shape})
                header = header + " " * max(0, hlen - 1 - len(header)) + "\n"
                data = data[:8] + struct.pack("<H", len(header)) + header.encode("latin1") + data[10 + hlen:]
            dst.writestr(info.filename, data)
    verdict_ok(worker.load("trajectory", target))


# the zip's own structure (APPNOTE 4.3.7, 4.3.12): (offset in the record, struct format) of the fields
# a reader trusts — flags, method, CRC, sizes, name and extra lengths, the local header's offset
ZIP_FIELDS = {
    b"PK\x01\x02": {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"), "compressed size": (20, "<I"),
                    "size": (24, "<I"), "name length": (28, "<H"), "extra length": (30, "<H"), "offset": (42, "<I")},
    b"PK\x03\x04": {"flags": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"), "compressed size": (18, "<I"),
                    "size": (22, "<I"), "name length": (26, "<H"), "extra length": (28, "<H")},
}
ZIP_EDITS = st.lists(st.tuples(st.sampled_from(sorted(ZIP_FIELDS)), st.integers(0, 20),
                               st.sampled_from(sorted({f for fields in ZIP_FIELDS.values() for f in fields})),
                               st.one_of(st.integers(-64, 64).map(lambda d: ("by", d)),
                                         st.integers(0, 2 ** 32 - 1).map(lambda v: ("to", v)),
                                         st.sampled_from([0, 1, 8, 9, 12, 14, 99, 0xFFFF, 0xFFFFFFFF]).map(
                                             lambda v: ("to", v)))),
                     min_size=1, max_size=3)


def edit_zip(data: bytes, edits) -> bytes:
    """Each (record signature, which record, field, ("by", delta) | ("to", value)) applied to the
    raw bytes of the zip's local or central directory records (values wrap to the field's width)."""
    data = bytearray(data)
    for signature, which, field, (how, value) in edits:
        starts = [i for i in range(len(data) - 3) if data[i:i + 4] == signature]
        if field not in ZIP_FIELDS[signature] or not starts:
            continue
        offset, fmt = ZIP_FIELDS[signature][field]
        at = starts[which % len(starts)] + offset
        width = struct.calcsize(fmt)
        if at + width > len(data):
            continue
        (old,) = struct.unpack_from(fmt, data, at)
        struct.pack_into(fmt, data, at, (old + value if how == "by" else value) % 2 ** (8 * width))
    return bytes(data)


@SETTINGS
@given(seed=st.sampled_from(["run.npz", "deflated.npz"]), edits=ZIP_EDITS)
def test_zips_with_mutated_directory_records(worker, seeds, tmp_path_factory, seed, edits):
    """Methods, flags, sizes, CRCs, offsets and name lengths of a real .npz (stored, and deflated by
    numpy), set to neighbours of their values, to any value or to the ones a crafted file uses."""
    target = tmp_path_factory.mktemp("d") / "run.npz"
    target.write_bytes(edit_zip((seeds / seed).read_bytes(), edits))
    verdict_ok(worker.load("trajectory", target))


@SETTINGS
@given(cuts=st.lists(st.tuples(st.sampled_from(["meta.json", "steps.npy", "prev_sample.npy",
                                                 "pred_original_sample.npy"]),
                               st.sampled_from(["truncate", "delete", "empty", "random"]), st.integers(0, 4096),
                               st.binary(max_size=64)), min_size=1, max_size=3),
       counted=st.one_of(st.none(), st.integers(-1, 5)))
def test_streams_cut_anywhere(worker, seeds, tmp_path_factory, cuts, counted):
    """A streamed folder as a crash, a full disk or a hand could leave it: files cut at any length,
    missing, empty or replaced, with meta.json counting any number of steps on disk (None: as written)."""
    folder = tmp_path_factory.mktemp("c") / "stream"
    shutil.copytree(seeds / "stream", folder)
    if counted is not None:
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps(dict(meta, steps_on_disk=counted)))
    for name, how, length, data in cuts:
        file = folder / name
        if not file.exists():
            continue
        if how == "delete":
            file.unlink()
        else:
            raw = file.read_bytes()
            file.write_bytes({"truncate": raw[:length % (len(raw) + 1)], "empty": b"", "random": data}[how])
    verdict_ok(worker.load("trajectory", folder))


@SETTINGS
@given(cuts=st.lists(st.tuples(st.sampled_from(["steps.npy", "prev_sample.npy", "pred_original_sample.npy"]),
                               st.sampled_from(["truncate", "delete", "empty"]), st.integers(0, 300)),
                     min_size=1, max_size=3))
def test_a_stream_that_counts_no_step_loads_whatever_its_arrays_hold(worker, seeds, tmp_path_factory, cuts):
    """What a run killed before its first chunk reached the disk leaves — meta.json counting 0 steps,
    each `.npy` not made yet, empty, or cut anywhere (in its header too) — loads, with 0 steps
    (0.4.1: "EOF reading magic string")."""
    folder = tmp_path_factory.mktemp("z") / "stream"
    shutil.copytree(seeds / "stream", folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(dict(meta, steps_on_disk=0, complete=False)))
    for name, how, length in cuts:
        file = folder / name
        if how == "delete" and file.exists():
            file.unlink()
        elif file.exists():
            file.write_bytes(file.read_bytes()[:length if how == "truncate" else 0])
    assert worker.load("trajectory", folder) == "ok", cuts


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@SETTINGS
@given(value=JSON, depth=st.sampled_from([0, 10, 900, 5000, 100_000]), where=st.sampled_from(["npz", "stream", "ab"]))
def test_metadata_json_of_any_shape_and_depth(worker, seeds, tmp_path_factory, value, depth, where):
    """Any JSON value, nested `depth` lists deep (100 000: RecursionError in 0.4.1), as a .npz's
    metadata, a stream's meta.json or an ab.json."""
    text = "[" * depth + json.dumps(value) + "]" * depth
    folder = tmp_path_factory.mktemp("j")
    if where == "npz":
        with np.load(seeds / "run.npz") as npz:
            arrays = dict({k: npz[k] for k in npz.files}, __ppddpm_meta__=np.array(text))
        np.savez(folder / "run.npz", **arrays)
        verdict_ok(worker.load("trajectory", folder / "run.npz"))
    elif where == "stream":
        shutil.copytree(seeds / "stream", folder / "stream")
        (folder / "stream" / "meta.json").write_text(text)
        verdict_ok(worker.load("trajectory", folder / "stream"))
    else:
        (folder / "ab.json").write_text(text)
        verdict_ok(worker.load("ab", folder / "ab.json"))
