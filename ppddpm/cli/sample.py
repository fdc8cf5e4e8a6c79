"""`ppddpm sample`: sample with a pipeline, write PNGs and the trajectory .npz of each seed."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ppddpm._io import discard
from ppddpm._progress import cli_choice
from ppddpm.cli import options
from ppddpm.cli.command import Command
from ppddpm.core.ranks import is_lead, on_lead_node
from ppddpm.cli.common import (carried, declared_checks, distinct_seeds, image_bytes, land, load_model, output_folder,
                               refuse_overwrite, seed_span, share_folder)
from ppddpm.cli.signals import interrupt_status, stopped
from ppddpm.core.adapters import families
from ppddpm.core.config import with_config
from ppddpm.core.distributed import sharded
from ppddpm.pipelines.to_file import sample_to_file, stream_folder
from ppddpm.errors import BadValue, check_memory
from ppddpm.pictures.plotting import contact_sheet
from ppddpm.pipelines.latent import kind_of, latent_meta, supported_pipelines
from ppddpm.storage.trajectory import Trajectory

LATENT_OPTIONS = ("prompt", "negative_prompt", "guidance_scale", "class_label", "decode")

eta = options.positive_float(
    "--eta", zero=True, high=1.0,
    what=" (η of eq. 16: 0 deterministic, 1 DDPM's noise; above 1 σ_t² exceeds 1 − ᾱ_prev: NaN)")


def class_labels(text):
    """--class-label: class ids, comma-separated; one sample each, so at most MAX_BATCH (one UNet call)."""
    try:
        labels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        labels = []
    if not labels or min(labels) < 0:
        raise argparse.ArgumentTypeError(f"--class-label takes class ids, comma-separated (e.g. 207,360), got {text!r}")
    if len(labels) > options.MAX_BATCH:
        raise argparse.ArgumentTypeError(f"--class-label takes at most {options.MAX_BATCH} ids (one sample each, in "
                                         f"one denoiser call), got {len(labels)}")
    return labels


def run_name(seed, batch_size) -> str:
    """seed7, or seed7_batch4: a batch's image 0 is not the seed's batch-1 sample."""
    return f"seed{seed}" + (f"_batch{batch_size}" if batch_size > 1 else "")


class SampleCommand(Command):
    """Sample, streaming the trajectory to OUT/trajectory_<run>/ as it goes: a Ctrl-C keeps the
    steps done (and says how to load them); a finished run becomes trajectory_<run>.npz. Several
    seeds are several runs (split over the ranks with --nproc), and a sheet of their samples."""

    @classmethod
    def register_subcommand(cls, commands):
        p = commands.add_parser("sample", help="sample with a pipeline, write PNGs and the trajectory .npz")
        options.add_model(p)
        options.add_seed_list(p, "an integer, a comma-separated list or a range (0-15): one run per seed")
        options.add_steps(p)
        options.add_batch_size(p, "samples per run (one pipeline call)")
        p.add_argument("--every", type=options.positive("--every"), default=1,
                       help="record every k-th step (and always the last)")
        p.add_argument("--scheduler", choices=list(families()), default=None,
                       help="sample with this sampler, made from the model's scheduler config (default: the model's "
                            "own)")
        p.add_argument("--eta", type=eta, default=None, help="with --scheduler ddim: η of eq. (16) (default: 0)")
        p.add_argument("--all-fields", action="store_true", help="also record x_t, ε̂, unclipped x̂_0 and z")
        cls._latent_options(p)
        options.add_out(p, "runs/sample", "folder for the PNGs and trajectory_<run>.npz")
        options.add_quiet(p)
        options.add_launch(p)
        p.set_defaults(func=cls)

    @staticmethod
    def _latent_options(p):
        p.add_argument("--prompt", default=None, help="StableDiffusionPipeline folders: the text prompt")
        p.add_argument("--negative-prompt", default=None, help="with --prompt: the negative prompt")
        p.add_argument("--guidance-scale", type=options.positive_float("--guidance-scale", zero=True), default=None,
                       help="classifier-free guidance scale (default: the pipeline's own, 7.5 for Stable Diffusion, 4 "
                            "for DiT)")
        p.add_argument("--class-label", type=class_labels, default=None,
                       help="DiTPipeline folders: class ids, comma-separated (one sample each)")
        p.add_argument("--decode", choices=["vae", "approx"], default=None,
                       help="latent pipelines: also keep x̂_0 decoded to pixels at every recorded step, by the VAE or "
                            "by a fitted linear latent→RGB preview")

    def run(self):
        args = self.args
        if args.eta is not None and args.scheduler != "ddim":
            raise BadValue(f"--eta is DDIM's η (eq. 16); use it with --scheduler ddim, not "
                           f"{args.scheduler or 'the default'}")
        if args.every > args.steps:
            raise BadValue(f"--every {args.every} is more than --steps {args.steps}: only the last step would be "
                           f"recorded; choose --every between 1 and {args.steps}")
        declared = declared_checks(args)         # what --model's files decide, before paddle loads
        if declared is not None:
            latent_options(args, declared.kind, declared.pipeline, declared.name)
        out = output_folder(args)
        distinct_seeds(args)
        seeds = args.seed if isinstance(args.seed, list) else [args.seed]
        for seed in seeds if on_lead_node() else ():      # every run's folder is checked before any sampling
            self._clear_or_refuse(out / f"trajectory_{run_name(seed, args.batch_size)}.npz")
        pipe = load_model(args)
        self.latent_call = latent_call(args, pipe)
        check_memory(f"keeping the final samples of {len(seeds)} seeds × --batch-size {args.batch_size}",
                     len(seeds) * args.batch_size * final_bytes(pipe))
        if args.scheduler:
            pipe = self._with_scheduler(pipe, args.scheduler)
        here = share_folder(out)
        done = sharded([[seed] for seed in seeds], lambda group: self._sample_one(pipe, here, out, group[0]), "sample")
        if is_lead():
            self._report(out, seeds, done)

    def _clear_or_refuse(self, npz):
        """An earlier interrupted run's stream goes with --force (else one line; removed by rank 0 alone,
        before any rank begins); a finished .npz needs --force."""
        stream = stream_folder(npz)
        if os.path.lexists(stream) and self.args.force:
            if is_lead():
                discard(stream)              # a link there goes, not what it points to
            print(f"removed {stream}, an earlier interrupted run (--force)", file=sys.stderr)
        elif os.path.lexists(stream):
            raise BadValue(f"{stream} holds an earlier (interrupted?) run; load it with ppddpm.Trajectory.load, then "
                           f"remove it, choose another --out, or pass --force to overwrite it")
        refuse_overwrite(self.args, npz)

    def _with_scheduler(self, pipe, family):
        """`pipe` sampling with `family`: a pixel pipeline through `with_sampler`, a latent one with its
        scheduler swapped for one made from its config (its own loop runs it)."""
        if self.latent_call is None:
            from ppddpm.pipelines.sampler import with_sampler  # lazy: pipelines.sampler imports paddle

            return with_sampler(pipe, family)
        import ppdiffusers

        pipe.scheduler = with_config(pipe.scheduler, cls=getattr(ppdiffusers, families()[family][0]))
        return pipe

    def _report(self, out, seeds, done):
        """Every rank's files, said by the rank the user reads; several seeds: one sheet of their samples."""
        for _, written, files in done:
            land(out, files)
            print(written)
        if len(seeds) > 1:
            sheet = out / f"sheet_seeds{seed_span(seeds)}.png"
            final = np.concatenate([final for final, _, _ in done])
            shown = final[:options.SHEET]
            contact_sheet(shown, ncols=min(8, len(shown)), scale=max(1, 128 // final.shape[-1]), save=sheet)
            print(f"wrote {sheet}: the {len(final)} samples of seeds {seed_span(seeds)}"
                  + (f" (the first {len(shown)} shown)" if len(shown) < len(final) else "")
                  + " (one trajectory .npz per seed)")

    def _sample_one(self, pipe, here, out, seed):
        """One seed's run in the folder `here` (`share_folder`): the streamed trajectory, then its .npz
        and PNGs; returns the final x_0 [B, C, H, W], the line that lists the files in --out (printed by
        the lead rank, for every rank's seeds) and the files another node carries there (`carried`)."""
        args, run = self.args, run_name(seed, self.args.batch_size)
        npz = here / f"trajectory_{run}.npz"
        call = dict({"eta": args.eta} if args.eta is not None else {}, **(self.latent_call or {}))
        fields = "all" if args.all_fields else ("prev_sample", "pred_original_sample")
        decode = {"decode": args.decode} if args.decode else {}
        try:
            done = sample_to_file(pipe, npz, seed=seed, num_inference_steps=args.steps, batch_size=args.batch_size,
                                  every=args.every, fields=fields, progress=cli_choice(args.quiet),
                                  pipe_kwargs=call or None, **decode)
        except KeyboardInterrupt as exc:
            self._stopped_at(stream_folder(npz), exc)
        final = done.final if self.latent_call is None else final_images(done.images)
        names, scale = write_samples(final, here, run)
        calls = done.meta["num_inference_steps"]          # calls of step: Heun makes 2n − 1 of n sampling steps
        steps = (f"{len(done)} recorded steps of {args.steps}" if calls == args.steps else
                 f"{len(done)} recorded of {calls} step calls, {args.steps} sampling steps")
        return (final, f"wrote {', '.join(str(out / name) for name in names)} ({scale}x nearest) and {out / npz.name} "
                       f"({steps})", carried(here, out, [*names, npz.name]))

    def _stopped_at(self, stream, exc):
        """Ctrl-C or SIGTERM mid-run: one line saying where the recorded steps are, and the exit status."""
        kept = Trajectory.load(stream) if stream.is_dir() else None
        done = kept.meta.get("steps_run", 0) if kept is not None else 0
        where = (f"the {len(kept)} recorded steps are kept in {stream} (ppddpm grid {stream}, or "
                 f"ppddpm.Trajectory.load({str(stream)!r}))" if kept else
                 f"no recorded step had reached the disk: {stream} holds 0 steps" if kept is not None else
                 "nothing was recorded")
        print(f"ppddpm sample: {stopped(exc)} after {done} of {self.args.steps} steps; {where}", file=sys.stderr)
        raise SystemExit(interrupt_status(exc)) from None


def write_samples(final, out, run):
    """sample_<run>.png (sample_<run>_<i>.png and sheet_<run>.png for a batch) in `out`, upscaled to
    128 px by nearest neighbour (pixels stay pixels); returns the file names and the scale."""
    scale = max(1, 128 // final.shape[-1])
    names = []
    for i in range(len(final)):
        names.append(f"sample_{run}.png" if len(final) == 1 else f"sample_{run}_{i}.png")
        contact_sheet(final[i:i + 1], scale=scale, gap=0, save=out / names[-1])
    if len(final) > 1:
        names.append(f"sheet_{run}.png")
        contact_sheet(final, ncols=min(8, len(final)), scale=scale, save=out / names[-1])
    return names, scale


def final_bytes(pipe) -> float:
    """One final sample's bytes as `sample` keeps it (float32): a latent pipeline's decoded image, else x_0."""
    shape = (latent_meta(pipe) or {}).get("image_shape")
    return 4.0 * float(np.prod(shape)) if shape else image_bytes(pipe)


def final_images(images):
    """A latent run's final images (the pipeline's own output) as [B, 3, H, W] in [−1, 1]."""
    return np.stack([np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 127.5 - 1 for im in images])


def latent_options(args, kind, pipeline: str, model: str):
    """The one-line refusals of --prompt / --negative-prompt / --guidance-scale / --class-label /
    --decode that the pipeline's kind decides (`kind` None: a pixel pipeline, where none applies;
    `pipeline` its class name, `model` as --model names it): answered from --model's files before
    paddle loads (`ppddpm.cli.common.declared_model`), and again for the pipeline loaded."""
    given = [o for o in LATENT_OPTIONS if getattr(args, o, None) is not None]
    if kind is None:
        if given:
            raise BadValue(f"{', '.join(map(_flag, given))} {'needs' if len(given) == 1 else 'need'} a latent "
                           f"pipeline ({supported_pipelines()}); {model} is a {pipeline}")
        return
    wanted = {"stable-diffusion": ("prompt",), "dit": ("class_label",), "ldm": ()}[kind.name]
    allowed = set(wanted) | {"decode"} | ({"negative_prompt", "guidance_scale"} if kind.halves else set())
    wrong = [o for o in given if o not in allowed]
    if wrong:
        raise BadValue(f"{', '.join(map(_flag, wrong))} do not apply to a {pipeline}; it takes "
                       f"{', '.join(map(_flag, sorted(allowed)))}")
    missing = [o for o in wanted if getattr(args, o) is None]
    if missing:
        raise BadValue(f"a {pipeline} needs {_flag(missing[0])}")


def latent_call(args, pipe):
    """The pipeline arguments of --prompt / --negative-prompt / --guidance-scale / --class-label for a
    latent pipeline (None for a pixel one, where these options are refused in one line)."""
    kind = kind_of(pipe)
    latent_options(args, kind, type(pipe).__name__, args.model or "the bundled model")
    if kind is None:
        return None
    classes = getattr(getattr(pipe, "transformer", None), "config", {}).get("num_embeds_ada_norm") if \
        args.class_label else None
    if classes and max(args.class_label) >= classes:
        raise BadValue(f"--class-label takes ids 0 to {classes - 1} for this model; got {max(args.class_label)}")
    call = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "guidance_scale": args.guidance_scale,
            "class_labels": args.class_label}
    return {k: v for k, v in call.items() if v is not None}


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")
