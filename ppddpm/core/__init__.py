"""The mechanism: intercepting `scheduler.step` (intercept), what each sampler family's step means
(adapters), the step record and its observer (records), the sampling loop (loop), the recorder
(recorder), device → host transfer (transfer), randomness (rng), scheduler configs (config) and
sharding seeds over ranks (distributed)."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
