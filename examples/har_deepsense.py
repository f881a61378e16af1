"""A DeepSense-style CNN+GRU on UCI HAR (activity recognition from phone IMUs), compressed
with FastDeepIoT to a latency target on this CPU.

    python examples/har_deepsense.py --tree=profiles/this_cpu/timing_tree.json --target_speedup=3
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import common, models  # noqa: E402
from fdi_keras import datasets  # noqa: E402

common.define_flags(
    "uci_har.npz", "examples/out/har_deepsense", epochs=10, compress_epochs=6, finetune_epochs=2
)

if __name__ == "__main__":
    app.run(lambda argv: common.run_from_flags(models.deepsense_har(), datasets.uci_har))
