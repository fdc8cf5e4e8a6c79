"""`load_pipeline`: the bundled model offline, a local directory, or a hub id online.

Weights load without unpickling by default. ppdiffusers 0.29's `from_pretrained` looks for
`diffusion_paddle_model.safetensors` first but falls back to a pickled `model_state.pdparams`
(or torch's `.bin`) by itself, whatever `use_safetensors` says; every weight file it opens goes
through `ppdiffusers.models.modeling_utils.load_state_dict`. While `load_pipeline` runs, that one
entry point is guarded (`_pickle_guard`): a file that is not `.safetensors` is refused in one
line unless `trust_pickle=True`. Outside `load_pipeline` ppdiffusers behaves as it always does.
Components of other libraries (a model_index.json naming paddlenlp classes) load through their
own pickling loaders, so a local folder naming them is refused the same way.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import socket
import warnings
from pathlib import Path

from ppddpm.errors import InputError, Untrusted
from ppddpm.pipelines.latent import KINDS, supported_pipelines

BUNDLED_NAME = "ddpm-digits-8"
BUNDLED_DIR = Path(__file__).parent.parent / "assets" / BUNDLED_NAME


class PipelineLoadError(InputError, OSError):
    """A pipeline could not be loaded; the message says what was tried and what to do."""


def _looks_like_path(name: str) -> bool:
    """Hub ids are exactly "owner/name"; anything else is meant as a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or "\\" in name


def load_pipeline(name_or_path=None, pipeline_class=None, trust_pickle: bool = False):
    """Load a DDPM pipeline.

    - no argument: the model ppddpm ships (`ppddpm/assets/ddpm-digits-8`, trained on
      scikit-learn's digits; see its TRAINING.md), works offline;
    - a local directory written by `save_pretrained` (or `ppddpm train`);
    - a hub id such as "google/ddpm-celebahq-256" or "google/ddpm-cifar10-32": ppdiffusers'
      own `from_pretrained`, then the Hugging Face routes (`from_hf_hub=True`, and with
      `from_diffusers=True` for diffusers-format weights).

    `pipeline_class` defaults to `DDPMPipeline`; pass `ppddpm.RecordingDDPMPipeline` to get
    the article's recording drop-in. Pickled weights (`model_state.pdparams`, `.bin`) are refused
    unless `trust_pickle=True` (module docstring).
    """
    latent = pipeline_class is None and name_or_path is not None and _saved_latent(Path(str(name_or_path)).expanduser())
    if latent:                                       # a saved StableDiffusion / LDM / DiT folder
        return _quiet(latent[0], str(Path(str(name_or_path)).expanduser()), **latent[1])
    if pipeline_class is None:
        from ppdiffusers import DDPMPipeline as pipeline_class

    if name_or_path is None or name_or_path in ("bundled", BUNDLED_NAME):
        if not (BUNDLED_DIR / "model_index.json").exists():
            raise PipelineLoadError(f"the bundled model is missing from {BUNDLED_DIR}; reinstall ppddpm")
        return _quiet(pipeline_class, str(BUNDLED_DIR), trust_pickle=False)

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").exists():
            raise PipelineLoadError(f"{local} is a directory but not a saved pipeline (no model_index.json); "
                                    f"give a directory written by save_pretrained or `ppddpm train`")
        if not trust_pickle:
            _refuse_foreign_components(local)
        _check_schedule_length(local)
        return _quiet(pipeline_class, str(local), trust_pickle=trust_pickle)
    if local.exists() or _looks_like_path(name):
        raise PipelineLoadError(f"no pipeline directory at {name!r}; give a directory written by "
                                f"save_pretrained, a hub id like 'google/ddpm-cifar10-32', or nothing "
                                f"for the bundled model")

    routes = [("ppdiffusers hub", {}), ("Hugging Face hub", {"from_hf_hub": True}),
              ("Hugging Face hub, diffusers weights", {"from_hf_hub": True, "from_diffusers": True})]
    failures = []
    for label, kwargs in routes:
        try:
            return _quiet(pipeline_class, name, trust_pickle=trust_pickle, **kwargs)
        except Untrusted:
            raise
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
    """(pipeline class, arguments) for a saved latent pipeline ppddpm records (`ppddpm.pipelines.latent.KINDS`):
    its components saved as null (no tokenizer, no safety checker) passed as None, which ppdiffusers
    0.29's from_pretrained requires. None for any other folder; a folder whose model_index.json names a
    pipeline with neither a UNet nor a known latent layout is one clear error."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        return None
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineLoadError(f"{index_file} is not readable JSON ({exc})") from None
    import ppdiffusers

    name = index.get("_class_name", "")
    if any(name in kind.classes for kind in KINDS):
        return getattr(ppdiffusers, name), {k: None for k, v in index.items() if isinstance(v, list) and v[0] is None}
    if "unet" not in index:
        raise PipelineLoadError(f"{folder} holds a {name or 'pipeline of unknown class'}, which ppddpm does not know; "
                                f"it records DDPMPipeline-style folders (unet + scheduler) and {supported_pipelines()}")
    return None


def _unreachable(exc) -> bool:
    """Whether a loading error comes from the network (DNS, refused or timed-out connections)."""
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


_guarding = contextvars.ContextVar("ppddpm_pickle_guard", default=None)   # the folder being loaded, or None


def _install_guard():
    """Wrap ppdiffusers' weight-file reader once; the wrapper refuses pickles only inside
    `_pickle_guard` (a context variable), so other callers of ppdiffusers are not affected."""
    from ppdiffusers.models import modeling_utils

    if getattr(modeling_utils.load_state_dict, "_ppddpm_guard", False):
        return
    original = modeling_utils.load_state_dict

    def load_state_dict(checkpoint_file, *args, **kwargs):
        name = _guarding.get()
        if name is not None and not str(checkpoint_file).endswith(".safetensors"):
            raise Untrusted(f"{name}: its weights {Path(str(checkpoint_file)).name} are pickled (loading them can run "
                            f"code hidden in the file); convert them to safetensors, or pass --trust-pickle "
                            f"(trust_pickle=True) if you trust where they came from")
        return original(checkpoint_file, *args, **kwargs)

    load_state_dict._ppddpm_guard = True
    modeling_utils.load_state_dict = load_state_dict


@contextlib.contextmanager
def _pickle_guard(name, trust_pickle):
    _install_guard()
    token = _guarding.set(None if trust_pickle else str(name))
    try:
        yield
    finally:
        _guarding.reset(token)


MAX_TRAIN_TIMESTEPS = 100_000     # DDPM's T is 1000; a schedule is built as arrays of T numbers on load


def _check_schedule_length(folder: Path):
    """num_train_timesteps of the folder's scheduler, checked before ppdiffusers builds its arrays."""
    config = folder / "scheduler" / "scheduler_config.json"
    if not config.is_file():
        return
    try:
        value = json.loads(config.read_text()).get("num_train_timesteps", 1000)
    except (OSError, ValueError, AttributeError) as exc:
        raise PipelineLoadError(f"{config} is not a readable scheduler config ({type(exc).__name__})") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= MAX_TRAIN_TIMESTEPS \
            or value != int(value):
        raise PipelineLoadError(f"{config}: num_train_timesteps must be an integer from 1 to {MAX_TRAIN_TIMESTEPS}, "
                                f"got {value!r}")


def _refuse_foreign_components(folder: Path):
    """A model_index.json whose components come from another library (paddlenlp, …): those load
    through pickling loaders ppddpm does not guard."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise PipelineLoadError(f"{folder / 'model_index.json'} is not readable JSON ({exc})") from None
    if not isinstance(index, dict):
        raise PipelineLoadError(f"{folder / 'model_index.json'} is not a pipeline index (a JSON object)")
    foreign = [f"{k} ({v[0]})" for k, v in index.items()
               if isinstance(v, list) and v and v[0] not in ("ppdiffusers", "diffusers", None)]
    if foreign:
        raise Untrusted(f"{folder}: components {', '.join(foreign)} load through loaders that unpickle; "
                        f"pass --trust-pickle (trust_pickle=True) if you trust this folder")


def _quiet(pipeline_class, name, trust_pickle=False, **kwargs):
    from ppdiffusers.utils import logging as ppd_logging

    bars = ppd_logging.is_progress_bar_enabled()
    ppd_logging.disable_progress_bar()      # no "Loading pipeline components" bar for a 2-part pipeline
    try:
        with warnings.catch_warnings():     # huggingface_hub's deprecation notices are not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            with _pickle_guard(name, trust_pickle):
                pipe = pipeline_class.from_pretrained(name, **kwargs)
    finally:
        if bars:
            ppd_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe
