"""Layer-wise fine-tuning (DeepRebirth): fit each new block to the teacher's activations, then
fine-tune the whole network on the labels with distillation from the teacher.

Keras optimizers have one learning rate for all variables; the new layers learn faster than
the layers before them (the paper's 10x), so the steps run on two optimizers.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops
from tqdm.auto import tqdm

from fdi_keras.distillation import Distillation, log_probabilities, outputs_probabilities
from fdi_keras.graph import trace


def _batches(n, batch_size, rng):
    """Shuffled full batches (a smaller last batch would retrace the step function)."""
    order = rng.permutation(n)
    full = max(1, n // batch_size) * batch_size
    return [order[i : i + batch_size] for i in range(0, min(full, n), batch_size)]


def _train(
    variables_fast,
    variables_slow,
    loss_fn,
    inputs,
    epochs,
    batch_size,
    lr,
    lr_multiplier,
    desc,
    seed=0,
):
    """Adam on `loss_fn(batch)`, `lr * lr_multiplier` for the fast variables, `lr` else."""
    fast = keras.optimizers.Adam(lr * lr_multiplier)
    slow = keras.optimizers.Adam(lr)
    variables = list(variables_fast) + list(variables_slow)
    n_fast = len(variables_fast)

    @tf.function(autograph=False)  # no data-dependent control flow to convert
    def step(*batch):
        with tf.GradientTape() as tape:
            loss = loss_fn(*batch)
        grads = tape.gradient(loss, variables)
        for optimizer, gs, vs in (
            (fast, grads[:n_fast], variables[:n_fast]),
            (slow, grads[n_fast:], variables[n_fast:]),
        ):
            pairs = [(g, v) for g, v in zip(gs, vs) if g is not None]
            if pairs:
                optimizer.apply_gradients(pairs)
        return loss

    rng = np.random.default_rng(seed)
    n = len(inputs[0])
    with tqdm(total=epochs * max(1, n // batch_size), desc=desc, leave=False) as bar:
        for _ in range(epochs):
            for idx in _batches(n, batch_size, rng):
                loss = step(*(a[idx] for a in inputs))
                bar.set_postfix(loss=f"{float(loss):.4g}")
                bar.update()


def block_models(student, teacher, student_layer: str, teacher_layer: str):
    """input -> the block's output, in the student and in the teacher.

    The block's output is `student_layer`'s, matched to `teacher_layer`'s. When their shapes
    differ (a branch merge widened a convolution that a later merge replaces), both move down
    the student's chain of sole consumers to the first layer the teacher has too with the same
    output shape (the module's Concatenate).
    """
    s_graph, t_graph = trace(student), trace(teacher)
    s_node = s_graph.calls(student.get_layer(student_layer))[0]
    t_node = t_graph.calls(teacher.get_layer(teacher_layer))[0]
    t_by_name = {n.name: n for n in t_graph.nodes}
    while tuple(t_node.output.shape) != tuple(s_node.output.shape):
        following = s_graph.consumers(s_node)
        if len(following) != 1:
            raise ValueError(f"No teacher activation matches the block ending at {student_layer!r}")
        s_node = following[0]
        t_node = t_by_name.get(s_node.name, t_node)
    return (
        keras.Model(s_graph.inputs, s_node.output),
        keras.Model(t_graph.inputs, t_node.output),
    )


def reconstruction_error(student_block, teacher_block, x, batch_size=256) -> float:
    """Mean squared error of the student block's output against the teacher's, on `x`."""
    s = student_block.predict(x, batch_size=batch_size, verbose=0)
    t = teacher_block.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean((s - t) ** 2))


def fit_block(
    student_block,
    teacher_block,
    new_layers,
    x,
    epochs=1,
    batch_size=64,
    lr=1e-4,
    lr_multiplier=10.0,
    desc="layer-wise",
):
    """Trains `student_block` (input -> new block) to reproduce `teacher_block`'s output: the
    `new_layers` at `lr * lr_multiplier`, the layers before them at `lr`."""
    fast = [v for layer in new_layers for v in layer.trainable_variables]
    fast_ids = {id(v) for v in fast}
    slow = [v for v in student_block.trainable_variables if id(v) not in fast_ids]

    def loss_fn(xb):
        target = ops.stop_gradient(teacher_block(xb, training=False))
        return ops.mean(ops.square(student_block(xb, training=True) - target))

    _train(fast, slow, loss_fn, [x], epochs, batch_size, lr, lr_multiplier, desc)


def finetune(
    model,
    teacher,
    x,
    y,
    epochs=1,
    batch_size=64,
    lr=1e-4,
    temperature=4.0,
    distill_weight=0.5,
    desc="fine-tune",
):
    """Fine-tunes all of `model` on sparse labels `y` plus distillation from `teacher`'s
    softened outputs, `softmax(log p / T)`. Each model's output may be probabilities (it ends
    in a softmax) or logits: `outputs_probabilities` tells which."""
    teacher_fn = keras.Model(teacher.inputs, teacher.outputs)
    student_probs, teacher_probs = outputs_probabilities(model), outputs_probabilities(teacher)
    distillation = Distillation(temperature, 1 - distill_weight, from_logits=not student_probs)

    def loss_fn(xb, yb):
        t_out = ops.stop_gradient(teacher_fn(xb, training=False))
        labels = ops.reshape(ops.cast(yb, "float32"), (-1, 1))
        packed = ops.concatenate([labels, log_probabilities(t_out, not teacher_probs)], axis=1)
        return distillation(packed, model(xb, training=True))

    _train([], model.trainable_variables, loss_fn, [x, y], epochs, batch_size, lr, 1.0, desc)
    return model
