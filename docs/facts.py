"""The numbers README's prose quotes that no table holds: the `facts` section of `make docs`.

Each is computed here from the code, written to docs/figures/facts.json, and shown in README as an
inline number (`<!-- n:facts:PATH:FORMAT -->…<!-- /n -->`, docs/readme_blocks.py). All are cheap,
so SHORT computes them exactly as FULL does.
"""
from ppdiffusers import EulerDiscreteScheduler

import ppddpm
from sections import Section


def initial_noise(steps: int = 10) -> dict:
    """σ-space samplers start from init_noise_sigma · z, read after set_timesteps (MATH.md, "σ-space"):
    Euler on the bundled DDPM schedule at `steps` leading-spaced steps, against the σ of the full table
    that reading it too early gives."""
    scheduler = ppddpm.with_config(ppddpm.load_pipeline().scheduler, cls=EulerDiscreteScheduler)
    full_table = float(scheduler.init_noise_sigma)
    scheduler.set_timesteps(steps)
    return {"steps": steps, "spacing": scheduler.config.timestep_spacing,
            "init_noise_sigma": float(scheduler.init_noise_sigma), "full_table": full_table}


def compute(setting, pictures=None) -> dict:
    return {"initial_noise": initial_noise()}


SECTIONS = [Section("facts", compute, writer="docs/facts.py")]
