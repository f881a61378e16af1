"""Knowledge distillation from the model being compressed (Hinton et al., 2015).

Compression always has its teacher at hand: the trained model it starts from. Training the
smaller model on the teacher's softened class probabilities as well as on the labels recovers
accuracy that labels alone leave on the table when the training budget is short.

Keras 3 losses see only `(y_true, y_pred)`, so the teacher's outputs travel with the labels:
`with_teacher` packs each example's target as `[label, teacher log-probabilities...]`, the
`Distillation` loss unpacks them, and `label_accuracy` reads the label back. The teacher runs
once per array (`predict`) or inside a `tf.data` pipeline, never inside the student's step.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from keras.metrics import MeanMetricWrapper

from fdi_keras.graph import rule_for, trace
from fdi_keras.graph.keras_layers import activation_name

_EPSILON = 1e-7  # probabilities are clipped before their logarithm


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether `model`'s (first) output is a softmax's (probabilities) rather than logits."""
    graph = trace(model)
    node = graph.producer(graph.outputs[0])
    while (
        node is not None
        and rule_for(node.layer).channel_kind(node.layer) == "pass"
        and (activation_name(node.layer) in (None, "linear"))
    ):
        node = graph.producer(node.inputs[0])  # e.g. a Dropout or an identity after the softmax
    if node is None:
        return False
    return isinstance(node.layer, keras.layers.Softmax) or activation_name(node.layer) == "softmax"


def log_probabilities(outputs, from_logits: bool):
    """Class log-probabilities from a model's outputs (logits or probabilities)."""
    if from_logits:
        return ops.log_softmax(outputs, axis=-1)
    return ops.log(ops.clip(outputs, _EPSILON, 1.0))


@keras.saving.register_keras_serializable(package="fdi_keras")
class Distillation(keras.losses.Loss):
    """Hard-label cross-entropy plus the teacher's softened probabilities' KL divergence.

    loss = hard_weight * CE(label, p) + (1 - hard_weight) * T^2 * KL(q_T || p_T), where p_T
    and q_T are the student's and the teacher's probabilities softened at temperature T (the
    T^2 keeps the soft term's gradients on the hard term's scale).

    `y_true` is what `with_teacher` packs: column 0 the integer label, the rest the teacher's
    log-probabilities.

    Args:
        temperature: the softening temperature T (> 0).
        hard_weight: the hard-label term's weight, in [0, 1].
        from_logits: whether the student outputs logits (default: probabilities, as a model
            ending in a softmax does).
    """

    def __init__(
        self,
        temperature: float = 4.0,
        hard_weight: float = 0.5,
        from_logits: bool = False,
        name: str = "distillation",
        **kwargs,
    ):
        if temperature <= 0 or not 0 <= hard_weight <= 1:
            raise ValueError(
                "Distillation needs temperature > 0 and 0 <= hard_weight <= 1. Received: "
                f"temperature={temperature}, hard_weight={hard_weight}"
            )
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.hard_weight = float(hard_weight)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true[:, 0], "int32")
        student = log_probabilities(y_pred, self.from_logits)
        hard = keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True)
        t = self.temperature
        teacher_soft = ops.log_softmax(y_true[:, 1:] / t, axis=-1)
        student_soft = ops.log_softmax(student / t, axis=-1)
        kl = ops.sum(ops.exp(teacher_soft) * (teacher_soft - student_soft), axis=-1)
        return self.hard_weight * hard + (1 - self.hard_weight) * t * t * kl

    def get_config(self):
        return super().get_config() | {
            "temperature": self.temperature,
            "hard_weight": self.hard_weight,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="fdi_keras")
def label_accuracy(y_true, y_pred):
    """Accuracy against the label in column 0 of a `with_teacher` target (`fit_arguments`
    logs it as "accuracy", as training without a teacher does)."""
    labels = ops.cast(y_true[:, 0], "int32")
    return ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), labels), "float32")


def with_teacher(teacher: keras.Model, x, y=None, batch_size: int = 256):
    """`(x, y)` with each target packed as `[label, teacher log-probabilities...]`.

    Args:
        teacher: the trained model whose outputs the student learns from.
        x, y: arrays (`y` integer labels; the teacher predicts `x` once), or a `tf.data`
            dataset of batched `(inputs, labels[, sample_weights])` with `y` None (the teacher
            runs in its pipeline).
        batch_size: the teacher's batch size on arrays.

    Returns:
        `(x, packed)` for arrays; `(dataset of (inputs, packed), None)` for a dataset.

    Raises:
        TypeError: data that is neither arrays with labels nor a `tf.data` dataset.
    """
    from_logits = not outputs_probabilities(teacher)
    if y is not None:
        outputs = teacher.predict(x, batch_size=batch_size, verbose=0)
        log_p = keras.ops.convert_to_numpy(log_probabilities(outputs, from_logits))
        labels = np.asarray(y, dtype="float32").reshape(-1, 1)
        return x, np.concatenate([labels, log_p.astype("float32")], axis=1)
    check_distillable(x=x, y=y)
    import tensorflow as tf  # only a dataset needs it

    def pack(inputs, labels, *sample_weights):
        log_p = log_probabilities(teacher(inputs, training=False), from_logits)
        labels = tf.reshape(tf.cast(labels, "float32"), (-1, 1))
        return inputs, tf.concat([labels, tf.cast(log_p, "float32")], axis=1), *sample_weights

    return x.map(pack, num_parallel_calls=tf.data.AUTOTUNE), None


def fit_arguments(
    student: keras.Model, teacher: keras.Model | None, loss, x, y=None, validation_data=None
):
    """What `fit` and `compile` take to train `student` with `loss` (no teacher) or to
    distill from `teacher`: `(x, y, validation_data, loss, metrics)`, the data packed by
    `with_teacher`.

    Raises:
        ValueError: a teacher with a loss other than sparse categorical cross-entropy (the
            hard term of `Distillation`).
        TypeError: a teacher with data `with_teacher` cannot pack (`check_distillable`).
    """
    if teacher is None:
        return x, y, validation_data, loss, ["accuracy"]
    check_distillable(loss)  # with_teacher checks the data
    x, y = with_teacher(teacher, x, y)
    if isinstance(validation_data, (tuple, list)):
        inputs, labels, *sample_weights = validation_data
        validation_data = (*with_teacher(teacher, inputs, labels), *sample_weights)
    elif validation_data is not None:
        validation_data = with_teacher(teacher, validation_data)[0]
    distillation = Distillation(from_logits=not outputs_probabilities(student))
    return x, y, validation_data, distillation, [MeanMetricWrapper(label_accuracy, "accuracy")]


def check_distillable(loss="sparse_categorical_crossentropy", x=None, y=None) -> None:
    """Checks, before any training, that distillation can run on `loss` and data `x, y`.

    Raises:
        ValueError: `loss` is not the one `Distillation` keeps as its hard term.
        TypeError: labels missing (`y` None) and `x` not a `tf.data` dataset.
    """
    if y is None and x is not None:
        import tensorflow as tf

        if not isinstance(x, tf.data.Dataset):
            raise TypeError(
                "Distillation packs the teacher's outputs with the labels, which it can do "
                "for arrays `x, y` or a tf.data.Dataset of (inputs, labels). Received "
                f"{type(x).__name__} without labels. Pass arrays or a tf.data.Dataset, or "
                "turn distillation off (compress(..., distill=False))."
            )
    if loss != "sparse_categorical_crossentropy":
        raise ValueError(
            "Distillation trains on the labels with sparse categorical cross-entropy plus the "
            f"teacher's softened outputs; it cannot keep loss={loss!r}. Pass no teacher "
            "(distill=False) to train with that loss."
        )
