"""pytest plugin for `ppddpm.upstream`: patch a variant in class-wide, collect outcomes."""
import contextlib
import json
import os

_stack = contextlib.ExitStack()
_outcomes = {}


def pytest_configure(config):
    variant = os.environ.get("PPDDPM_UPSTREAM_VARIANT")
    if variant:
        from ppdiffusers import DDPMScheduler

        from ppddpm import patch_step

        _stack.enter_context(patch_step(DDPMScheduler, variant))


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
            json.dump(_outcomes, fh, indent=1, sort_keys=True)
