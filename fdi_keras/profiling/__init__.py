"""Device profiling: sample kernel configurations, time them on a device, store the rows."""

from fdi_keras.profiling.fitting import check_one_setup, fit_profile
from fdi_keras.profiling.lock import ProfileLock
from fdi_keras.profiling.profiler import ProfileRun, run_profile, sample_all
from fdi_keras.profiling.retry import RetryPolicy
from fdi_keras.profiling.runners import LocalRunner, Runner
from fdi_keras.profiling.sampling import sample_configs
from fdi_keras.profiling.store import ProfileStore, read_rows

__all__ = [
    "LocalRunner",
    "ProfileLock",
    "ProfileRun",
    "ProfileStore",
    "RetryPolicy",
    "Runner",
    "check_one_setup",
    "fit_profile",
    "read_rows",
    "run_profile",
    "sample_all",
    "sample_configs",
]
