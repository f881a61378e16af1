"""LeNet-5 on MNIST, compressed with FastDeepIoT to a latency target on this CPU.

python examples/mnist_lenet.py --tree=profiles/this_cpu/timing_tree.json --target_speedup=3
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples import common, datasets, models  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", datasets.DEFAULT_DATA_DIR, "Folder holding mnist.npz.")
flags.DEFINE_string("tree", "profiles/this_cpu/timing_tree.json", "This CPU's timing tree.")
flags.DEFINE_float("target_speedup", 3.0, "Target predicted speedup over the dense model.")
flags.DEFINE_integer("epochs", 4, "Epochs of dense training.")
flags.DEFINE_integer("compress_epochs", 6, "Epochs of latency-aware training.")
flags.DEFINE_integer("finetune_epochs", 2, "Epochs of fine-tuning after strip.")
flags.DEFINE_string("out_dir", "examples/out/mnist_lenet", "Where models are written.")


def main(argv):
    del argv
    common.run(
        models.lenet5(),
        datasets.mnist(FLAGS.data_dir),
        FLAGS.tree,
        FLAGS.target_speedup,
        FLAGS.epochs,
        FLAGS.compress_epochs,
        FLAGS.finetune_epochs,
        FLAGS.out_dir,
    )


if __name__ == "__main__":
    app.run(main)
