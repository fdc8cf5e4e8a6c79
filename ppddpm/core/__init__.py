"""The mechanism: intercepting `scheduler.step` (intercept), what each sampler family's step means
(adapters), the step record and its observer (records), the per-step columns a recording keeps
(columns), the sampling loop (loop), the recorder (recorder) and what a kind of pipeline adds to it
(support), device → host transfer (transfer), randomness (rng), scheduler configs (config) and
sharding seeds over ranks (distributed). No pipeline family is known here."""
from ppddpm._lazy import submodules_on_access

__getattr__ = submodules_on_access(__name__)
