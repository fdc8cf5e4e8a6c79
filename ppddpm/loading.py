"""`load_pipeline`: the bundled model offline, a local directory, or a hub id online."""
from __future__ import annotations

from pathlib import Path

from .errors import InputError

BUNDLED_NAME = "ddpm-digits-8"
BUNDLED_DIR = Path(__file__).parent / "assets" / BUNDLED_NAME


class PipelineLoadError(InputError, OSError):
    """A pipeline could not be loaded; the message says what was tried and what to do."""


def _looks_like_path(name: str) -> bool:
    """Hub ids are exactly "owner/name"; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or "\\" in name


def load_pipeline(name_or_path=None, pipeline_class=None):
    """Load a DDPM pipeline.

    - no argument: the model ppddpm ships (`ppddpm/assets/ddpm-digits-8`, trained on
      scikit-learn's digits; see its TRAINING.md), works offline;
    - a local directory written by `save_pretrained` (or `ppddpm train`);
    - a hub id such as "google/ddpm-celebahq-256" or "google/ddpm-cifar10-32": ppdiffusers'
      own `from_pretrained`, then the Hugging Face routes (`from_hf_hub=True`, and with
      `from_diffusers=True` for diffusers-format weights).

    `pipeline_class` defaults to `DDPMPipeline`; pass `ppddpm.RecordingDDPMPipeline` to get
    the article's recording drop-in.
    """
    latent = pipeline_class is None and name_or_path is not None and _saved_latent(Path(str(name_or_path)).expanduser())
    if latent:                                       # a saved StableDiffusion / LDM / DiT folder
        return _quiet(latent[0], str(Path(str(name_or_path)).expanduser()), **latent[1])
    if pipeline_class is None:
        from ppdiffusers import DDPMPipeline as pipeline_class

    if name_or_path is None or name_or_path in ("bundled", BUNDLED_NAME):
        if not (BUNDLED_DIR / "model_index.json").exists():
            raise PipelineLoadError(f"the bundled model is missing from {BUNDLED_DIR}; reinstall ppddpm")
        return _quiet(pipeline_class, str(BUNDLED_DIR))

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").exists():
            raise PipelineLoadError(f"{local} is a directory but not a saved pipeline (no model_index.json); "
                                    f"give a directory written by save_pretrained or `ppddpm train`")
        return _quiet(pipeline_class, str(local))
    if local.exists() or _looks_like_path(name):
        raise PipelineLoadError(f"no pipeline directory at {name!r}; give a directory written by "
                                f"save_pretrained, a hub id like 'google/ddpm-cifar10-32', or nothing "
                                f"for the bundled model")

    routes = [("ppdiffusers hub", {}), ("Hugging Face hub", {"from_hf_hub": True}),
              ("Hugging Face hub, diffusers weights", {"from_hf_hub": True, "from_diffusers": True})]
    failures = []
    for label, kwargs in routes:
        try:
            return _quiet(pipeline_class, name, **kwargs)
        except Exception as exc:  # each route fails in its own way; the cause is read below
            failures.append(exc)
    offline = f"On a machine with network run DDPMPipeline.from_pretrained({name!r}).save_pretrained(DIR) and " \
              f"pass DIR here, or call load_pipeline() for the bundled offline model."
    if all(_unreachable(exc) for exc in failures):
        raise PipelineLoadError(f"could not load {name!r}: the model hubs (ppdiffusers, Hugging Face) are not "
                                f"reachable from here (no network). {offline}")
    reason = next(str(e).strip().splitlines()[0] for e in failures if not _unreachable(e) and str(e).strip()) \
        if any(not _unreachable(e) and str(e).strip() for e in failures) else type(failures[0]).__name__
    raise PipelineLoadError(f"could not load {name!r}: no DDPM pipeline of that name on the ppdiffusers or Hugging "
                            f"Face hub ({_shorten(reason, 120)}). {offline}")


def _saved_latent(folder: Path):
    """(pipeline class, arguments) for a saved latent pipeline ppddpm records (`ppddpm.latent.KINDS`):
    its components saved as null (no tokenizer, no safety checker) passed as None, which ppdiffusers
    0.29's from_pretrained requires. None for any other folder; a folder whose model_index.json names a
    pipeline with neither a UNet nor a known latent layout is one clear error."""
    import json

    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineLoadError(f"{index_file} is not readable JSON ({exc})") from None
    import ppdiffusers

    from .latent import KINDS, supported_pipelines

    name = index.get("_class_name", "")
    if any(name in kind.classes for kind in KINDS):
        return getattr(ppdiffusers, name), {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None}
    if "unet" not in index:
        raise PipelineLoadError(f"{folder} holds a {name or 'pipeline of unknown class'}, which ppddpm does not know; "
                                f"it records DDPMPipeline-style folders (unet + scheduler) and {supported_pipelines()}")
    return None


def _unreachable(exc) -> bool:
    """Whether a loading error comes from the network (DNS, refused or timed-out connections)."""
    import socket

    seen = 0
    while exc is not None and seen < 12:
        name = type(exc).__name__
        if isinstance(exc, (socket.gaierror, ConnectionError, TimeoutError)) or name in (
                "ConnectionError", "MaxRetryError", "NewConnectionError", "ConnectTimeout", "ReadTimeout",
                "OfflineModeIsEnabled"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters, with … when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:.") + " …"


def _quiet(pipeline_class, name, **kwargs):
    import warnings

    from ppdiffusers.utils import logging as ppd_logging

    bars = ppd_logging.is_progress_bar_enabled()
    ppd_logging.disable_progress_bar()      # no "Loading pipeline components" bar for a 2-part pipeline
    try:
        with warnings.catch_warnings():     # huggingface_hub's deprecation notices are not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            pipe = pipeline_class.from_pretrained(name, **kwargs)
    finally:
        if bars:
            ppd_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe
