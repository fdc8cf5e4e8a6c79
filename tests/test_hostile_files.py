"""Hostile files and outputs (issue 32): links never followed out of --out, bad output paths, streams
killed at random moments, crafted zips, deep JSON, and data folders with FIFOs and image bombs.

Every hostile file here is made by the test with the standard library and numpy (zipfile, zlib,
struct, os.symlink, os.mkfifo), never by the code under test; outcomes are checked from outside:
the target of a link is byte for byte what it was, a command ends with exit 2 and one line, a
killed run's folder loads and equals, bit for bit, the same run left to finish.
"""
import concurrent.futures
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image
from test_hostile import run_main

import ppddpm
from ppddpm.errors import InputError

PRECIOUS = b"precious: must not be overwritten\n"


def outside(tmp_path, name="victim"):
    """A file outside every --out, whose bytes a link inside --out must never change."""
    victim = tmp_path / "elsewhere" / name
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(PRECIOUS)
    return victim


# --------------------------------------------------------------------------- 1. links in --out are replaced

def test_a_lock_linked_to_a_file_outside_out_is_replaced_not_written(tmp_path, capsys):
    """0.4.1 opened OUT/.ppddpm.lock through the link and wrote its pid into the file it points to."""
    victim, picture = outside(tmp_path), outside(tmp_path, "picture")
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / ".ppddpm.lock")
    os.symlink(picture, out / "schedule.png")
    (out / ".trajectory_seed1.0badf00d.part").mkdir()             # a killed run's staging folder: removed
    (out / ".trajectory_seed1.0badf00d.part" / "meta.json").write_text("{}")
    os.symlink(victim.parent, out / ".x.npz.1234.part")              # a link among the leftovers: only it goes
    status, err = run_main(["schedule", "--out", out], capsys)
    assert status == 0, err
    assert victim.read_bytes() == PRECIOUS and picture.read_bytes() == PRECIOUS
    assert not [p.name for p in out.glob(".*part*")] and victim.parent.is_dir()
    assert not os.path.lexists(out / ".ppddpm.lock")                  # released: the lock, not the link, went
    assert (out / "schedule.png").is_file() and not (out / "schedule.png").is_symlink()
    assert (out / "schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_lock_that_is_a_fifo_or_a_folder_is_one_line(tmp_path, capsys):
    for make, kind in ((os.mkfifo, "a FIFO"), (os.mkdir, "a folder")):
        out = tmp_path / kind.split()[-1]
        out.mkdir()
        make(out / ".ppddpm.lock")
        status, err = run_main(["schedule", "--out", out], capsys)
        assert status == 2 and f"is {kind}, not ppddpm's lock file" in err and len(err.strip().splitlines()) == 1, err


def test_links_at_a_runs_output_names_are_replaced_not_followed(tmp_path, saved_pipe_dir, capsys):
    """`sample`: a link at the picture, at the trajectory and (a folder outside) at the stream's name."""
    victims = {name: outside(tmp_path, name) for name in ("png", "npz")}
    elsewhere = tmp_path / "elsewhere" / "folder"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victims["png"], out / "sample_seed4.png")
    os.symlink(victims["npz"], out / "trajectory_seed4.npz")
    os.symlink(elsewhere, out / "trajectory_seed4")
    args = ["sample", "--model", saved_pipe_dir, "--steps", 3, "--seed", 4, "--out", out, "--quiet"]
    status, err = run_main(args, capsys)
    assert status == 2 and "trajectory_seed4 holds an earlier" in err, err       # not written through, refused
    status, err = run_main(args + ["--force"], capsys)
    assert status == 0, err
    assert all(v.read_bytes() == PRECIOUS for v in victims.values()) and list(elsewhere.iterdir()) == []
    assert not any(p.is_symlink() for p in out.iterdir())
    assert len(ppddpm.Trajectory.load(out / "trajectory_seed4.npz")) == 3


def test_links_in_a_training_out_are_replaced_not_followed(tmp_path, capsys):
    """`train`: the pipeline ppdiffusers saves (model_index.json, unet/, scheduler/) goes to a hidden
    folder and is moved in by renames; 0.4.1 wrote through OUT/model_index.json and OUT/unet/."""
    victim = outside(tmp_path)
    elsewhere = tmp_path / "elsewhere" / "unet"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_bytes(PRECIOUS)
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(victim, out / "model_index.json")
    os.symlink(elsewhere, out / "unet")
    status, err = run_main(["train", "--steps", 1, "--batch-size", 2, "--block-out-channels", 8, 16, "--out", out,
                            "--force", "--quiet"], capsys)
    assert status == 0, err
    assert victim.read_bytes() == PRECIOUS and [p.name for p in elsewhere.iterdir()] == ["config.json"]
    assert (elsewhere / "config.json").read_bytes() == PRECIOUS
    assert not (out / "unet").is_symlink() and json.loads((out / "unet" / "config.json").read_text())["sample_size"]
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    assert not [p.name for p in out.glob(".*part*")]                      # no staging left behind


LONG = "a" * 300                        # more than NAME_MAX (255 bytes) on every common file system


@pytest.mark.parametrize("argv,message", [
    (["schedule", "--out", "{tmp}/" + LONG], "a name in it is too long"),
    (["schedule", "--out", "{tmp}/file/sub"], "file is a file, not a folder"),
    (["verify", "{tmp}/run.npz", "--json", "{tmp}/" + LONG + ".json"], "a name in it is too long"),
    (["verify", "{tmp}/run.npz", "--json", "{tmp}/file/report.json"], "file is a file, not a folder"),
    (["verify", "{tmp}/run.npz", "--json", "{tmp}/folder"], "--json {tmp}/folder is a folder; give a file name"),
    (["view", "{tmp}/run.npz", "--out", "{tmp}/" + LONG + ".html"], "a name in it is too long"),
    (["view", "{tmp}/run.npz", "--out", "{tmp}/file/view.html"], "file is a file, not a folder"),
    (["view", "{tmp}/run.npz", "--out", "{tmp}/folder.html"], "is a folder; give a file name"),
    (["grid", "{tmp}/" + LONG + ".npz", "--out", "{tmp}/g"], "File name too long"),
    (["view", "{tmp}/run.npz", "--ab", "{tmp}/" + LONG + ".json", "--out", "{tmp}/v.html"], "no A/B report at"),
])
def test_output_and_input_paths_that_cannot_be_are_one_line(tmp_path, capsys, argv, message):
    """0.4.1 traced back on each (OSError: File name too long, NotADirectoryError, IsADirectoryError).
    The run named need not exist: the output path is checked before the run is read."""
    (tmp_path / "file").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.html").mkdir()
    status, err = run_main([a.replace("{tmp}", str(tmp_path)) if isinstance(a, str) else a for a in argv], capsys)
    assert status == 2 and message.replace("{tmp}", str(tmp_path)) in err, err
    assert len(err.strip().splitlines()) == 1 and (tmp_path / "file").read_text() == "mine"


# --------------------------------------------------------------------------- 2. crafted trajectory files

def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz_members(steps=3, fields=("prev_sample",), frame=(1, 1, 8, 8)) -> dict:
    """The members of a trajectory .npz as np.savez writes them (not by ppddpm's writer)."""
    meta = {"format": "ppddpm.trajectory", "format_version": 1, "fields": list(fields), "complete": True}
    rng = np.random.RandomState(0)
    arrays = {"timesteps": np.arange(steps)[::-1].astype(np.int64), "sigma": np.ones(steps),
              "clip_fraction": np.zeros(steps, np.float32), "stages": np.array([""] * steps),
              "__ppddpm_meta__": np.array(json.dumps(meta))}
    arrays.update({name: rng.standard_normal((steps,) + frame).astype(np.float32) for name in fields})
    return {f"{name}.npy": npy_bytes(a) for name, a in arrays.items()}


def npy_header(shape, descr="<f4") -> bytes:
    """A version 1.0 .npy header announcing `shape` (NEP 1 layout: magic, version, length, dict, padding)."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    text += " " * (63 - (10 + len(text)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def write_zip(path, members: dict, method=zipfile.ZIP_STORED, entries=None):
    """`members` zipped by zipfile (`method`), then each entry's directory fields in `entries`
    ({name: {attribute: value}}) changed before the directory is written."""
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, changes in (entries or {}).items():
            for attribute, value in changes.items():
                setattr(archive.getinfo(name), attribute, value)
    return path


def deflated_zeros(header: bytes, megabytes: int) -> bytes:
    """A raw DEFLATE stream of `header` then `megabytes` MiB of zeros, built from one compressed MiB
    repeated (each block byte-aligned by a full flush), ending in an empty final block: ~1 KB a MiB."""
    head, mib = zlib.compressobj(9, zlib.DEFLATED, -15), zlib.compressobj(9, zlib.DEFLATED, -15)
    first = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
    block = mib.compress(bytes(2 ** 20)) + mib.flush(zlib.Z_FULL_FLUSH)
    return first + block * megabytes + b"\x03\x00"


def test_a_deflate_bomb_is_refused_before_it_is_decompressed(tmp_path):
    """1 MB of zip whose x̂_0 member declares 1 GiB of frames of another shape than x_{t−1}'s: 0.4.1
    peaked at ~1 GB (np.load decompressed it, then the shapes were checked); the headers alone show
    it is not this run's field."""
    members = npz_members(steps=4, fields=("prev_sample", "pred_original_sample"))
    header = npy_header((4, 1, 1, 8, 2 ** 23))                      # 4 frames of 8 × 2²³ float32: 1 GiB
    crc = zlib.crc32(header)
    for _ in range(1024):
        crc = zlib.crc32(bytes(2 ** 20), crc)
    members["pred_original_sample.npy"] = deflated_zeros(header, 1024)
    bomb = write_zip(tmp_path / "bomb.npz", members, entries={"pred_original_sample.npy": {
        "compress_type": zipfile.ZIP_DEFLATED, "file_size": len(header) + 2 ** 30, "CRC": crc}})
    assert bomb.stat().st_size < 2 ** 21
    tracemalloc.start()
    try:
        with pytest.raises(ppddpm.TrajectoryError, match="not a well-formed ppddpm trajectory: field"):
            ppddpm.Trajectory.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 25, f"{peak / 2 ** 20:.0f} MiB allocated while refusing a bomb"     # headers only: < 32 MiB


def sparse_zip64(path, entries):
    """A ZIP64 archive written byte by byte (APPNOTE 4.3, 4.5.3): `entries` are (name, method, data,
    hole, declared size, CRC-32); `hole` bytes of nothing follow each entry's data (a sparse file:
    they take no disk), so an entry can honestly hold 32 GiB of compressed bytes."""
    with open(path, "wb") as fh:
        central = b""
        for name, method, data, hole, declared, crc in entries:
            offset, name = fh.tell(), name.encode()
            fh.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 33, 0, 0, 0, len(name), 0) + name)
            fh.write(data)
            fh.seek(hole, 1)
            extra = struct.pack("<HHQQQ", 1, 24, declared, len(data) + hole, offset)
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 33, crc, 0xFFFFFFFF,
                                   0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
        start = fh.tell()
        fh.write(central)
        end64 = fh.tell()
        fh.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central),
                             start))
        fh.write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
        fh.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return path


def test_a_member_declaring_more_than_memory_holds_is_refused_before_decompressing(tmp_path):
    """32 GiB of deflated data (a hole in a sparse file) declaring 32 TiB, within DEFLATE's 1032:1:
    refused by the declared size against the memory available, with nothing but headers read."""
    count = 2 ** 43                                                 # float32 frames: 32 TiB
    header = npy_header((count,))
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = packer.compress(header + np.random.RandomState(0).bytes(2 ** 16)) + packer.flush(zlib.Z_SYNC_FLUSH)
    meta = npz_members()["__ppddpm_meta__.npy"]
    archive = sparse_zip64(tmp_path / "big.npz", [("__ppddpm_meta__.npy", 0, meta, 0, len(meta), zlib.crc32(meta)),
                                                  ("prev_sample.npy", 8, data, 2 ** 35, len(header) + 4 * count, 0)])
    with pytest.raises(ppddpm.TrajectoryError, match=r"declares \d+\.\d GB of arrays, more than the .* available"):
        ppddpm.Trajectory.load(archive)
    assert archive.stat().st_blocks * 512 < 2 ** 22                  # the test's file takes no room on disk


@pytest.mark.parametrize("case,message", [
    ("bzip2", "compressed with zip method 12; ppddpm reads stored or deflated members"),
    ("lzma", "compressed with zip method 14"),
    ("method 99", "compressed with zip method 99"),
    ("encrypted", "is encrypted; ppddpm reads plain .npz files"),
    ("strongly encrypted", "is encrypted and strongly encrypted"),
    ("declared 2000 times its deflated size", "which cannot be"),
    ("stored size ≠ declared", "which cannot be"),
    ("header announces more than the member holds", "announces (3, 1, 1, 8, 9) of <f4"),
    ("object array", "holds Python objects"),
    ("metadata not one string", "not one JSON string"),
    ("metadata nested 100 000 deep", "JSON nested more deeply than ~1000 levels"),
])
def test_crafted_zips_are_one_trajectory_error(tmp_path, case, message):
    """Each was a traceback in 0.4.1 (NotImplementedError, RuntimeError: password required,
    RecursionError), or is a lie the reader must not act on."""
    members, entries, method = npz_members(), None, zipfile.ZIP_STORED
    method = {"bzip2": zipfile.ZIP_BZIP2, "lzma": zipfile.ZIP_LZMA}.get(case, method)
    if case in ("method 99", "encrypted", "strongly encrypted"):
        change = {"method 99": {"compress_type": 99}, "encrypted": {"flag_bits": 0x1},
                  "strongly encrypted": {"flag_bits": 0x41}}[case]
        entries = {"timesteps.npy": change}
    elif case.startswith("declared 2000"):
        method = zipfile.ZIP_DEFLATED
        members["prev_sample.npy"] = npy_bytes(np.zeros((3, 1, 1, 8, 8), np.float32))
    elif case.startswith("stored size"):
        entries = {"sigma.npy": {"file_size": len(members["sigma.npy"]) + 8}}
    elif case.startswith("header announces"):
        members["prev_sample.npy"] = members["prev_sample.npy"].replace(b"1, 8, 8)", b"1, 8, 9)")
    elif case == "object array":
        members["stages.npy"] = members["stages.npy"].replace(b"'<U1'", b"'|O' ")
    elif case.startswith("metadata not"):
        members["__ppddpm_meta__.npy"] = npy_bytes(np.array(["{}", "{}"]))
    elif case.startswith("metadata nested"):
        members["__ppddpm_meta__.npy"] = npy_bytes(np.array("[" * 100_000 + "]" * 100_000))
    path = write_zip(tmp_path / "crafted.npz", members, method, entries)
    if case.startswith("declared 2000"):
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("prev_sample.npy")
        write_zip(path, members, method, {"prev_sample.npy": {"file_size": 2000 * info.compress_size}})
    with pytest.raises(ppddpm.TrajectoryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ppddpm.Trajectory.load(path)


def test_an_honest_compressed_npz_from_numpy_still_loads(tmp_path):
    """The checks refuse lies, not np.savez_compressed: its deflated members load as before."""
    members = npz_members()
    arrays = {name[:-4]: np.load(io.BytesIO(data)) for name, data in members.items()}
    np.savez_compressed(tmp_path / "small.npz", **arrays)
    loaded = ppddpm.Trajectory.load(tmp_path / "small.npz")
    assert np.array_equal(loaded.prev_sample, arrays["prev_sample"]) and len(loaded) == 3


def test_metadata_nested_100000_deep_is_one_line_in_streams_and_ab_files(tmp_path, pipe, capsys):
    """meta.json of a streamed folder, and the --ab file of `ppddpm view`: RecursionError in 0.4.1."""
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3, store="disk", path=tmp_path / "stream")
    (tmp_path / "stream" / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ppddpm.TrajectoryError, match="meta.json: JSON nested more deeply"):
        ppddpm.Trajectory.load(tmp_path / "stream")
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3).save(tmp_path / "run.npz")
    (tmp_path / "ab.json").write_text('{"variants": ' * 100_000 + "1" + "}" * 100_000)
    status, err = run_main(["view", tmp_path / "run.npz", "--ab", tmp_path / "ab.json", "--out",
                            tmp_path / "v.html"], capsys)
    assert status == 2 and "is not an A/B report: JSON nested more deeply" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "v.html").exists()


def test_a_stream_whose_files_are_not_written_yet_loads_with_0_steps_only_when_none_is_counted(tmp_path, pipe):
    """The states a run killed right after its folder appeared leaves: steps.npy absent or empty, a
    field's file empty — 0 steps, said as such; the same files with steps counted are corrupt."""
    ppddpm.sample_trajectory(pipe, seed=1, num_inference_steps=3, store="disk", path=tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    (tmp_path / "s" / "meta.json").write_text(json.dumps(dict(meta, steps_on_disk=0, complete=False)))
    (tmp_path / "s" / "prev_sample.npy").write_bytes(b"")
    (tmp_path / "s" / "steps.npy").write_bytes(b"\x93NUMPY\x01\x00")              # killed mid-header
    empty = ppddpm.Trajectory.load(tmp_path / "s")
    assert len(empty) == 0 and not empty.complete and "0 steps" in repr(empty)
    with pytest.raises(InputError, match="the trajectory holds 0 recorded steps \\(its run stopped before"):
        empty.check_recorded()
    (tmp_path / "s" / "steps.npy").unlink()
    assert len(ppddpm.Trajectory.load(tmp_path / "s")) == 0
    (tmp_path / "s" / "meta.json").write_text(json.dumps(dict(meta, steps_on_disk=2, complete=False)))
    with pytest.raises(ppddpm.TrajectoryError, match="truncated or corrupt"):
        ppddpm.Trajectory.load(tmp_path / "s")


# --------------------------------------------------------------------------- 3. data folders

def png_header(width, height) -> bytes:
    """A PNG of `width`×`height` grey pixels that holds its header only (PNG spec 5.3: chunk = length,
    type, data, CRC): what PIL's Image.open reads before it decodes anything."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("make,message", [
    (lambda f: os.mkfifo(f), "is a FIFO; give a regular file"),
    (lambda f: f.write_bytes(png_header(40000, 40000)), "has more than 16777216 pixels"),      # PIL's own cap, said so
    (lambda f: f.write_bytes(png_header(5000, 5000)), "is 5000×5000 pixels, more than 16777216"),
    (lambda f: f.write_bytes(png_header(8, 8)[:-30]), "is not an image PIL can read"),           # truncated
    (lambda f: f.write_bytes(b"not an image"), "is not an image PIL can read"),
])
def test_data_folders_with_a_fifo_a_bomb_or_a_broken_png_are_one_line(tmp_path, capsys, make, message):
    """`train --data DIR`: a FIFO named x.png blocked 0.4.1 forever (the alarm here turns that into a
    failure), a 40000² PNG traced back, a 5000² one was decoded (75 MB), a broken one traced back."""
    data = tmp_path / "data"
    data.mkdir()
    Image.new("L", (8, 8)).save(data / "a.png")
    make(data / "x.png")

    def hung(*_):
        raise TimeoutError("reading the data folder hung")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        status, err = run_main(["train", "--data", data, "--steps", 1, "--out", tmp_path / "o", "--quiet"], capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert status == 2 and message in err and str(data / "x.png") in err, err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 4. streams killed at random moments

STEPS, SEED = 200, 5
KILL_SEED = 32          # the kill test's random moments are drawn from RandomState(KILL_SEED)


def sample_cmd(model, out, every):
    return [sys.executable, "-m", "ppddpm", "sample", "--model", str(model), "--steps", str(STEPS), "--all-fields",
            "--every", str(every), "--seed", str(SEED), "--out", str(out), "--quiet"]


def on_disk(stream) -> int:
    """The steps meta.json counts as fsync'd (replaced atomically: a read sees a whole file)."""
    try:
        return int(json.loads((stream / "meta.json").read_text()).get("steps_on_disk") or 0)
    except (OSError, ValueError):
        return 0


def frozen(proc) -> bool:
    """The process is stopped (SIGSTOP delivered) or gone."""
    try:
        with open(f"/proc/{proc.pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in "TtZX"
    except FileNotFoundError:
        return True


def snapshot(proc, out, dest):
    """What a SIGKILL at this instant leaves: the process frozen by SIGSTOP (a SIGKILL loses its
    unflushed buffers just the same; the files are what the kernel holds), --out copied, resumed."""
    proc.send_signal(signal.SIGSTOP)
    while not frozen(proc):
        time.sleep(0.0002)
    shutil.copytree(out, dest, symlinks=True)
    proc.send_signal(signal.SIGCONT)
    return dest


def wait_for(stream, proc, steps, delay, deadline):
    """Until `steps` steps are on disk (or the run ended), then `delay` seconds more."""
    while on_disk(stream) < steps and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    time.sleep(delay)


def drive(proc, out, plan):
    """Wait for the run's stream folder, then for each moment of `plan` — (steps on disk, seconds more,
    signal or None) — wait for it and take a snapshot (None) or send the signal (the plan's last).
    Returns the moments taken ([(folder left, steps on disk waited for)]) and the run's stderr."""
    stream, deadline, taken = out / f"trajectory_seed{SEED}", time.time() + 900, []
    while not stream.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.0005)
    assert proc.poll() is None, "the run ended before its stream folder appeared"
    for k, (steps, delay, sig) in enumerate(plan):
        wait_for(stream, proc, steps, delay, deadline)
        if sig is None and proc.poll() is None:
            taken.append((snapshot(proc, out, out.with_name(f"{out.name}-at-{k}")), steps))
        elif sig is not None:
            assert proc.poll() is None, f"the run ended before it could be sent {sig!r}"
            proc.send_signal(sig)
            taken.append((out, steps))
    return taken, proc.communicate(timeout=600)[1]


def matches_the_finished_run(folder, full, every, what):
    """`folder`'s stream loads (or, once finished, its .npz) and is the first n recorded steps of
    `every` of the uninterrupted run `full` (every step), bit for bit in every field; returns n."""
    stream, npz = folder / f"trajectory_seed{SEED}", folder / f"trajectory_seed{SEED}.npz"
    kept = sorted(set(range(every - 1, STEPS, every)) | {STEPS - 1})      # "every k-th step, and the last"
    part = ppddpm.Trajectory.load(stream if stream.exists() else npz)
    n = len(part)
    assert n <= len(kept) and part.complete == (n == len(kept)), (what, n, part.complete)
    assert stream.exists() or n == len(kept), what                       # no stream: the finished .npz
    assert np.array_equal(part.timesteps, full.timesteps[kept[:n]]), what
    for name in full.fields if n else ():              # 0 steps: a field whose file was not made has no frame shape
        assert np.array_equal(np.asarray(part.field(name)), full.field(name)[kept[:n]]), (what, name)
    return n


def test_streams_killed_at_random_moments_load_and_match_the_finished_run(tmp_path, saved_pipe_dir):
    """Four real `ppddpm sample --steps 200 --all-fields --seed 5` runs at once (0.4.1 left folders that
    did not load: "EOF reading magic string"), at the issue's --every 1, 7 and 50:
    - every 1, left to finish: the oracle, snapshotted at 6 moments (`snapshot`: SIGSTOP, copy, SIGCONT),
      the last as it saves its .npz and removes its stream (if it has not ended by then);
    - every 50: SIGKILL 0–2 ms after its folder appears;
    - every 7: 2 snapshots, then SIGKILL once a first chunk is on disk and 0–0.3 s more;
    - every 1: a snapshot, then SIGTERM likewise: one line saying what is kept, exit 143.
    A chunk is 64 step calls, handed to the disk when the next one is full: steps reach the disk at
    calls 128, 192 and the end. Each moment waits for a count of steps on disk, then a random time
    (drawn from RandomState(KILL_SEED = 32): the moments follow the run's progress, not the clock,
    so a busy machine cannot end a run first); each folder left must load, hold at least the steps
    waited for, and be bitwise the finished run's first steps."""
    r = np.random.RandomState(KILL_SEED).uniform
    plans = {"full": (1, [(0, 0.0, None), (0, r(0, 0.05), None), (0, r(0.05, 0.5), None), (64, r(0, 0.3), None),
                          (128, r(0, 0.2), None), (200, r(0, 0.05), None)]),
             "every50": (50, [(0, r(0, 0.002), signal.SIGKILL)]),
             "every7": (7, [(0, r(0, 0.5), None), (0, r(0.5, 1.0), None), (9, r(0, 0.3), signal.SIGKILL)]),
             "every1": (1, [(0, r(0, 0.5), None), (64, r(0, 0.3), signal.SIGTERM)])}
    procs = {name: subprocess.Popen(sample_cmd(saved_pipe_dir, tmp_path / name, every), stderr=subprocess.PIPE,
                                    text=True) for name, (every, _) in plans.items()}
    with concurrent.futures.ThreadPoolExecutor(len(plans)) as pool:
        runs = {name: pool.submit(drive, procs[name], tmp_path / name, plans[name][1]) for name in plans}
        done = {name: run.result() for name, run in runs.items()}
    assert procs["full"].returncode == 0, done["full"][1]
    full = ppddpm.Trajectory.load(tmp_path / "full" / f"trajectory_seed{SEED}.npz")
    assert len(full) == STEPS and full.complete and not (tmp_path / "full" / f"trajectory_seed{SEED}").exists()
    left = [(name, plans[name][0], folder, steps) for name, (taken, _) in done.items() for folder, steps in taken]
    assert len(left) >= 6, left                         # the snapshots that came before their run's end, and 3 kills
    for name, every, folder, steps in left:
        assert matches_the_finished_run(folder, full, every, f"{name}: {folder.name}") >= steps, (name, folder)
    assert procs["every50"].returncode == procs["every7"].returncode == -signal.SIGKILL
    kept, err = len(ppddpm.Trajectory.load(tmp_path / "every1" / f"trajectory_seed{SEED}")), done["every1"][1]
    assert procs["every1"].returncode == 143 and len(err.strip().splitlines()) == 1, err   # as Ctrl-C: 128 + 15
    assert "terminated (SIGTERM) after" in err and f"the {kept} recorded steps are kept" in err, err
