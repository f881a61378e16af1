"""Device profiling: sample kernel configurations, time them on a device, store the rows."""

from fdi_keras.profiling.profiler import ProfileRun, run_profile, sample_all
from fdi_keras.profiling.runners import LocalRunner, Runner
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.profiling.store import ProfileStore, read_rows

__all__ = [
    "LocalRunner",
    "ProfileRun",
    "ProfileStore",
    "Runner",
    "read_rows",
    "run_profile",
    "sample_all",
    "sample_configs",
]
