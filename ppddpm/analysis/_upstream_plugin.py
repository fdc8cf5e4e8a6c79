"""pytest plugin for `ppddpm.analysis.upstream`: patch a variant in, or install ppddpm's step observer,
class-wide; collect each test's outcome."""
import contextlib
import json
import os

from ppddpm.core.records import StepObserver, observe
from ppddpm.variants.patching import patch_step

_stack = contextlib.ExitStack()
_outcomes = {}
_records = []


def pytest_configure(config):
    import ppdiffusers

    variant = os.environ.get("PPDDPM_UPSTREAM_VARIANT")
    observed = os.environ.get("PPDDPM_UPSTREAM_OBSERVE")
    if variant:
        _stack.enter_context(patch_step(ppdiffusers.DDPMScheduler, variant))
    if observed:
        # the recorder's whole path: x̂_0, σ, and z observed (replayed, or passed in as data)
        observer = StepObserver(lambda record: _records.append(record.i), want_noise=True)
        _stack.enter_context(observe(getattr(ppdiffusers, observed), observer, "upstream"))


def pytest_runtest_logreport(report):
    name = report.nodeid.split("::")[-1]
    if report.when == "call" or report.outcome != "passed":
        if _outcomes.get(name) in (None, "passed"):
            _outcomes[name] = report.outcome


def pytest_unconfigure(config):
    _stack.close()
    path = os.environ.get("PPDDPM_UPSTREAM_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"outcomes": _outcomes, "steps_observed": len(_records)}, fh, indent=1, sort_keys=True)
