"""Benchmark of latency-steered compression (FastDeepIoT) against its ablations and baselines.

    python benchmarks/compressors.py                      # MNIST, UCI HAR, CIFAR-10: ~1.3 h
    python benchmarks/compressors.py --datasets=cifar10   # one dataset; the others' results stay

Per dataset, side by side in one run, LiteRT fp32, 1 thread: the dense model; FastDeepIoT
(tree-steered, hard-concrete gates, expansion); the same with straight-through gates; without
expansion; with a FLOPs cost instead of the tree; and L1-magnitude channel pruning at the
FastDeepIoT model's predicted latency. Each: test accuracy, measured TFLite latency (minimum,
and median with spread), predicted latency, epochs, wall time; a Pareto plot; the per-epoch
training overhead of the wrappers and callback. Each dataset has its own section of RESULTS.md
(`compression_<dataset>`) and its own Pareto plot, so one dataset can be rerun alone.

Not named compression.py: run as a script, that name would shadow the standard library's
`compression` package (Python 3.14, and its backport, which jax imports under TensorFlow).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time

import keras
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import COUNTS, environment, table, write_section  # noqa: E402
from examples import models  # noqa: E402
from fdi_keras import datasets, latency_aware, predict_latency, strip  # noqa: E402
from fdi_keras.compress import CosineAnnealing, compress  # noqa: E402
from fdi_keras.export import measure_latency, to_tflite  # noqa: E402
from fdi_keras.plots import pareto_figure  # noqa: E402
from fdi_keras.profiling import LocalRunner, run_profile, sample_all  # noqa: E402
from fdi_keras.prune.regularizer import gate_groups  # noqa: E402
from fdi_keras.timing import FlopsLinear, TimingTree, rows_to_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "datasets",
    ["mnist", "har", "cifar10"],
    "Any of mnist, har, cifar10 (each found as fdi_keras.datasets documents).",
)
flags.DEFINE_string(
    "profile_dir",
    "benchmarks/out/timing_model/profile",
    "Profile of this CPU (extended with the kinds these models need).",
)
flags.DEFINE_string(
    "data_dir", None, "Folder of the .npz datasets (default: $FDI_DATA, ../shared/data, download)."
)
flags.DEFINE_float("target_speedup", 3.0, "Predicted speedup asked of every compressor.")
flags.DEFINE_float("epoch_scale", 1.0, "Multiplies every epoch count (0.1 for a smoke run).")

HERE = os.path.dirname(os.path.abspath(__file__))
SETUPS = {  # model, data loader, dense epochs, compression epochs, fine-tune epochs
    "mnist": (models.lenet5, datasets.mnist, 3, 4, 1),
    "har": (models.deepsense_har, datasets.uci_har, 15, 8, 3),
    # Half the default widths: an epoch of 30,000 images takes ~1 min here instead of ~2.5.
    "cifar10": (lambda: models.cifar_cnn((32, 32, 64, 64, 128)), datasets.cifar10, 10, 5, 2),
}
KINDS = {**COUNTS, "gru": 600}  # the timing benchmark's profile, plus what HAR needs


def device_trees():
    rows = run_profile([LocalRunner()], sample_all(list(KINDS), KINDS), FLAGS.profile_dir).rows
    tree = TimingTree().fit_rows(rows)
    specs, y = [], []
    for s, t in rows_to_dataset(rows).values():
        specs += s
        y += list(t)
    return tree, FlopsLinear().fit(specs, np.array(y)).as_tree()


def filter_norms(wrapper) -> np.ndarray:
    """L1 norm of each output channel's (unit's) incoming weights."""
    layer = wrapper.layer
    if isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
        kernel = keras.ops.convert_to_numpy(layer.cell.kernel)
        return np.abs(kernel).reshape(kernel.shape[0], -1, wrapper.channels).sum((0, 1))
    kernel = (
        layer.pointwise_kernel
        if isinstance(layer, keras.layers.SeparableConv2D)
        else (layer.kernel)
    )
    return np.abs(keras.ops.convert_to_numpy(kernel)).reshape(-1, wrapper.channels).sum(0)


def l1_prune(dense, tree, target_ms):
    """Uniform L1-magnitude channel pruning whose predicted latency matches `target_ms`."""
    gated = latency_aware(dense)
    groups = gate_groups(gated)
    norms = {root: sum(filter_norms(w) for w in ws) for root, ws in groups.items()}

    def apply(ratio):
        for root, ws in groups.items():
            keep = max(1, int(round(ratio * len(norms[root]))))
            logits = np.full(len(norms[root]), -9.0)
            logits[np.argsort(-norms[root])[:keep]] = 9.0
            for w in ws:
                w.set_gate_logits(logits)
        return predict_latency(gated, tree).total_ms

    lo, hi = 0.02, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if apply(mid) < target_ms else (lo, mid)
    apply(lo)
    return strip(gated)


def fit(model, x, y, epochs, batch_size=64):
    """Adam at 1e-3 annealed to 0 (as compress() fine-tunes), so every model ends at a minimum."""
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    start = time.time()
    if epochs:
        model.fit(
            x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[CosineAnnealing()]
        )
    return time.time() - start


OVERHEAD_SAMPLES = 15000  # examples per timed epoch of the training-overhead measurement


def epoch_overhead(dense, tree, target_ms, x, y, rounds=3, samples=OVERHEAD_SAMPLES):
    """Seconds per epoch (over up to `samples` examples) of the plain model and of the gated
    model with the callback steering toward `target_ms`: `rounds` epochs of each, interleaved
    after a warm-up one, from the start to the end of the epoch (the callback's per-epoch work
    included, its once-per-fit setup not). Returns the medians and the per-round ratios."""
    from fdi_keras import FastDeepIoTCallback

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    x, y = x[:samples], y[:samples]
    plain = keras.models.clone_model(dense)
    gated = latency_aware(dense)
    setups = {
        "plain": (plain, []),
        "gated": (gated, [FastDeepIoTCallback(tree, target_ms, verbose=0)]),
    }
    times = {name: [] for name in setups}
    for model, _ in setups.values():
        model.compile("adam", "sparse_categorical_crossentropy")
    for round_ in range(rounds + 1):
        for name, (model, callbacks) in setups.items():
            timer = EpochTimer()
            model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[*callbacks, timer])
            if round_:  # the first round builds and traces
                times[name].append(timer.seconds)
    ratios = np.array(times["gated"]) / np.array(times["plain"])
    return {name: float(np.median(t)) for name, t in times.items()} | {"ratios": ratios}


def run_dataset(name, tree, flops_tree):
    build, load, dense_epochs, comp_epochs, ft_epochs = SETUPS[name]
    scale = lambda e: max(1, int(round(e * FLAGS.epoch_scale)))  # noqa: E731
    (x, y), (x_test, y_test) = load(FLAGS.data_dir)
    keras.utils.set_random_seed(0)
    dense = build()
    dense_seconds = fit(dense, x, y, scale(dense_epochs))
    dense_ms = predict_latency(dense, tree).total_ms
    target = dense_ms / FLAGS.target_speedup
    variants = {"dense": (dense, dense_seconds, scale(dense_epochs))}
    for label, kwargs in (
        ("FastDeepIoT", {}),
        ("straight-through gates", {"gate": "straight_through"}),
        ("no expansion", {"expand": False}),
        ("FLOPs cost", {"cost_tree": flops_tree}),
    ):
        keras.utils.set_random_seed(0)
        r = compress(dense, tree, x, y, target, scale(comp_epochs), scale(ft_epochs), **kwargs)
        variants[label] = (r.model, r.seconds, r.epochs)
    fdi_pred = predict_latency(variants["FastDeepIoT"][0], tree).total_ms
    start = time.time()
    l1 = l1_prune(dense, tree, fdi_pred)
    seconds = time.time() - start + fit(l1, x, y, scale(comp_epochs) + scale(ft_epochs))
    variants["L1 magnitude (matched latency)"] = (
        l1,
        seconds,
        scale(comp_epochs) + scale(ft_epochs),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffers = [to_tflite(m) for m, _, _ in variants.values()]
    timings = measure_latency(flatbuffers, rounds=21)
    rows = []
    for (label, (model, seconds, epochs)), t in zip(variants.items(), timings):
        acc = float(
            np.mean(np.argmax(model.predict(x_test, verbose=0, batch_size=256), -1) == y_test)
        )
        rows.append(
            dict(
                label=label,
                acc=acc,
                ms=t.min_ms,
                median=t.median_ms,
                spread=t.spread,
                pred=predict_latency(model, tree).total_ms,
                epochs=epochs,
                seconds=seconds,
                params=model.count_params(),
            )
        )
    overhead = epoch_overhead(dense, tree, target, x, y)
    return rows, overhead, target


def pareto_plot(name, rows):
    """Accuracy against measured latency (hollow: predicted), a point per variant, to
    compression_<name>.png."""
    runs = [
        dict(method=r["label"], accuracy=100 * r["acc"], latency_ms=r["ms"], predicted_ms=r["pred"])
        for r in rows
    ]
    fig = pareto_figure(runs, title=name)
    fig.axes[0].set(xlabel="latency (ms, LiteRT, 1 thread)", ylabel="test accuracy (%)")
    fig.savefig(os.path.join(HERE, f"compression_{name}.png"), dpi=110)


def dataset_section(name, env, rows, overhead, target):
    dense = rows[0]
    return "\n".join(
        [
            f"### Compression on {name} (`benchmarks/compressors.py --datasets={name}`)",
            "",
            f"Run: {env}. LiteRT XNNPack, 1 thread, fp32, batch 1; every variant measured side "
            f"by side in one run (21 interleaved rounds). Target: predicted "
            f"{FLAGS.target_speedup:g}x faster than the dense model ({target:.3f} ms).",
            "",
            table(
                [
                    "model",
                    "accuracy",
                    "measured ms (min)",
                    "median ms (spread)",
                    "predicted ms",
                    "measured speedup",
                    "predicted speedup",
                    "params",
                    "epochs",
                    "wall s",
                ],
                [
                    [
                        r["label"],
                        f"{100 * r['acc']:.2f}%",
                        f"{r['ms']:.3f}",
                        f"{r['median']:.3f} ({100 * r['spread']:.1f}%)",
                        f"{r['pred']:.3f}",
                        f"{dense['ms'] / r['ms']:.2f}x",
                        f"{dense['pred'] / r['pred']:.2f}x",
                        r["params"],
                        r["epochs"],
                        f"{r['seconds']:.0f}",
                    ]
                    for r in rows
                ],
            ),
            "",
            f"Training overhead of wrappers + callback: {overhead['gated']:.1f} s vs "
            f"{overhead['plain']:.1f} s per epoch of up to {OVERHEAD_SAMPLES:,} examples, "
            f"medians of {len(overhead['ratios'])} interleaved epochs: "
            f"{100 * (np.median(overhead['ratios']) - 1):+.0f}% (rounds: "
            + ", ".join(f"{100 * (r - 1):+.0f}%" for r in overhead["ratios"])
            + ").",
            "",
            f"![pareto {name}](compression_{name}.png)",
        ]
    )


def main(argv):
    del argv
    env = environment()
    tree, flops_tree = device_trees()
    for name in FLAGS.datasets:
        rows, overhead, target = run_dataset(name, tree, flops_tree)
        pareto_plot(name, rows)
        section = dataset_section(name, env, rows, overhead, target)
        write_section(f"compression_{name}", section)
        print(section)


if __name__ == "__main__":
    app.run(main)
