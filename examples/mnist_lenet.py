"""LeNet-5 on MNIST, compressed with FastDeepIoT to a latency target on this CPU.

python examples/mnist_lenet.py --tree=profiles/this_cpu/timing_tree.json --target_speedup=3
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import common, models  # noqa: E402
from fdi_keras import datasets  # noqa: E402

common.define_flags(
    "mnist.npz", "examples/out/mnist_lenet", epochs=3, compress_epochs=4, finetune_epochs=1
)

if __name__ == "__main__":
    app.run(lambda argv: common.run_from_flags(models.lenet5(), datasets.mnist))
