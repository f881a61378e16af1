"""DeepRebirth on CIFAR-10: train a teacher, slim it, fine-tune it, and measure both.

    python examples/googlenet_rebirth.py --model=googlenet --tree=profiles/this_cpu/timing_tree.json
    python examples/googlenet_rebirth.py --model=vgg        # pooling merged into convolutions
    python examples/googlenet_rebirth.py --model=resnet     # BN folded around residual adds

The teacher is GoogLeNet (Inception v1 with its LRN layers), a VGG-style net or a BN
ResNet-style net (examples/models.py). The plan (with predicted savings when --tree is given)
is printed, the slimmed model is learned layer by layer and fine-tuned with distillation, and
both are exported to TFLite and measured side by side: accuracy, latency and peak memory.
CIFAR-10 is found as `fdi_keras.datasets` documents: --data_dir, $FDI_DATA, ../shared/data,
then the Keras download.
"""

import contextlib
import io
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fdi_keras  # noqa: E402
from examples import common, models  # noqa: E402
from fdi_keras import datasets, rebirth  # noqa: E402
from fdi_keras.export import measure_latency, measure_memory, to_tflite  # noqa: E402

flags.DEFINE_enum("model", "googlenet", ["googlenet", "vgg", "resnet"], "Teacher network.")
flags.DEFINE_float("width", 0.25, "GoogLeNet width multiplier.")
flags.DEFINE_string(
    "data_dir", None, "Folder holding cifar10.npz (default: $FDI_DATA, ../shared/data, download)."
)
flags.DEFINE_string("tree", None, "This CPU's timing tree (optional: predicted savings).")
flags.DEFINE_integer("epochs", 6, "Teacher training epochs.")
flags.DEFINE_integer("layerwise_epochs", 1, "Epochs of each layer-wise step.")
flags.DEFINE_integer("finetune_epochs", 2, "Whole-network fine-tuning epochs.")
flags.DEFINE_string("out_dir", "examples/out/rebirth", "Where models are written.")
FLAGS = flags.FLAGS

BUILDERS = {
    "googlenet": lambda shape: models.googlenet(shape, width=FLAGS.width),
    "vgg": models.vgg_pool,
    "resnet": models.resnet_bn,
}


def main(argv):
    del argv
    (x, y), (x_test, y_test) = datasets.cifar10(FLAGS.data_dir)
    tree = common.load_tree(FLAGS.tree) if FLAGS.tree else None
    teacher = common.train(BUILDERS[FLAGS.model](x.shape[1:]), x, y, FLAGS.epochs)
    plan = rebirth.plan(teacher, tree)
    print(plan)
    small, history, skipped = rebirth.slim(
        teacher, x[:10000], y, plan, layerwise_epochs=FLAGS.layerwise_epochs, finetune_epochs=0
    )
    for step in history:
        if step.error_before is not None:
            print(f"{step.name}: block MSE {step.error_before:.4g} -> {step.error_after:.4g}")
    for s in skipped:
        print(f"skipped: {s.reason}")
    rebirth.finetune(small, teacher, x, y, epochs=FLAGS.finetune_epochs)
    os.makedirs(FLAGS.out_dir, exist_ok=True)
    small.save(os.path.join(FLAGS.out_dir, f"{FLAGS.model}_slimmed.keras"))
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [
            to_tflite(m, os.path.join(FLAGS.out_dir, f"{FLAGS.model}_{name}.tflite"))
            for m, name in ((teacher, "teacher"), (small, "slimmed"))
        ]
    timings = measure_latency(flatbuffers, rounds=15)
    header = ("accuracy", 9), ("params", 9), ("predicted ms", 14), ("measured ms", 13)
    print("\n" + " " * 9 + "".join(f"{h:>{w}}" for h, w in header) + f"{'peak MB':>9}")
    for name, m, t, fb in zip(("teacher", "slimmed"), (teacher, small), timings, flatbuffers):
        pred = f"{fdi_keras.predict_latency(m, tree).total_ms:.3f}" if tree else "-"
        acc = common.accuracy(m, x_test, y_test)
        print(
            f"{name:<9}{acc:>9.4f}{m.count_params():>9}{pred:>14}{t.min_ms:>13.3f}"
            f"{measure_memory(fb):>9.1f}"
        )
    print(f"measured speedup {timings[0].min_ms / timings[1].min_ms:.2f}x")


if __name__ == "__main__":
    app.run(main)
