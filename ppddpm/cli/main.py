"""`ppddpm` command line (also `python -m ppddpm`): a thin layer over the API.

Every subcommand writes into `--out`; bad input ends in one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from pathlib import Path

from ppddpm._progress import cli_choice
from ppddpm.errors import BadValue, InputError


MAX_SEED = 2 ** 32 - 1        # numpy's RandomState (training, metrics) takes no larger seed
MAX_SEEDS = 10_000           # seeds in one command: each is a run whose results are kept until the end


def _int_at_least(low, name, high=None, why=""):
    kind = "positive" if low == 1 else "non-negative"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be a {kind} integer, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{name} must be at most {high}{why}, got {value}")
        return value
    return parse


def _positive(name):
    return _int_at_least(1, name)


def _nonneg(name):
    return _int_at_least(0, name)


_steps = _positive("--steps")
MAX_BATCH = 4096             # images in one UNet call
MAX_EVAL = 100_000           # samples one `ppddpm eval` draws and holds
_batch_size = _int_at_least(1, "--batch-size", MAX_BATCH, " (images in one UNet call)")


def _check_memory(what: str, nbytes: float):
    """Refuse work whose estimated memory exceeds what this machine has available now."""
    import os

    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return                                   # no estimate on this platform: nothing to say
    if nbytes > free:
        raise BadValue(f"{what} needs about {nbytes / 2 ** 30:.1f} GB of memory by a rough estimate, and "
                       f"{free / 2 ** 30:.1f} GB are available; ask for less")


def _denoiser_config(pipe):
    """The config of the pipeline's denoiser: its UNet, or a DiT's transformer."""
    return (getattr(pipe, "unet", None) or pipe.transformer).config


def _pixels(pipe) -> int:
    size = _denoiser_config(pipe).sample_size
    return int(np.prod(size)) if not isinstance(size, int) else size * size


def _image_bytes(pipe) -> float:
    return 4.0 * _denoiser_config(pipe).in_channels * _pixels(pipe)


def _unet_bytes_per_sample(pipe) -> float:
    """A rough peak of a denoiser call per sample: its widest feature map (float32) ~32 times over
    (a transformer's width is its heads × head dimension)."""
    cfg = _denoiser_config(pipe)
    widths = cfg.get("block_out_channels") or [cfg.get("num_attention_heads", 16) * cfg.get("attention_head_dim", 72)]
    return 4.0 * max(widths) * _pixels(pipe) * 32


def _load(args):
    """The pipeline of --model, with --steps checked against its scheduler's num_train_timesteps."""
    from ppddpm.model.loading import load_pipeline

    pipe = load_pipeline(args.model, trust_pickle=getattr(args, "trust_pickle", False))
    _sigterm_stops()                     # again: importing paddle put its own C-level SIGTERM handler in place
    batch = getattr(args, "batch_size", None) or 1
    _check_memory(f"--batch-size {batch}", batch * _unet_bytes_per_sample(pipe))
    if getattr(args, "n", None):                   # eval holds every sample, and draws 64 at a time
        _check_memory(f"--n {args.n}", args.n * _image_bytes(pipe) + 64 * _unet_bytes_per_sample(pipe))
    steps, limit = getattr(args, "steps", None), pipe.scheduler.config.num_train_timesteps
    if steps is not None and steps > limit:
        raise BadValue(f"--steps must be at most {limit} (the model's num_train_timesteps), got {steps}")
    return pipe


def _pixel_pipeline(pipe, what):
    """`pipe` if it denoises pixels with a UNet (DDPM-like), else one line: a latent pipeline has no
    image-space forward process or digit scores to show."""
    from ppddpm.pipelines.latent import kind_of

    if kind_of(pipe) is not None or getattr(pipe, "unet", None) is None:
        raise BadValue(f"{what} works on pixel-space pipelines (a DDPMPipeline's UNet and scheduler); this is a "
                       f"{type(pipe).__name__}")
    return pipe


def _suites():
    from ppddpm.analysis.upstream import SUITES

    return SUITES


def _model_arg(p):
    p.add_argument("--model", default=None,
                   help="pipeline directory or hub id (default: the bundled offline model)")
    _trust_arg(p, "--model's weights even if pickled (model_state.pdparams)")


def _trust_arg(p, what):
    p.add_argument("--trust-pickle", action="store_true",
                   help=f"load {what}: unpickling runs any code in the file, use only for files you made (SECURITY.md)")


def _sampling_args(p, every_default=1):
    _model_arg(p)
    p.add_argument("--seed", type=_seeds, default=777,
                   help="an integer, a comma-separated list or a range (0-15): one run per seed")
    p.add_argument("--steps", type=_steps, default=1000, help="num_inference_steps (1 to the model's T)")
    p.add_argument("--batch-size", type=_batch_size, default=1, help="samples per run (one pipeline call)")
    p.add_argument("--every", type=_positive("--every"), default=every_default,
                   help="record every k-th step (and always the last)")


def cmd_sample(args):
    """Sample, streaming the trajectory to OUT/trajectory_<run>/ as it goes: a Ctrl-C keeps the
    steps done (and says how to load them); a finished run becomes trajectory_<run>.npz. Several
    seeds are several runs (split over the ranks with --nproc), and a sheet of their samples."""
    from ppddpm.core.distributed import sharded
    from ppddpm.pipelines.sampler import with_sampler
    from ppddpm.pictures.plotting import contact_sheet

    if args.eta is not None and args.scheduler != "ddim":
        raise BadValue(f"--eta is DDIM's η (eq. 16); use it with --scheduler ddim, not {args.scheduler or 'the default'}")
    if args.every > args.steps:
        raise BadValue(f"--every {args.every} is more than --steps {args.steps}: only the last step would be "
                       f"recorded; choose --every between 1 and {args.steps}")
    out = _out(args)
    _distinct_seeds(args)
    seeds = args.seed if isinstance(args.seed, list) else [args.seed]
    for seed in seeds:                   # every run's folder is checked before any sampling
        stream = out / f"trajectory_{_run_name(seed, args.batch_size)}"
        if stream.exists() and args.force:           # --force: the earlier (interrupted) run goes too
            import shutil

            shutil.rmtree(stream)
            print(f"removed {stream}, an earlier interrupted run (--force)", file=sys.stderr)
        elif stream.exists():
            raise BadValue(f"{stream} holds an earlier (interrupted?) run; load it with ppddpm.Trajectory.load, then "
                           f"remove it, choose another --out, or pass --force to overwrite it")
        _refuse_overwrite(args, out / f"trajectory_{_run_name(seed, args.batch_size)}.npz")
    pipe = _load(args)
    args.latent_call = _latent_call(args, pipe)
    if args.scheduler:
        pipe = with_sampler(pipe, args.scheduler) if args.latent_call is None else _swap_scheduler(pipe, args.scheduler)
    done = sharded([[seed] for seed in seeds], lambda group: _sample_one(args, pipe, out, group[0]), "sample")
    if not _lead():
        return
    for _, written in done:              # every rank's files, said by the rank the user reads
        print(written)
    finals = [final for final, _ in done]
    if len(seeds) > 1:
        sheet = out / f"sheet_seeds{_seed_span(seeds)}.png"
        final = np.concatenate(finals)
        contact_sheet(final, ncols=min(8, len(final)), scale=max(1, 128 // final.shape[-1]), save=sheet)
        print(f"wrote {sheet}: the {len(final)} samples of seeds {_seed_span(seeds)} (one trajectory .npz per seed)")


LATENT_OPTIONS = ("prompt", "negative_prompt", "guidance_scale", "class_label", "decode")


def _latent_call(args, pipe):
    """The pipeline arguments of --prompt / --negative-prompt / --guidance-scale / --class-label for a
    latent pipeline (None for a pixel one, where these options are refused in one line)."""
    from ppddpm.pipelines.latent import kind_of, supported_pipelines

    given = [o for o in LATENT_OPTIONS if getattr(args, o, None) is not None]
    kind = kind_of(pipe)
    flag = lambda o: "--" + o.replace("_", "-")              # noqa: E731
    if kind is None:
        if given:
            raise BadValue(f"{', '.join(map(flag, given))} {'needs' if len(given) == 1 else 'need'} a latent pipeline ({supported_pipelines()}); "
                           f"{args.model or 'the bundled model'} is a {type(pipe).__name__}")
        return None
    wanted = {"stable-diffusion": ("prompt",), "dit": ("class_label",), "ldm": ()}[kind.name]
    allowed = set(wanted) | {"decode"} | ({"negative_prompt", "guidance_scale"} if kind.halves else set())
    wrong = [o for o in given if o not in allowed]
    if wrong:
        raise BadValue(f"{', '.join(map(flag, wrong))} do not apply to a {type(pipe).__name__}; it takes "
                       f"{', '.join(map(flag, sorted(allowed)))}")
    missing = [o for o in wanted if getattr(args, o) is None]
    if missing:
        raise BadValue(f"a {type(pipe).__name__} needs {flag(missing[0])}")
    classes = getattr(getattr(pipe, "transformer", None), "config", {}).get("num_embeds_ada_norm") if \
        args.class_label else None
    if classes and max(args.class_label) >= classes:
        raise BadValue(f"--class-label takes ids 0 to {classes - 1} for this model; got {max(args.class_label)}")
    call = {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "guidance_scale": args.guidance_scale,
            "class_labels": args.class_label}
    return {k: v for k, v in call.items() if v is not None}


def _swap_scheduler(pipe, family):
    """A latent pipeline's scheduler swapped for one of `family`, from its config (its own loop runs it)."""
    import ppdiffusers

    from ppddpm.core.config import with_config
    from ppddpm.core.adapters import families

    pipe.scheduler = with_config(pipe.scheduler, cls=getattr(ppdiffusers, families()[family][0]))
    return pipe


def _final_images(traj):
    """A latent run's final images (the pipeline's own output) as [B, 3, H, W] in [−1, 1]."""
    return np.stack([np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1) / 127.5 - 1 for im in traj.images])


def _run_name(seed, batch_size):
    return f"seed{seed}" + (f"_batch{batch_size}" if batch_size > 1 else "")


def _seed_span(seeds):
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else f"{seeds[0]}…{seeds[-1]}"


def _sample_one(args, pipe, out, seed):
    """One seed's run: the streamed trajectory, then its .npz and PNGs; returns the final x_0
    [B, C, H, W] and the line that lists the files (printed by the lead rank, for every rank's seeds)."""
    import shutil

    from ppddpm.pictures.plotting import contact_sheet
    from ppddpm.core.recorder import sample_trajectory
    from ppddpm.storage.trajectory import Trajectory

    run = _run_name(seed, args.batch_size)
    stream = out / f"trajectory_{run}"
    fields = "all" if args.all_fields else ("prev_sample", "pred_original_sample")
    call = dict({"eta": args.eta} if args.eta is not None else {}, **(getattr(args, "latent_call", None) or {}))
    latent = {"decode": args.decode} if getattr(args, "decode", None) else {}
    try:
        traj = sample_trajectory(pipe, seed=seed, num_inference_steps=args.steps, batch_size=args.batch_size,
                                 every=args.every, fields=fields, progress=cli_choice(args.quiet), store="disk", path=stream,
                                 pipe_kwargs=call or None, **latent)
    except KeyboardInterrupt as exc:
        kept = Trajectory.load(stream) if stream.exists() else None
        done = kept.meta.get("steps_run", 0) if kept is not None else 0
        print(f"ppddpm sample: {_stopped(exc)} after {done} of {args.steps} steps; the {len(kept or [])} recorded "
              f"steps are kept in {stream} (ppddpm grid {stream}, or ppddpm.Trajectory.load({str(stream)!r}))",
              file=sys.stderr)
        raise SystemExit(_interrupt_status(exc)) from None
    npz = traj.save(out / f"trajectory_{run}.npz")
    shutil.rmtree(stream)
    final = np.asarray(Trajectory.load(npz).prev_sample[-1], np.float32) if getattr(args, "latent_call", None) is None else \
        _final_images(traj)
    scale = max(1, 128 // final.shape[-1])              # nearest-neighbour upscale: pixels stay pixels
    paths = []
    for i in range(len(final)):
        path = out / (f"sample_{run}.png" if len(final) == 1 else f"sample_{run}_{i}.png")
        contact_sheet(final[i:i + 1], scale=scale, gap=0, save=path)
        paths.append(path)
    if len(final) > 1:
        contact_sheet(final, ncols=min(8, len(final)), scale=scale, save=out / f"sheet_{run}.png")
        paths.append(out / f"sheet_{run}.png")
    calls = traj.meta["num_inference_steps"]          # calls of step: Heun makes 2n − 1 of n sampling steps
    steps = (f"{len(traj)} recorded steps of {args.steps}" if calls == args.steps else
             f"{len(traj)} recorded of {calls} step calls, {args.steps} sampling steps")
    return final, f"wrote {', '.join(map(str, paths))} ({scale}x nearest) and {npz} ({steps})"


def _out(args) -> Path:
    """--out as a folder (created if missing), locked for this run until the command ends
    (`ppddpm._io.output_lock`: a second run into it is refused); a file in its place, or a folder
    that cannot be written, is one clear error."""
    from ppddpm._io import output_lock
    from ppddpm.errors import WriteFailed

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise BadValue(f"--out {out} is a file; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if _lead() and getattr(args, "_hold", None) is not None:
            args._hold(output_lock(out))
    except OSError as exc:
        if isinstance(exc, InputError):
            raise
        raise WriteFailed(exc.errno, f"--out {out} cannot be written ({exc.strerror or exc}); give a folder "
                                     f"you can write to") from None
    return out


def _refuse_overwrite(args, path: Path, hint: str = ""):
    """A finished output is replaced only with --force."""
    from ppddpm.errors import Exists

    if path.exists() and not getattr(args, "force", False):
        raise Exists(f"{path} exists (a finished earlier run){hint}; pass --force to overwrite it, or choose "
                     f"another --out")


def _variant_list(text):
    from ppddpm.variants.registry import split_specs

    names = split_specs(text)
    if len(names) < 2:
        raise argparse.ArgumentTypeError(f"--variants needs at least two comma-separated variants, got {text!r}")
    return names


def _families():
    from ppddpm.core.adapters import families

    return list(families())


def _positive_float(name, zero=False, what="", high=float("inf")):
    """A finite number > 0 (≥ 0 with `zero`) and ≤ `high`: inf and nan make NaN pictures or endless loops."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= 0 if zero else value > 0) or not np.isfinite(value) or value > high:
            upper = f" and ≤ {high:g}" if np.isfinite(high) else ", finite"
            raise argparse.ArgumentTypeError(f"{name} takes a number {'≥' if zero else '>'} 0{upper}{what}, "
                                             f"got {text!r}")
        return value
    return parse


def _finite_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} takes a finite number, got {text!r}")
        return value
    return parse


_eta = _positive_float("--eta", zero=True, high=1.0,
                       what=" (η of eq. 16: 0 deterministic, 1 DDPM's noise; above 1 σ_t² exceeds 1 − ᾱ_prev: NaN)")


def _class_labels(text):
    try:
        labels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        labels = []
    if not labels or min(labels) < 0:
        raise argparse.ArgumentTypeError(f"--class-label takes class ids, comma-separated (e.g. 207,360), got {text!r}")
    return labels


def _seeds(text):
    """--seed: 7, 0,3,5 or 0-15 (inclusive), or a mix: 0-3,9."""
    seeds = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            span = range(int(first), int(last) + 1) if dash and first else [int(part)]
            if dash and first and not len(span):
                raise ValueError
            if len(seeds) + len(span) > MAX_SEEDS:
                raise argparse.ArgumentTypeError(f"--seed gives more than {MAX_SEEDS} seeds ({text!r}); run the "
                                                 f"range in parts of at most {MAX_SEEDS}")
            seeds.extend(span)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed takes an integer, a comma-separated list or a range such as 0-15, "
                                         f"got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise argparse.ArgumentTypeError(f"--seed takes non-negative integers up to {MAX_SEED}, got {text!r}")
    return seeds[0] if len(seeds) == 1 else seeds


def _launch_args(p):
    p.add_argument("--nproc", type=_positive("--nproc"), default=1,
                   help="split the seeds over N processes (paddle.distributed.launch; gloo on CPU, NCCL on GPUs); "
                        "the results are bitwise those of one process")
    p.add_argument("--ips", default=None, help="with --nproc: the nodes of a multi-node run, e.g. 10.0.0.1,10.0.0.2 "
                                               "(run the same command on every node; default: this node only)")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow --nproc above the number of CPU cores (or GPUs) here")


def _lead() -> bool:
    """Whether this process writes the shared outputs: always, except on ranks 1… of a launch."""
    import os

    return os.environ.get("PADDLE_TRAINER_ID", "0") == "0"


def _clip(text):
    choices = {"config": None, "on": True, "off": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"--clip must be one of {', '.join(choices)}, got {text!r}")
    return choices[text]


def cmd_ab(args):
    from ppddpm.analysis.ab import compare
    from ppddpm.variants.registry import get_variant

    for name in args.variants:          # fail before loading a model
        get_variant(name)
    _distinct_seeds(args)
    out = _out(args)                     # a bad or busy --out fails before the model loads
    _refuse_overwrite(args, out / "ab.json", " — an earlier A/B report")
    pipe = _load(args)
    report = compare(pipe, args.variants, seed=args.seed, num_inference_steps=args.steps,
                     batch_size=args.batch_size, mode=args.mode, clip_sample=args.clip, progress=cli_choice(args.quiet),
                     seed_batch=args.seed_batch)
    if not _lead():
        return report
    print(report.table(rows=args.rows))
    report.to_json(out / "ab.json")
    written = [out / "ab.json"]
    if args.plot:
        written += _ab_plots(report, out)
    print("wrote " + ", ".join(map(str, written)))
    return report


def file_safe(spec: str) -> str:
    """A variant spec as a shell-safe file-name part: `ddim(eta=1.0)` → `ddim-eta-1.0` (letters,
    digits, `.`, `_` and `-` only)."""
    import re

    return re.sub(r"[^A-Za-z0-9._]+", "-", spec).strip("-") or "variant"


def _ab_plots(report, out) -> list:
    """ab --plot: one figure per variant and seed (the first PLOTTED_SEEDS seeds), named without
    characters a shell would read: ab_<variant>.png for one seed, ab_<variant>_seed<S>.png for several."""
    from ppddpm.pictures.plotting import plot_ab

    names, written = {}, []
    for v in report.others:
        name = file_safe(v)
        names[v] = name if name not in names.values() else f"{name}-{len(names)}"
    shown = report.seeds[:PLOTTED_SEEDS]
    for v in report.others:
        for k, seed in enumerate(shown):
            path = out / (f"ab_{names[v]}.png" if len(report.seeds) == 1 else f"ab_{names[v]}_seed{seed}.png")
            plot_ab(report, v, seed_index=k, save=path)
            written.append(path)
    if len(report.seeds) > len(shown):
        print(f"plotted seeds {_seed_span(shown)} of {len(report.seeds)} (--plot draws the first {PLOTTED_SEEDS}; "
              f"every seed's numbers are in ab.json)")
    return written


def _distinct_seeds(args):
    """--seed 0,0 or 0-3,2: each seed runs once; a note says which were named twice."""
    if not isinstance(args.seed, list):
        return
    distinct = list(dict.fromkeys(args.seed))
    if len(distinct) < len(args.seed):
        twice = sorted({s for s in args.seed if args.seed.count(s) > 1})
        print(f"ppddpm {args.command}: note: --seed names {', '.join(map(str, twice))} more than once; "
              f"running each seed once", file=sys.stderr)
    args.seed = distinct[0] if len(distinct) == 1 else distinct


def cmd_patches(args):
    from ppddpm.variants import source_patches as sp

    if args.action == "list":
        for name in sp.available():
            print(f"{name:22s} {sp.describe(name)}")
    elif args.action == "check":
        result = sp.check(args.names or None)
        for name, status in result.items():
            print(f"{name:22s} {status}")
        if any(v != "ok" for v in result.values()):
            raise BadValue("some patches do not apply to the installed ppdiffusers (see above)")
    else:
        if not args.to:
            raise BadValue("patches apply needs --to DIR (a new folder; site-packages is never patched)")
        dest = sp.apply(args.to, args.names or None)
        print(f"patched copy of ppdiffusers in {dest}; use it with: import sys; sys.path.insert(0, {str(dest)!r})")


def cmd_upstream(args):
    from ppddpm.variants.registry import get_variant
    from ppddpm.analysis.upstream import SUITES, known_failure, run_scheduler_suite

    if args.variant is not None:
        get_variant(args.variant)                  # an unknown name fails here, before any test runs
        if args.scheduler != "ddpm":
            raise BadValue(f"--variant patches DDPMScheduler; use it with --scheduler ddpm, not {args.scheduler!r}")
    label = args.variant or "observed"
    print(f"running ppdiffusers' {SUITES[args.scheduler][1]} twice, stock and {label} (about half a minute) …",
          flush=True)
    stock = run_scheduler_suite(family=args.scheduler)
    other, steps = run_scheduler_suite(args.variant, family=args.scheduler, observe=args.variant is None,
                                       with_count=True)
    print(f"ppdiffusers' {SUITES[args.scheduler][1]}: stock vs {label} "
          f"({'variant patched into DDPMScheduler' if args.variant else f'ppddpm observer on {SUITES[args.scheduler][0]}'}"
          f"; {steps} steps went through ppddpm)")
    print(f"{'ppdiffusers test':55s} {'stock':8s} {label}")
    regressions = []
    for name in sorted(stock):
        note = known_failure(args.scheduler, name) if stock[name] != "passed" else ""
        print(f"{name:55s} {stock[name]:8s} {other.get(name, '-'):8s} {note}")
        if stock[name] == "passed" and other.get(name) != "passed":
            regressions.append(name)
    if regressions:
        raise BadValue(f"{label} fails tests the stock run passes: {', '.join(regressions)}")

def _train_command(args, **extra) -> str:
    """The `ppddpm train` command of `args` (its options that differ from the defaults, and always
    --steps and --out), with `extra` options added: what a user pastes to resume."""
    import shlex

    defaults = vars(build_parser().parse_args(["train"]))
    words = ["ppddpm", "train"]
    for key, value in dict(vars(args), **extra).items():
        if key in ("func", "command") or key.startswith("_") or value is False or (value == defaults.get(key) and key not in ("steps", "out")):
            continue
        flag = "--" + key.replace("_", "-")
        words += [flag] if value is True else [flag, *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(words)


def cmd_train(args):
    from ppddpm.model.training import CHECKPOINT, TrainConfig, TrainingInterrupted, train

    out = _out(args)
    if not args.resume:
        for done in (out / CHECKPOINT, out / "model_index.json"):
            _refuse_overwrite(args, done, " — a trained model; --resume continues it")

    cfg = TrainConfig(output_dir=args.out, data=args.data, resolution=args.resolution, channels=args.channels,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay,
                      seed=args.seed, checkpoint_every=args.checkpoint_every, warmup=args.warmup,
                      lr_schedule=args.lr_schedule, block_out_channels=tuple(args.block_out_channels),
                      layers_per_block=args.layers_per_block, stop_at=args.stop_at)
    try:
        result = train(cfg, resume=args.resume, progress=cli_choice(args.quiet),
                       trust_pickle=args.trust_pickle)
    except TrainingInterrupted as stop:
        kept = (f"kept {stop.checkpoint} (step {stop.checkpoint_step}); resume with: {_train_command(args, resume=True)}"
                if stop.checkpoint else f"no checkpoint yet (the first comes at step "
                                        f"{min(args.checkpoint_every, args.stop_at or args.steps)}); "
                                        f"nothing to resume")
        print(f"ppddpm train: {_stopped(stop.cause)} after {stop.steps_done} of {args.stop_at or args.steps} steps; "
              f"{kept}", file=sys.stderr)
        raise SystemExit(_interrupt_status(stop.cause)) from None
    tail = result.losses[-100:]
    total = f" ({len(result.losses)} in all)" if len(result.losses) != result.steps_this_run else ""
    print(f"trained {result.steps_this_run} steps in {result.seconds:.0f} s this run{total}; mean loss of the last "
          f"{len(tail)} steps {sum(tail) / max(1, len(tail)):.4f}; pipeline saved to {result.output_dir}")


def cmd_eval(args):
    from ppddpm.analysis.metrics import classifier, digit_coverage, real_ceiling, sample_images, score

    out = _out(args) if args.out else None          # a bad --out fails before minutes of sampling
    if out is not None:
        _refuse_overwrite(args, out / "scores.json")
    pipe = _pixel_pipeline(_load(args), "ppddpm eval")
    if pipe.unet.config.in_channels != 1:
        raise BadValue("ppddpm eval scores digit models (1 channel); this pipeline has "
                       f"{pipe.unet.config.in_channels} channels")
    images = sample_images(pipe, n=args.n, seed=args.seed, num_inference_steps=args.steps, progress=cli_choice(args.quiet))
    if not _lead():
        return
    mine = score(images)
    ceiling = real_ceiling(min(args.n, 359), resolution=pipe.unet.config.sample_size)
    _, acc = classifier()
    print(f"classifier: MLP on the digits' train split, held-out accuracy {acc:.3f}")
    print(f"{'':16s} {'samples':>10s} {'real held-out':>14s}")
    for key in ("confidence", "class_entropy", "inception_score", "frechet_distance"):
        print(f"{key:16s} {getattr(mine, key):10.3f} {getattr(ceiling, key):14.3f}")
    coverage, shares = digit_coverage(images), mine.against(ceiling)
    print(f"n = {mine.n} samples ({args.steps} steps, seeds {args.seed}…{args.seed + args.n - 1}) vs {ceiling.n} "
          f"real digits: confidence {shares['confidence_share']:.0%} of real, Inception Score "
          f"{shares['is_share']:.0%} of real, Fréchet distance {shares['fd_ratio']:.2f} x real's")
    print(f"digits named in every {coverage['window']} consecutive seeds: at least {coverage['fewest']} of 10; "
          f"samples per digit 0-9: {' '.join(map(str, coverage['counts']))}")
    if out is not None:
        from ppddpm._io import atomic_path
        from ppddpm.pictures.plotting import contact_sheet

        with atomic_path(out / "scores.json") as tmp:
            tmp.write_text(json.dumps({"samples": mine.as_dict(), "real": ceiling.as_dict(), "coverage": coverage,
                                       "classifier_accuracy": acc, "steps": args.steps, "seed": args.seed}, indent=1))
        with atomic_path(out / "samples.npz", suffix=".npz") as tmp:
            np.savez(tmp, samples=images, seeds=np.arange(args.seed, args.seed + args.n))
        contact_sheet(images, save=out / "samples.png")
        print(f"wrote {out / 'scores.json'}, {out / 'samples.npz'} (the {args.n} samples in [-1, 1]) and "
              f"{out / 'samples.png'}")


def cmd_grid(args):
    from ppddpm.pictures.plotting import plot_grid, plot_trajectory
    from ppddpm.storage.trajectory import Trajectory

    traj = Trajectory.load(args.run)
    out = _out(args)
    written = []
    spacing = dict(every=args.every, every_t=args.every_t, tiles=args.tiles)
    if args.every is None and args.tiles is None and args.every_t is None:
        spacing["every_t"] = 50                        # the article's grids: t = 950, 900, …, 0
    if not traj.complete:
        print(f"{args.run}: a partial run ({len(traj)} steps recorded of {traj.meta.get('num_inference_steps')}); "
              f"drawing the steps it has")
    for field, name in (("prev_sample", "grid_x_t.png"), ("pred_original_sample", "grid_x0.png")):
        if field in traj.fields:
            plot_grid(traj, field, ncols=args.ncols, save=out / name, **spacing)
            written.append(out / name)
    if {"prev_sample", "pred_original_sample"} <= set(traj.fields):
        plot_trajectory(traj, ncols=args.ncols, save=out / "trajectory.png", **spacing)
        written.append(out / "trajectory.png")
    print("wrote " + ", ".join(map(str, written)))


def cmd_forward(args):
    from ppddpm.model.loading import load_pipeline
    from ppddpm.pictures.plotting import load_image, plot_forward

    pipe = _pixel_pipeline(load_pipeline(args.model, trust_pickle=args.trust_pickle), "ppddpm forward")
    res = pipe.unet.config.sample_size
    image = load_image(args.image, resolution=res if isinstance(res, int) else None,
                       channels=pipe.unet.config.in_channels)
    path = _out(args) / "forward.png"
    plot_forward(image, pipe.scheduler, every=args.every, save=path)
    print(f"wrote {path}")


def cmd_schedule(args):
    from ppddpm.model.loading import load_pipeline
    from ppddpm.pictures.plotting import plot_schedule

    path = _out(args) / "schedule.png"
    plot_schedule(load_pipeline(args.model, trust_pickle=args.trust_pickle).scheduler, save=path)
    print(f"wrote {path}")


def cmd_animate(args):
    from ppddpm.pictures.plotting import animate, frame_steps
    from ppddpm.storage.trajectory import Trajectory

    traj = Trajectory.load(args.run)
    written = animate(traj, _out(args) / f"{args.field}.gif", field=args.field, index=args.index, fps=args.fps,
                      every=args.every, hold=args.hold)
    shown = len(frame_steps(len(traj), args.every))
    print("wrote " + ", ".join(map(str, written)) + f" ({shown} frames of {len(traj)} recorded steps"
          + ("" if shown == len(traj) else "; --every 1 for every one") + ")")


def cmd_view(args):
    from ppddpm.pictures.explorer import explore

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise BadValue(f"--out names the page: a file ending in .html, got {args.out!r}")
    if out.exists() and out.is_dir():
        raise BadValue(f"--out {out} is a folder; give the page's file name, e.g. {out / 'view.html'}")
    if args.ab and args.other:
        raise BadValue("give --ab or --with, not both")
    if args.ab and not Path(args.ab).exists():
        raise BadValue(f"no A/B report at {args.ab} (write one with ppddpm ab --out DIR: DIR/ab.json)")
    view = explore(args.run, other=args.other, ab=args.ab)
    view.save(out)
    print(f"wrote {out} ({len(view) / 2 ** 20:.1f} MB, self-contained: open it in any browser, offline)")


def cmd_verify(args) -> int:
    from ppddpm.analysis.verify import save_json, verify

    report = verify(args.run)
    print(report.table())
    if args.json:
        print(f"wrote {save_json(report, args.json)}")
    return 0 if report.ok else 1


def cmd_demo(args):
    from ppddpm.cli.demo import run_demo

    run_demo(_out(args), model=args.model, steps=args.steps, quiet=args.quiet, trust_pickle=args.trust_pickle)


class _DefaultsOnce(argparse.HelpFormatter):
    """Every option's help ends with its default — `(default: 1000)`, a list as `32 64` — unless
    the text already says it in words ("default: the model's own"), so no default is shown twice.
    Flags (store_true) have none to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`ppddpm sample: error: ...`), exit 2, and every
    option's --help line shows its default (once)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsOnce)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_QUIET = "no progress bar (default: a bar only when stdout and stderr are a terminal; PPDDPM_PROGRESS=0 turns it off)"
PLOTTED_SEEDS = 8        # ab --plot draws this many seeds' figures at most (each is one PNG)


def build_parser():
    from ppddpm import __version__
    from ppddpm.pictures.plotting import MAX_FRAMES

    parser = _Parser(prog="ppddpm", description="Watch diffusion sampling work, step by step (ppdiffusers).")
    parser.add_argument("--version", action="version", version=f"ppddpm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("sample", help="sample with a pipeline, write PNGs and the trajectory .npz")
    _sampling_args(p)
    p.add_argument("--scheduler", choices=_families(), default=None,
                   help="sample with this sampler, made from the model's scheduler config (default: the model's own)")
    p.add_argument("--eta", type=_eta, default=None, help="with --scheduler ddim: η of eq. (16) (default: 0)")
    p.add_argument("--all-fields", action="store_true", help="also record x_t, ε̂, unclipped x̂_0 and z")
    p.add_argument("--prompt", default=None, help="StableDiffusionPipeline folders: the text prompt")
    p.add_argument("--negative-prompt", default=None, help="with --prompt: the negative prompt")
    p.add_argument("--guidance-scale", type=_positive_float("--guidance-scale", zero=True), default=None,
                   help="classifier-free guidance scale (default: the pipeline's own, 7.5 for Stable Diffusion, 4 "
                        "for DiT)")
    p.add_argument("--class-label", type=_class_labels, default=None,
                   help="DiTPipeline folders: class ids, comma-separated (one sample each)")
    p.add_argument("--decode", choices=["vae", "approx"], default=None,
                   help="latent pipelines: also keep x̂_0 decoded to pixels at every recorded step, by the VAE or "
                        "by a fitted linear latent→RGB preview")
    p.add_argument("--out", default="runs/sample", help="folder for the PNGs and trajectory_<run>.npz")
    p.add_argument("--force", action="store_true", help="overwrite the finished outputs of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help=_QUIET)
    _launch_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("ab", help="A/B-compare step variants; print the table, write ab.json (and plots)")
    _model_arg(p)
    p.add_argument("--variants", type=_variant_list, default=["posterior", "direct"],
                   help='comma-separated specs, the first is the reference: "posterior,direct" (default) or '
                        '"ppdiffusers,ddim(eta=1.0, use_clipped_model_output=True)"')
    p.add_argument("--seed", type=_seeds, default=777,
                   help="an integer, a comma-separated list or a range (0-15): a distribution over seeds")
    p.add_argument("--steps", type=_steps, default=1000, help="num_inference_steps (1 to the model's T)")
    p.add_argument("--batch-size", type=_batch_size, default=1, help="samples per seed")
    p.add_argument("--mode", choices=["shadow", "free"], default="shadow",
                   help="shadow: every variant steps the reference's (x_t, ε̂, z); free: each its own trajectory")
    p.add_argument("--clip", type=_clip, default=None,
                   help="x̂_0 clipping: config, on or off (default: config, the model's clip_sample)")
    p.add_argument("--rows", type=_positive("--rows"), default=20, help="table rows per variant")
    p.add_argument("--seed-batch", type=_positive("--seed-batch"), default=4,
                   help="seeds per batched UNet call (default 4); --nproc splits the seeds by these groups")
    p.add_argument("--plot", action="store_true",
                   help=f"also write ab_<variant>.png (with several seeds: ab_<variant>_seed<S>.png for each of the "
                        f"first {PLOTTED_SEEDS})")
    p.add_argument("--out", default="runs/ab", help="folder for ab.json and the plots")
    p.add_argument("--force", action="store_true", help="overwrite the finished outputs of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help=_QUIET)
    _launch_args(p)
    p.set_defaults(func=cmd_ab)

    p = sub.add_parser("patches", help="the article's source edits as diffs: list, check, apply --to DIR")
    p.add_argument("action", choices=["list", "check", "apply"])
    p.add_argument("names", nargs="*", help="patch names (default: all)")
    p.add_argument("--to", help="apply: a new folder for the patched copy of ppdiffusers (no default: required)")
    p.set_defaults(func=cmd_patches)

    p = sub.add_parser("upstream", help="run ppdiffusers' own scheduler tests with ppddpm's observer (or a DDPM "
                                        "variant) installed class-wide, against a stock run")
    p.add_argument("--scheduler", default="ddpm", choices=list(_suites()),
                   help="which sampler family's suite (default: ddpm)")
    p.add_argument("--variant", default=None,
                   help="with --scheduler ddpm: patch this step variant in instead of observing (e.g. posterior; "
                        "default: observe only)")
    p.set_defaults(func=cmd_upstream)

    p = sub.add_parser("train", help="train a DDPM (the article's loop) and save it as a DDPMPipeline")
    p.add_argument("--data", default="digits", help="'digits' (offline) or a folder of images")
    p.add_argument("--resolution", type=_positive("--resolution"), default=8,
                   help="training resolution (the digits are 8x8; larger is a bilinear upscale)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1, help="1 (gray) or 3 (RGB)")
    p.add_argument("--steps", type=_positive("--steps"), default=3000, help="optimisation steps")
    p.add_argument("--batch-size", type=_batch_size, default=64, help="images per optimisation step")
    p.add_argument("--lr", type=_positive_float("--lr"), default=2e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=_nonneg("--warmup"), default=100, help="linear warm-up steps")
    p.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                   help="after warm-up: cosine decay to lr/10 over the remaining steps, or constant")
    p.add_argument("--ema-decay", type=_finite_float("--ema-decay"), default=0.995, help="decay of the weights' EMA, which is saved")
    p.add_argument("--block-out-channels", type=_positive("--block-out-channels"), nargs="+", default=[32, 64],
                   help="UNet channels per level (one level per number)")
    p.add_argument("--layers-per-block", type=_positive("--layers-per-block"), default=1,
                   help="UNet ResNet layers per level")
    p.add_argument("--stop-at", type=_nonneg("--stop-at"), default=0,
                   help="stop after this many steps; the learning-rate schedule still spans --steps (default: at --steps)")
    p.add_argument("--seed", type=_int_at_least(0, "--seed", MAX_SEED), default=0, help="seed of the initial weights and the batches")
    p.add_argument("--checkpoint-every", type=_positive("--checkpoint-every"), default=250,
                   help="write --out/checkpoint.safetensors every N steps (and at the end)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.safetensors")
    _trust_arg(p, "a pickled checkpoint.pdparams of ppddpm <= 0.2 on --resume")
    p.add_argument("--out", default="runs/train", help="folder for the checkpoint and the saved pipeline")
    p.add_argument("--force", action="store_true", help="overwrite the finished outputs of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help=_QUIET)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="digit-classifier scores of a model's samples vs real held-out digits")
    _model_arg(p)
    p.add_argument("--n", type=_int_at_least(1, "--n", MAX_EVAL, " (samples scored at once; more add nothing to "
                                                               "the scores' precision worth the hours)"),
                   default=64, help="number of samples")
    p.add_argument("--steps", type=_steps, default=1000, help="num_inference_steps of each sample")
    p.add_argument("--seed", type=_int_at_least(0, "--seed", MAX_SEED), default=0, help="the first seed: samples use seeds S … S+n-1")
    p.add_argument("--out", default=None,
                   help="a folder for scores.json, the samples (samples.npz) and their contact sheet (samples.png) "
                        "(default: none, scores printed only)")
    p.add_argument("--force", action="store_true", help="overwrite the finished outputs of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help=_QUIET)
    _launch_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("grid", help="the article's grids (x_t, x̂_0 at t = 950, 900, …, 0) from a trajectory")
    p.add_argument("run", help="a trajectory .npz (ppddpm sample) or a streamed trajectory folder, partial or not")
    spacing = p.add_mutually_exclusive_group()
    spacing.add_argument("--every-t", type=_positive("--every-t"), default=None,
                         help="tiles every N in t, whatever the number of sampling steps (default: 50)")
    spacing.add_argument("--every", type=_positive("--every"), default=None,
                         help="tiles every N sampling steps (instead of --every-t)")
    spacing.add_argument("--tiles", type=_positive("--tiles"), default=None,
                         help="N tiles, evenly spaced (instead of --every-t)")
    p.add_argument("--ncols", type=_positive("--ncols"), default=10, help="tiles a row")
    p.add_argument("--out", default="runs/grid", help="folder for grid_x_t.png, grid_x0.png, trajectory.png")
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("forward", help="the forward process q(x_t|x_0) on an image, every 50 steps")
    _model_arg(p)
    p.add_argument("--image", default="digit",
                   help="'digit', 'digit0'…'digit9' (the first held-out digit of that class) or an image path")
    p.add_argument("--every", type=_positive("--every"), default=50, help="a tile every N timesteps")
    p.add_argument("--out", default="runs/forward", help="folder for forward.png")
    p.set_defaults(func=cmd_forward)

    p = sub.add_parser("schedule", help="β_t, ᾱ_t, SNR and the eq. (7) coefficients of a model's scheduler")
    _model_arg(p)
    p.add_argument("--out", default="runs/schedule", help="folder for schedule.png")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("animate", help="a trajectory as an animated GIF (and MP4 where OpenCV is installed)")
    p.add_argument("run", help="a trajectory .npz or streamed folder")
    p.add_argument("--field", default="prev_sample",
                   help="the recorded field to animate: prev_sample (x_t), pred_original_sample (x̂_0), …")
    p.add_argument("--index", type=_nonneg("--index"), default=0, help="which sample of the batch")
    p.add_argument("--fps", type=_positive_float("--fps", high=1000.0), default=10.0, help="frames a second")
    p.add_argument("--every", type=_positive("--every"), default=None,
                   help=f"every N-th recorded step (and the last) (default: at most {MAX_FRAMES} frames spread over "
                        f"the run; --every 1 for every recorded step)")
    p.add_argument("--hold", type=_positive_float("--hold", zero=True, high=600.0), default=2.0,
                   help="seconds the final image stays before the loop restarts")
    p.add_argument("--out", default="runs/animate", help="folder for <field>.gif (and .mp4)")
    p.set_defaults(func=cmd_animate)

    p = sub.add_parser("view", help="an explorer to scrub through a run: one self-contained HTML file")
    p.add_argument("run", help="a trajectory .npz or streamed folder (record with --all-fields to see every pane)")
    p.add_argument("--with", dest="other", default=None,
                   help="a second run of the same steps, shown side by side (default: none)")
    p.add_argument("--ab", default=None,
                   help="an ab.json (ppddpm ab) whose |Δ| curve is drawn with a cursor (default: none)")
    p.add_argument("--out", default="runs/view.html", help="the page to write")
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("verify", help="replay a recorded run through the float64 reference of its sampler "
                                      "(exit 0: every step holds, 1: one departs)")
    p.add_argument("run", help="a trajectory .npz or streamed folder recorded with --all-fields")
    p.add_argument("--json", default=None, help="also write the per-step report to this JSON file")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("demo", help="what `make demo` runs: sample, grids, A/B summary")
    _model_arg(p)
    p.add_argument("--steps", type=_steps, default=1000, help="num_inference_steps of the run and the A/B")
    p.add_argument("--out", default="runs/demo", help="folder for the demo's pictures and files")
    p.add_argument("--quiet", action="store_true", help=_QUIET)
    p.set_defaults(func=cmd_demo)
    return parser




class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, `kill` and job schedulers send), handled like Ctrl-C: the run stops
    where it is, what was recorded stays on disk, and the exit status is 143 (128 + SIGTERM)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _stopped(exc) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def _interrupt_status(exc) -> int:
    return 143 if isinstance(exc, Terminated) else 130


_SIGTERM_BEFORE = []      # non-empty while main() runs with SIGTERM raising `Terminated`


def _sigterm_stops():
    """SIGTERM raises `Terminated` in the main thread while main() runs (no-op elsewhere)."""
    import signal
    import threading

    if _SIGTERM_BEFORE and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def main(argv=None):
    """The command line; while it runs, SIGTERM stops it as Ctrl-C does (`Terminated`), and a reader
    that closes the pipe (`ppddpm verify RUN | head`) ends it quietly with 141 (128 + SIGPIPE)."""
    import signal
    import threading

    mine = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    if mine:
        _SIGTERM_BEFORE.append(signal.SIGTERM)
        _sigterm_stops()
    try:
        status = _main(argv)
        sys.stdout.flush()               # a closed pipe shows here, inside this handler, not at exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())     # no second error at exit's flush
        return 141
    finally:
        if mine:
            _SIGTERM_BEFORE.clear()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    from ppddpm.cli import launch

    if getattr(args, "nproc", 1) > 1 and not launch.inside_launch():
        return _launch(args, argv)
    rank = launch.RankOutput().start()
    if rank.folder is not None:
        args.quiet = True                # a rank's progress bar would only fill its log
    try:
        status = _dispatch(args)
    except SystemExit as exc:
        if rank.folder is None:
            raise
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        if rank.folder is None:
            raise
        import traceback

        traceback.print_exc()            # a real bug in a rank: its traceback is what the parent prints
        status = 1
    return rank.finish(status)


def _launch(args, argv) -> int:
    """`--nproc N`: the ranks' job, ended as one on Ctrl-C / SIGTERM (`ppddpm.cli.launch`)."""
    from ppddpm.cli import launch

    try:
        launch.check_nproc(args.nproc, args.oversubscribe)
        _sigterm_stops()                 # again: the device query imported paddle and its SIGTERM handler
        return launch.run(args.nproc, list(sys.argv[1:] if argv is None else argv), ips=args.ips)
    except KeyboardInterrupt as exc:
        print(f"ppddpm {args.command}: {_stopped(exc)}; the {args.nproc} ranks were stopped before any of them "
              f"wrote more", file=sys.stderr)
        return _interrupt_status(exc)
    except InputError as exc:
        print(f"ppddpm {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _dispatch(args) -> int:
    import contextlib

    try:
        with contextlib.ExitStack() as held:     # what the command holds until it ends (--out's lock)
            args._hold = held.enter_context
            status = args.func(args)     # an int is the command's own exit status (verify: 1 when a step departs)
    except KeyboardInterrupt as exc:
        print(f"ppddpm {args.command}: {_stopped(exc)}", file=sys.stderr)
        return _interrupt_status(exc)
    except InputError as exc:            # raised on purpose for bad input; anything else is a bug and stays loud
        rank = getattr(exc, "rank", None)
        print(f"ppddpm {args.command}: error: {exc}" + (f" (rank {rank})" if rank else ""), file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _WRITE_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"ppddpm {args.command}: error: writing the output failed: {exc.strerror or exc}{where}; files saved "
              f"before are intact (saves are atomic) — free space or choose another --out", file=sys.stderr)
        return 2
    return status if isinstance(status, int) else 0


def _errnos(*names):
    import errno

    return {getattr(errno, n) for n in names if hasattr(errno, n)}


_WRITE_ERRNOS = _errnos("ENOSPC", "EDQUOT", "EFBIG", "EROFS")      # the disk, not the program


if __name__ == "__main__":
    sys.exit(main())
