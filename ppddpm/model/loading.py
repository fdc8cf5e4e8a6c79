"""`load_pipeline`: the bundled model offline, a local directory, or a hub id online.

Nothing in a model file runs, and nothing in it is used unchecked:

- a local folder (the bundled model included) is read by ppddpm first (`ppddpm.model.folder.scan`):
  a pipeline ppddpm records, each component a known (library, class), configs in range, weights as
  sound safetensors with finite values; a pickled component is refused in one line;
  every model's tensors are compared with the skeleton its config describes (tensors, shapes,
  float dtypes) before any model is built for real;
- then ppdiffusers loads it inside `ppddpm.model.guard.guarded`: any unpickling anywhere in the
  process is refused, and every weights file a library opens that the scan did not is checked.

Pickled weights (`model_state.pdparams`, `.bin`) load only with `trust_pickle=True`
(`--trust-pickle`). A hub download goes through the same guard. Outside `load_pipeline`
ppdiffusers behaves as it always does.
"""
from __future__ import annotations

import gc
import logging
import socket
import warnings
from pathlib import Path

from ppddpm._moved import moved_names
from ppddpm.errors import InputError
from ppddpm.model.folder import scan
from ppddpm.model.guard import guarded

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
    if name_or_path is None or name_or_path in ("bundled", BUNDLED_NAME):
        if not (BUNDLED_DIR / "model_index.json").exists():
            raise PipelineLoadError(f"the bundled model is missing from {BUNDLED_DIR}; reinstall ppddpm")
        return _load_folder(BUNDLED_DIR, pipeline_class, trust_pickle=False)

    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model_index.json").exists():
            raise PipelineLoadError(f"{local} is a directory but not a saved pipeline (no model_index.json); "
                                    f"give a directory written by save_pretrained or `ppddpm train`")
        return _load_folder(local, pipeline_class, trust_pickle)
    if local.exists() or _looks_like_path(name):
        raise PipelineLoadError(f"no pipeline directory at {name!r}; give a directory written by "
                                f"save_pretrained, a hub id like 'google/ddpm-cifar10-32', or nothing "
                                f"for the bundled model")
    if pipeline_class is None:
        from ppdiffusers import DDPMPipeline as pipeline_class

    routes = [("ppdiffusers hub", {}), ("Hugging Face hub", {"from_hf_hub": True}),
              ("Hugging Face hub, diffusers weights", {"from_hf_hub": True, "from_diffusers": True})]
    failures = []
    for label, kwargs in routes:
        try:
            return _quiet(pipeline_class, name, trust_pickle=trust_pickle, **kwargs)
        except InputError:                # a refused file: said as it is, not as a missing model
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


def _load_folder(folder: Path, pipeline_class, trust_pickle: bool):
    """A saved pipeline folder, checked (`scan`) and then loaded under the guard. A latent pipeline
    (`ppddpm.pipelines.latent.KINDS`) loads as its own class, its components saved as null (no
    tokenizer, no safety checker) passed as None, which ppdiffusers 0.29's from_pretrained requires;
    any other as `pipeline_class` (default DDPMPipeline)."""
    import ppdiffusers

    scanned = scan(folder, trust_pickle)
    absent = {}
    if pipeline_class is None and scanned.kind is not None:
        pipeline_class, absent = getattr(ppdiffusers, scanned.pipeline), {k: None for k in scanned.absent}
    return _quiet(pipeline_class or ppdiffusers.DDPMPipeline, str(folder), trust_pickle, scanned.checked, **absent)


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


def _quiet(pipeline_class, name, trust_pickle=False, checked=None, **kwargs):
    """`pipeline_class.from_pretrained(name, **kwargs)` under the guard (pickles refused unless
    trusted; the weights files not in `checked` checked as they are opened), without progress bars."""
    from ppdiffusers.utils import logging as ppd_logging

    bars = ppd_logging.is_progress_bar_enabled()
    ppd_logging.disable_progress_bar()      # no "Loading pipeline components" bar for a 2-part pipeline
    nlp_log = logging.getLogger("PaddleNLP")     # paddlenlp's: a CLIP text encoder's load says INFO six times
    nlp_level = nlp_log.level
    nlp_log.setLevel(logging.WARNING)
    gc.freeze()     # ppdiffusers runs gc.collect() after each model it loads: spare it the objects already here
    try:
        with warnings.catch_warnings():     # huggingface_hub's deprecation notices are not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            with guarded(name, refuse_pickles=not trust_pickle, checked=checked):
                pipe = pipeline_class.from_pretrained(name, **kwargs)
    finally:
        gc.unfreeze()
        nlp_log.setLevel(nlp_level)
        if bars:
            ppd_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# 0.3 names that live elsewhere now (ppddpm/_moved.py): answered with a DeprecationWarning
__getattr__ = moved_names(__name__)
