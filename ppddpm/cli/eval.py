"""`ppddpm eval`: digit-classifier scores of a model's samples vs real held-out digits.

The samples are scored as they come, chunk by chunk (`ppddpm.analysis.metrics.ScoreTally`), and with
--out appended to samples.npz as they come, so `--n 100000` holds a chunk of samples, not all of them.
"""
from __future__ import annotations

import contextlib
import zipfile

import numpy as np
from numpy.lib import format as npy

from ppddpm._io import atomic_path
from ppddpm._progress import cli_choice
from ppddpm.analysis.metrics import ScoreTally, evaluate, sample_batches
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.core.ranks import is_lead
from ppddpm.cli.common import (check_memory, declared_checks, image_bytes, load_model, output_folder,
                               pixel_pipeline, refuse_overwrite, unet_bytes_per_sample)
from ppddpm.errors import BadValue
from ppddpm.pictures import plotting

MAX_EVAL = 100_000           # samples one `ppddpm eval` draws
CHUNK = 64 * 4 * 16          # samples held at once, at most: 4 batches of 64 a rank, on up to 16 ranks


class EvalCommand(Command):
    """Draw --n samples (seeds S … S+n−1) and print `ppddpm.analysis.metrics.EvalReport`'s table;
    with --out also scores.json, the samples (samples.npz) and their contact sheet (samples.png)."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("eval", help="digit-classifier scores of a model's samples vs real held-out digits")
        options.add_model(p)
        p.add_argument("--n", type=options.int_at_least(1, "--n", MAX_EVAL, " (samples scored at once; more add "
                                                                           "nothing to the scores' precision worth "
                                                                           "the hours)"),
                       default=64, help="number of samples")
        options.add_steps(p, "num_inference_steps of each sample")
        options.add_first_seed(p, "the first seed: samples use seeds S … S+n-1")
        options.add_out(p, None, "a folder for scores.json, the samples (samples.npz) and their contact sheet "
                                 "(samples.png) (default: none, scores printed only)")
        options.add_quiet(p)
        options.add_launch(p)
        p.set_defaults(func=cls)

    def run(self):
        args = self.args
        declared_checks(args, pixel_only="ppddpm eval")          # what --model's files decide, before paddle loads
        out = output_folder(args) if args.out else None          # a bad --out fails before minutes of sampling
        if out is not None:
            refuse_overwrite(args, out / "scores.json")
        pipe = pixel_pipeline(load_model(args), "ppddpm eval")
        check_memory(f"--n {args.n}", min(args.n, CHUNK) * image_bytes(pipe) + 64 * unet_bytes_per_sample(pipe))
        if pipe.unet.config.in_channels != 1:
            raise BadValue("ppddpm eval scores digit models (1 channel); this pipeline has "
                           f"{pipe.unet.config.in_channels} channels")
        chunks = sample_batches(pipe, n=args.n, seed=args.seed, num_inference_steps=args.steps,
                                progress=cli_choice(args.quiet))
        if not is_lead():
            for _ in chunks:                 # the other ranks draw their share of every chunk, and nothing else
                pass
            return
        tally, sheet = ScoreTally(), []
        with contextlib.ExitStack() as files:
            keep = files.enter_context(samples_npz(out / "samples.npz", args.n, args.seed)) if out else None
            for images in chunks:
                tally.add(images)
                if keep is not None:
                    keep(images)
                    sheet.append(images[:options.SHEET - sum(map(len, sheet))])
            report = evaluate(tally, args.steps, args.seed, resolution=pipe.unet.config.sample_size)
            print(report.table())
            if out is not None:
                report.save_json(out / "scores.json")
        if out is not None:
            self._sheet(out, np.concatenate(sheet))

    def _sheet(self, out, images):
        plotting.contact_sheet(images, save=out / "samples.png")
        shown = "" if len(images) == self.args.n else f"; the sheet shows the first {len(images)}"
        print(f"wrote {out / 'scores.json'}, {out / 'samples.npz'} (the {self.args.n} samples in [-1, 1]{shown}) "
              f"and {out / 'samples.png'}")


@contextlib.contextmanager
def samples_npz(path, n: int, seed: int):
    """Yields `keep(images)`, which appends the next samples [k, C, H, W] to the .npz at `path`, written
    as numpy.savez writes it (a zip of stored .npy members: `samples` [n, C, H, W] float32, `seeds`
    [n]) but as the samples come; the file appears (atomically) when all n were kept."""
    with atomic_path(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED,
                                                                   allowZip64=True) as archive:
        member, kept = None, 0

        def keep(images):
            nonlocal member, kept
            if member is None:
                member = archive.open("samples.npy", "w", force_zip64=True)
                npy.write_array_header_2_0(member, {"descr": npy.dtype_to_descr(images.dtype), "fortran_order": False,
                                                    "shape": (n,) + images.shape[1:]})
            member.write(np.ascontiguousarray(images).tobytes())
            kept += len(images)

        try:
            yield keep
        finally:
            if member is not None:
                member.close()           # a zip refuses to close with a member open, even on the way out of an error
        if kept != n:
            raise RuntimeError(f"samples.npz: {kept} samples kept of the {n} announced")
        with archive.open("seeds.npy", "w", force_zip64=True) as fh:
            npy.write_array(fh, np.arange(seed, seed + n))
