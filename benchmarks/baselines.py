"""The compressors a practitioner would try instead of FastDeepIoT, for benchmarks/compressors.py.

Each takes a trained teacher, a latency target predicted on a timing tree, the training data and
a budget of epochs, and returns the compressed model. All choose channels through the project's
own gates (`latency_aware`, `gate_groups`, `strip`), so residual groups are pruned together
exactly as the method prunes them and every result is a plain Keras model.

- `uniform_scratch`: one width ratio for every layer (MobileNet's `alpha`), trained from a
  fresh initialization.
- `l1_uniform`: the same ratio, keeping each layer's channels of largest L1 norm (Li et al.,
  2017, "Pruning Filters for Efficient ConvNets"), then fine-tuned.
- `knapsack`: HALP-style (Shen et al., 2022, "Structural Pruning via Latency-Saliency
  Knapsack"): first-order Taylor channel importance (Molchanov et al., 2019) maximized under
  the latency budget, each layer's latency read from the timing tree, pruned greedily by the
  channel blocks that lose least importance per millisecond saved, in gradual prune /
  fine-tune steps.

With `distill` (the default, as `compress`'s) every method trains or fine-tunes on the teacher's
outputs as well as on the labels (`finetune(..., teacher=...)`), so a comparison with the
project's default compares channel choices, not whether the teacher was used.

Every method keeps at least the project's floor of each group's channels
(`fdi_keras.prune.expansion.width_floor`, a tenth, as Torch-Pruning's `max_pruning_ratio` of
0.9), the floor `FastDeepIoTCallback` stops at: first-order importance cannot see that a layer
of one channel starves the network, and a uniform ratio below it leaves layers of one channel.
"""

from __future__ import annotations

import keras
import numpy as np

from fdi_keras import latency_aware, predict_latency, strip
from fdi_keras.compress import finetune
from fdi_keras.prune.expansion import width_floor
from fdi_keras.prune.regularizer import channel_dependencies, gate_groups, predicted_us

OPEN, CLOSED = 9.0, -9.0  # gate logits that are certainly open / closed


def channel_kernel(wrapper):
    """The variable holding each output channel's (unit's) incoming weights, last axis."""
    layer = wrapper.layer
    if isinstance(layer, (keras.layers.GRU, keras.layers.LSTM)):
        return layer.cell.kernel  # [z, r, h] (GRU) or [i, f, c, o] (LSTM) blocks of units
    return (
        layer.pointwise_kernel if isinstance(layer, keras.layers.SeparableConv2D) else layer.kernel
    )


def per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    """Sums `values` (shaped like a channel kernel) per output channel or unit."""
    return (
        values.reshape(-1, channels).sum(0)
        if values.shape[-1] == channels
        else (values.reshape(values.shape[0], -1, channels).sum((0, 1)))
    )


def filter_norms(wrapper) -> np.ndarray:
    """L1 norm of each output channel's (unit's) incoming weights."""
    kernel = np.abs(keras.ops.convert_to_numpy(channel_kernel(wrapper)))
    return per_channel(kernel, wrapper.channels)


def taylor_importance(gated, x, y, samples=1024, batch_size=64) -> dict[str, np.ndarray]:
    """Per wrapper, the first-order Taylor estimate of the loss change when a channel is
    removed, (sum over its incoming weights of weight * gradient)^2 summed over batches
    (Molchanov et al., 2019), on `samples` training examples with every gate open."""
    import tensorflow as tf

    wrappers = [w for ws in gate_groups(gated).values() for w in ws]
    kernels = [channel_kernel(w) for w in wrappers]
    scores = {w.name: np.zeros(w.channels) for w in wrappers}
    loss = keras.losses.SparseCategoricalCrossentropy()
    for start in range(0, min(samples, len(x)), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with tf.GradientTape() as tape:
            value = loss(yb, gated(xb, training=False))
        for w, k, g in zip(wrappers, kernels, tape.gradient(value, kernels)):
            product = keras.ops.convert_to_numpy(k) * keras.ops.convert_to_numpy(g)
            scores[w.name] += per_channel(product, w.channels) ** 2
    return scores


class ChannelChooser:
    """A gated copy of a model whose channels are kept by rank of importance, per gate group.

    `importance[root]` ranks the group's channels (summed over the layers sharing its gate):
    L1 norms divided by each layer's mean so layers of any scale compare, or, given training
    data, Taylor importance, which is in units of the loss;
    `predicted_ms(widths)` is the tree's latency of the model with each group at its width,
    read from the kernels' channel dependencies (no model is rebuilt); `stripped(widths)` is
    the plain model keeping each group's top channels.

    No group goes below its floor (`width_floor`: a tenth of its channels), counted on
    `original` ({layer name: channels}, the `channels` of the chooser of the model pruning
    started from) when given: a gradual method choosing again on an already pruned model
    keeps the first model's floor instead of a tenth of a tenth (the knapsack's third round
    once left ResNet-20 layers of one channel).
    """

    def __init__(self, model: keras.Model, tree, data=None, original=None):
        self.gated = latency_aware(model)
        self.tree = tree
        self.groups = gate_groups(self.gated)
        self.channels = {w.layer.name: w.channels for ws in self.groups.values() for w in ws}
        self.kernels, _ = channel_dependencies(self.gated, tree)
        taylor = taylor_importance(self.gated, *data) if data is not None else None
        self.importance = {}
        for root, ws in self.groups.items():
            if taylor is not None:
                self.importance[root] = sum(taylor[w.name] for w in ws)
            else:
                norms = [filter_norms(w) for w in ws]
                self.importance[root] = sum(n / max(n.mean(), 1e-12) for n in norms)
        self.order = {root: np.argsort(-imp) for root, imp in self.importance.items()}
        self.full = {root: len(imp) for root, imp in self.importance.items()}
        self.floor = {
            root: width_floor(ws, channels=(original or {}).get(ws[0].layer.name))
            for root, ws in self.groups.items()
        }

    def predicted_ms(self, widths: dict[str, int]) -> float:
        return predicted_us(self.tree, self.kernels, widths) / 1000

    def uniform(self, ratio: float) -> dict[str, int]:
        return {r: max(self.floor[r], int(round(ratio * n))) for r, n in self.full.items()}

    def uniform_to(self, target_ms: float) -> dict[str, int]:
        """The largest uniform ratio (bisection) whose predicted latency is within target_ms."""
        lo, hi = 0.0, 1.0
        for _ in range(14):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.predicted_ms(self.uniform(mid)) <= target_ms else (lo, mid)
        return self.uniform(lo)

    def knapsack_to(self, target_ms: float, block: float = 1 / 16) -> dict[str, int]:
        """Greedy latency-saliency knapsack: removes, one at a time, the block of a group's
        least important channels whose lost importance per predicted millisecond saved is
        smallest, until the prediction is within target_ms. A group's block is the fewest
        `block` fractions of its width that save time: on a stair's flat, one fraction saves
        nothing, and a knapsack that looked no further stopped there (as HALP reads every
        width of a layer from its latency table)."""
        widths = dict(self.full)
        current = self.predicted_ms(widths)
        while current > target_ms:
            best = None
            for root in widths:
                step = max(1, int(round(block * self.full[root])))
                width, saved = widths[root], 0.0
                while saved <= 0 and width > self.floor[root]:
                    width = max(self.floor[root], width - step)
                    saved = current - self.predicted_ms({**widths, root: width})
                if saved <= 0:
                    continue
                removed = self.order[root][width : widths[root]]
                cost = float(self.importance[root][removed].sum()) / saved
                if best is None or cost < best[0]:
                    best = (cost, root, width, current - saved)
            if best is None:  # no block saves time: the floor of the model
                break
            _, root, widths[root], current = best
        return widths

    def stripped(self, widths: dict[str, int]) -> keras.Model:
        for root, ws in self.groups.items():
            logits = np.full(self.full[root], CLOSED)
            logits[self.order[root][: widths[root]]] = OPEN
            for w in ws:
                w.set_gate_logits(logits)
        return strip(self.gated)


def _train(model, x, y, epochs, batch_size, teacher):
    if epochs:
        finetune(model, x, y, epochs, batch_size, teacher=teacher)
    return model


def uniform_scratch(
    teacher, tree, x, y, target_ms, epochs, batch_size=64, distill=True
) -> keras.Model:
    """The teacher's architecture at one width ratio, predicted within target_ms, trained
    from a fresh initialization for `epochs` (Adam 1e-3, cosine to 0)."""
    chooser = ChannelChooser(teacher, tree)
    fresh = keras.models.clone_model(chooser.stripped(chooser.uniform_to(target_ms)))
    return _train(fresh, x, y, epochs, batch_size, teacher if distill else None)


def l1_uniform(teacher, tree, x, y, target_ms, epochs, batch_size=64, distill=True) -> keras.Model:
    """Uniform-ratio L1-magnitude filter pruning within target_ms, then fine-tuned."""
    chooser = ChannelChooser(teacher, tree)
    small = chooser.stripped(chooser.uniform_to(target_ms))
    return _train(small, x, y, epochs, batch_size, teacher if distill else None)


def knapsack(
    teacher, tree, x, y, target_ms, epochs, batch_size=64, steps=3, distill=True
) -> keras.Model:
    """Gradual latency knapsack: `steps` rounds (at most one per epoch), each pruning to a
    geometric step between the teacher's predicted latency and target_ms, then fine-tuning
    an equal share of the epochs; the last round reaches target_ms."""
    steps = max(1, min(steps, epochs))
    start = predict_latency(teacher, tree).total_ms
    shares = np.diff(np.round(np.linspace(0, epochs, steps + 1))).astype(int)
    model, original = teacher, None
    for k, share in enumerate(shares, 1):
        chooser = ChannelChooser(model, tree, data=(x, y), original=original)
        original = original or chooser.channels  # every round keeps the teacher's floors
        budget = start * (target_ms / start) ** (k / steps)
        small = chooser.stripped(chooser.knapsack_to(budget))
        model = _train(small, x, y, share, batch_size, teacher if distill else None)
    return model
