"""A converter that hangs on some configurations and dies on others, for the converter pool's
tests. It runs in the pool's spawned worker, which imports this module by name (pytest puts
this folder on the path that spawned processes inherit)."""

import os
import time

from fdi_keras.profiling.convert import convert_batch


def convert_or_fail(spec_dicts, hang=(), crash=()):
    """`convert_batch`, except that a configuration whose key is in `hang` never returns and
    one in `crash` kills the worker process."""
    from fdi_keras.specs import LayerSpec

    keys = [LayerSpec.from_dict(d).key() for d in spec_dicts]
    if any(k in crash for k in keys):
        os._exit(1)
    if any(k in hang for k in keys):
        time.sleep(3600)
    return convert_batch(spec_dicts)
