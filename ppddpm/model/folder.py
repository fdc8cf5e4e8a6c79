"""What a saved pipeline folder may hold, checked before anything in it is loaded (`scan`).

A folder is a `model_index.json` naming the pipeline's class and, for each component, a
(library, class) pair and a sub-folder. ppdiffusers loads each component with whatever loader that
library has — paddle's and paddlenlp's unpickle `.pdparams`, torch's `.bin`, a nested pipeline
loads a folder of its own — so the folder is read here first, by rules of ppddpm's:

- the pipeline is one ppddpm records (`LAYOUTS`: DDPM-like pixel pipelines, and the latent kinds of
  `ppddpm.pipelines.latent.KINDS`), and every component is one that pipeline has, of a known
  (library, class): no nested pipeline, no class of another library;
- a component's folder holds files only: configs (`.json`, `.txt`, `.md`) and weights as
  `.safetensors` — a pickled file is refused, naming the component and the file, unless the user
  trusts pickles;
- every config is a JSON object whose values are in range (`ppddpm.model.configs`), every
  safetensors header is sound (`ppddpm.model.tensorfile`), in the layout its loader reads without
  converting, and every float weight finite;
- the weights hold exactly the tensors of the model the config describes, with its shapes, floats
  stored as floats: compared with a skeleton of that model built as ppdiffusers builds one to load
  it (`paddle.LazyGuard`: shapes, no memory). ppdiffusers and paddlenlp then build the model for
  real (allocating it), so a config cannot make them allocate more than the weights file holds.

`ppddpm.model.guard` then guards the loading itself (no unpickling anywhere while it runs).
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ppddpm.core.adapters import ADAPTERS
from ppddpm.errors import BadValue, Untrusted, regular_file
from ppddpm.model import configs, tensorfile
from ppddpm.model.configs import brief
from ppddpm.pipelines.latent import KINDS, LatentKind, supported_pipelines

PICKLED = (".pdparams", ".pdopt", ".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".npy", ".npz", ".joblib")
READABLE = (".json", ".txt", ".md")          # configs, vocabularies, model cards: read as text, never run


@dataclass(frozen=True)
class Family:
    """How one library family stores a model: its libraries' names in model_index.json, the module
    ppdiffusers takes its classes from, the name of its weights file (without `.safetensors`), and the
    safetensors metadata "format" its loader reads without converting (None: no format given)."""
    libraries: tuple
    module: str = "ppdiffusers"
    weights: Optional[str] = None
    formats: tuple = ()


DIFFUSERS = Family(("ppdiffusers", "diffusers"), "ppdiffusers", "diffusion_paddle_model", ("pd", "np"))
TRANSFORMERS = Family(("ppdiffusers.transformers", "paddlenlp.transformers", "transformers"),
                      "ppdiffusers.transformers", "model", ("np", None))
SAFETY_CHECKER = Family(("stable_diffusion",), "ppdiffusers.pipelines.stable_diffusion", "model", ("np", None))
PROCESSORS = Family(TRANSFORMERS.libraries)                     # tokenizers, image processors: text files only


@dataclass(frozen=True)
class Part:
    """A component a pipeline may have: its family, the classes accepted, its role ("model": a config
    and weights; "scheduler": a scheduler config; "processor": text files) and whether it is needed."""
    family: Family
    classes: tuple
    role: str = "model"
    required: bool = True

    @property
    def config(self) -> Optional[str]:
        """The config file the component's folder must hold (None: a processor's files, read as text)."""
        return {"model": "config.json", "scheduler": "scheduler_config.json"}.get(self.role)


SCHEDULER = Part(Family(DIFFUSERS.libraries), tuple(c for a in ADAPTERS for c in a.classes), "scheduler")
PIXEL_PIPELINES = ("DDPMPipeline", "DDIMPipeline", "PNDMPipeline")
LAYOUTS = {
    "pixel": {"unet": Part(DIFFUSERS, ("UNet2DModel",)), "scheduler": SCHEDULER},
    "stable-diffusion": {
        "unet": Part(DIFFUSERS, ("UNet2DConditionModel",)), "vae": Part(DIFFUSERS, ("AutoencoderKL",)),
        "text_encoder": Part(TRANSFORMERS, ("CLIPTextModel",)), "scheduler": SCHEDULER,
        "tokenizer": Part(PROCESSORS, ("CLIPTokenizer", "CLIPTokenizerFast"), "processor", False),
        "safety_checker": Part(SAFETY_CHECKER, ("StableDiffusionSafetyChecker",), required=False),
        "feature_extractor": Part(PROCESSORS, ("CLIPImageProcessor", "CLIPFeatureExtractor"), "processor", False),
        "image_encoder": Part(TRANSFORMERS, ("CLIPVisionModelWithProjection",), required=False)},
    "ldm": {"vqvae": Part(DIFFUSERS, ("VQModel",)), "unet": Part(DIFFUSERS, ("UNet2DModel",)), "scheduler": SCHEDULER},
    "dit": {"transformer": Part(DIFFUSERS, ("Transformer2DModel",)), "vae": Part(DIFFUSERS, ("AutoencoderKL",)),
            "scheduler": SCHEDULER},
}


@dataclass
class ScannedFolder:
    """A folder that passed `scan`: its pipeline class, its latent kind (None: a pixel pipeline), the
    components saved as null (from_pretrained needs them passed as None), and the real paths of the
    weights files checked (the guard does not check them twice)."""
    folder: Path
    pipeline: str
    kind: Optional[LatentKind]
    absent: tuple = ()
    checked: set = field(default_factory=set)


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a regular file, or one line saying why not."""
    path = regular_file(path, what)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadValue(f"{path} is not readable JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise BadValue(f"{path} is not a JSON object")
    return value


def _layout(folder: Path, name) -> tuple:
    """(layout name, latent kind or None) of the index's pipeline class, or one line."""
    if name in PIXEL_PIPELINES:
        return "pixel", None
    kind = next((k for k in KINDS if name in k.classes), None)
    if kind is None:
        named = name[:80] if isinstance(name, str) and name else "pipeline of unknown class"
        raise BadValue(f"{folder} holds a {named}, which ppddpm does not know; it records "
                       f"{', '.join(PIXEL_PIPELINES)} folders (unet + scheduler) and {supported_pipelines()}")
    return kind.name, kind


def _components(folder: Path, index: dict, layout: str) -> dict:
    """Component name → Part (None: saved as null), each a known (library, class) of the pipeline."""
    parts, found = LAYOUTS[layout], {}
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list):
            continue
        part = parts.get(key)
        if part is None:
            raise BadValue(f"{folder}/model_index.json names a component {brief(key)}, which a "
                           f"{index['_class_name']} does not have (its components: {', '.join(parts)})")
        if value == [None, None] and not part.required:
            found[key] = None
            continue
        if not (len(value) == 2 and value[0] in part.family.libraries and value[1] in part.classes):
            raise BadValue(f"{folder}/model_index.json: component {key!r} is {brief(value)}; a "
                           f"{index['_class_name']}'s {key} is {' or '.join(part.classes)} from "
                           f"{' or '.join(part.family.libraries)}")
        found[key] = part
    missing = [k for k, p in parts.items() if p.required and found.get(k) is None]
    if missing:
        raise BadValue(f"{folder}/model_index.json lacks the {', '.join(missing)} a {index['_class_name']} needs")
    return found


def scan(folder, trust_pickle: bool = False) -> ScannedFolder:
    """Check a saved pipeline folder (module docstring) before anything in it is loaded; one line
    (BadValue, Untrusted, NotFound) naming the file and what is wrong otherwise."""
    folder = Path(folder)
    index = read_json(folder / "model_index.json", "pipeline index")
    layout, kind = _layout(folder, index.get("_class_name"))
    scanned = ScannedFolder(folder, index["_class_name"], kind)
    parts = _components(folder, index, layout)
    scanned.absent = tuple(k for k, p in parts.items() if p is None)
    for key, part in parts.items():
        if part is not None:
            scanned.checked |= _scan_component(folder / key, part, index[key][1], trust_pickle)
    return scanned


def _files(directory: Path, trust_pickle: bool) -> list:
    """The files of a component's folder, each a regular file of an expected kind."""
    if not directory.is_dir():
        raise BadValue(f"{directory} is missing (model_index.json names it); give the folder save_pretrained wrote")
    files = []
    for path in sorted(directory.iterdir()):
        if path.is_dir():
            raise BadValue(f"{path} is a folder inside a component's folder (a nested pipeline?); a component's "
                           f"folder holds its config and weights only")
        regular_file(path, "model file")
        if path.suffix in PICKLED and not trust_pickle:
            raise Untrusted(f"{directory.parent}: component {directory.name!r}: its weights {path.name} are pickled "
                            f"(loading them can run code hidden in the file); ppddpm loads .safetensors weights: "
                            f"convert them, or pass --trust-pickle (trust_pickle=True) if you trust their source")
        if path.suffix not in READABLE + (".safetensors",) + PICKLED:
            raise BadValue(f"{path}: a component's folder holds configs ({', '.join(READABLE)}) and .safetensors "
                           f"weights; a {path.suffix or 'suffix-less'} file is not one of them")
        files.append(path)
    return files


def _scan_component(directory: Path, part: Part, cls: str, trust_pickle: bool) -> set:
    """One component's folder: its files, its config's values, its weights' headers and values, and
    their tensors against the model the config describes. Returns the weights files checked."""
    files, config = _files(directory, trust_pickle), None
    for path in files:
        if path.suffix == ".json":
            values = read_json(path, "config")
            if path.name == part.config:
                _check_config(values, path, part, cls)
                config = values
    if part.config and config is None:
        raise BadValue(f"{directory} has no {part.config}; give the folder save_pretrained wrote")
    if part.family.weights is None:
        return set()
    headers = {p.name: _checked_weights(p, part.family) for p in files if p.suffix == ".safetensors"}
    loaded = _loaded(directory, part.family.weights, headers)
    if loaded is not None:
        where = f"the {cls} {directory.name}/{part.config} describes"
        tensorfile.check_matches(loaded, _skeleton(part.family, cls, config, directory / part.config), str(loaded.path),
                                 where)
    elif not (trust_pickle and any(p.suffix in PICKLED for p in files)):
        raise BadValue(f"{directory} has no weights ({part.family.weights}.safetensors); give the folder "
                       f"save_pretrained wrote")
    return {os.path.realpath(directory / name) for name in headers}


def _loaded(directory: Path, stem: str, headers: dict) -> Optional[tensorfile.TensorFile]:
    """The weights ppdiffusers will load, as one header: the shards its `STEM.safetensors.index.json`
    lists, else the first of STEM.safetensors, STEM.fp16.safetensors, STEM.fp32.safetensors (its order);
    None if there are none."""
    index = directory / f"{stem}.safetensors.index.json"
    if index.exists():
        shards = read_json(index, "weights index").get("weight_map")
        names = sorted(set(shards.values())) if isinstance(shards, dict) else None
        if not names or not all(isinstance(n, str) and n in headers for n in names):
            raise BadValue(f"{index}: its weight_map must name .safetensors files of {directory}")
        merged = [t for n in names for t in headers[n].tensors.values()]
        if len({t.name for t in merged}) != len(merged):
            raise BadValue(f"{index}: a tensor appears in two shards")
        return tensorfile.TensorFile(index, 0, {}, {t.name: t for t in merged})
    name = next((f"{stem}{v}.safetensors" for v in ("", ".fp16", ".fp32") if f"{stem}{v}.safetensors" in headers), None)
    return headers.get(name)


def _skeleton(family: Family, cls: str, config: dict, where: Path) -> dict:
    """name → (shape, dtype) of every tensor of the model `config` describes: the class model_index.json
    names, built as ppdiffusers builds it to load weights (paddle.LazyGuard, no initialisation: shapes,
    no memory), from a config whose values passed their range checks."""
    import paddle
    from paddlenlp.transformers.model_utils import no_init_weights
    from ppdiffusers import ModelMixin

    model_class = getattr(importlib.import_module(family.module), cls)
    try:
        with no_init_weights(True), paddle.LazyGuard():
            model = model_class.from_config(config) if issubclass(model_class, ModelMixin) else \
                model_class(model_class.config_class(**config))      # paddlenlp's: a config object
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, AssertionError, ZeroDivisionError) as exc:
        raise BadValue(f"{where}: a {cls} cannot be built from it ({type(exc).__name__}: "
                       f"{brief(str(exc).splitlines()[0] if str(exc) else '', 120)})") from None
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}


def _check_config(config: dict, path: Path, part: Part, cls: str) -> None:
    named = config.get("_class_name")
    if part.role == "scheduler":
        if named is not None and named not in part.classes:
            raise BadValue(f"{path}: _class_name {brief(named)} is not a scheduler ppddpm knows "
                           f"({', '.join(part.classes)})")
        configs.check_scheduler_config(config, str(path))
        return
    if named is not None and named != cls:
        raise BadValue(f"{path}: _class_name {brief(named)} disagrees with model_index.json, which names {cls}")
    configs.check_model_config(config, str(path))


def _checked_weights(path: Path, family: Family) -> tensorfile.TensorFile:
    header = tensorfile.read_header(path, "weights file")
    layout = header.metadata.get("format")
    if layout not in family.formats:
        raise BadValue(f"{path}: its metadata says format {brief(layout)}; {family.libraries[0]} reads "
                       f"weights saved in paddle's layout (format {' or '.join(map(repr, family.formats))}) "
                       f"without converting them; save the model with save_pretrained")
    tensorfile.check_finite(header)
    return header
