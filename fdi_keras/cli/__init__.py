"""The command-line tools installed with the package (console scripts, absl flags).

Each module defines its flags in `define_flags()` (called by `entry()`, never at import, so one
process may import several tools), a plain `run(...)` that tests call, a thin `main(argv)`
that maps the flags to `run`, and `entry()`, the console script:

    fdi-profile    profile a device's kernels with LiteRT and fit its timing tree
    fdi-fit-tree   refit a timing tree from stored profiles, measuring nothing
    fdi-predict    a .keras model's per-kernel latency predicted by a timing tree
    fdi-compress   compress a trained model to a latency target (FastDeepIoT)
    fdi-slim       slim a trained model (DeepRebirth)
"""

import numpy as np


def accuracy(model, x, y) -> float:
    """Top-1 accuracy of a softmax classifier on (x, y)."""
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))
