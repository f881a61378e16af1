"""LatencyAware: a Keras Wrapper that gives a layer one trainable gate per output channel/unit
(per channel multiplier for a DepthwiseConv2D)."""

from __future__ import annotations

import keras
import numpy as np
import scipy.special
from keras import ops

from fdi_keras.graph import rule_for
from fdi_keras.graph.keras_layers import CHANNEL_MIXING, activation_name
from fdi_keras.prune.gates import get_gate

L = keras.layers
RECURRENT = (L.GRU, L.LSTM)
# Activations f with f(g * z) = g * f(z) for every gate value g >= 0 (gates are in [0, 1]).
SCALE_EQUIVARIANT = ("linear", "relu")


def size_attribute(layer) -> str | None:
    """The config entry that counts what the gates of `layer` gate (strip shrinks it), from
    the layer registry: "filters", "units", "depth_multiplier"; None when it has no gates."""
    return rule_for(layer).gate


def gateable(layer) -> bool:
    """Whether `LatencyAware` can gate `layer`: its registry rule names a gated size, its
    channels are its own (not a grouped conv's), and a DepthwiseConv2D has multipliers to gate."""
    rule = rule_for(layer)
    if rule.gate is None or rule.channel_kind(layer) not in ("new", "depthwise"):
        return False
    return not isinstance(layer, L.DepthwiseConv2D) or layer.depth_multiplier > 1


def output_channels(layer) -> int:
    """Number of gates `layer` has: its output channels/units, a DepthwiseConv2D's multipliers."""
    return getattr(layer, size_attribute(layer))


def gate_blocks(layer) -> tuple[int, int]:
    """(number of gate blocks, index of the candidate block) in a GRU's [z, r, h] or an LSTM's
    [i, f, c, o] kernel columns."""
    return (3, 2) if isinstance(layer, L.GRU) else (4, 2)


@keras.saving.register_keras_serializable(package="fdi_keras")
class LatencyAware(L.Wrapper):
    """Gates the output channels (units) of a Dense/Conv/GRU/LSTM layer, or the channel
    multipliers of a DepthwiseConv2D, so training can remove them.

    The wrapped block is what the runtime fuses into one kernel: the layer, optionally the
    BatchNormalization and the activation layer that follow it; the gate multiplies the block's
    output, so a closed channel is exactly zero for every consumer and `strip` can remove it.
    During training each gate is sampled from its logit (`fdi_keras.prune.gates`); in inference
    gates are 0/1 and at least `min_channels` stay open. In training the layer adds
    `penalty_scale * channel_cost * expected_alive_channels` to the model's losses; both scalars
    are set every epoch by `FastDeepIoTCallback` from the timing tree. Training without the
    callback raises (TensorFlow backend), naming it.

    A `DepthwiseConv2D` with C input channels and depth multiplier M has C * M output channels
    (channel c * M + m is input channel c's m-th filter). Its channels follow their input's, so
    it has one gate per multiplier m, shared by all C input channels: stripped, the layer stays
    a uniform DepthwiseConv2D with fewer multipliers. With M = 1 there is nothing to gate.

    Args:
        layer: a `Dense`, `Conv1D`, `Conv2D`, `SeparableConv2D`, `GRU` or `LSTM` layer, or a
            `DepthwiseConv2D` with `depth_multiplier > 1`.
        norm: optional `BatchNormalization` applied to the layer's output.
        activation: optional activation layer (`ReLU`, `Activation`) applied after `norm`.
        gate: "hard_concrete" (default) or "straight_through".
        group: name shared by layers whose outputs are coupled (joined by `Add`): they get
            one gate (`link_gate_groups`, which `latency_aware` and the callback call).
        min_channels: fewest channels (a DepthwiseConv2D's: multipliers) that stay alive.
        init_logit: initial gate logit (open, with a margin).
        logit_scale: the logit is `logit_scale * parameter`, which multiplies the gates'
            effective learning rate (Adam's steps are scale-free) so that a few epochs can
            close a gate.
        seed: seed of the training-time gate noise.
        gate_owner_name: the name of the group member whose gate this one uses (set by
            `link_gate_groups`; kept in the config so that a reloaded member's own, unused
            gate variables do not train).

    Example:
        >>> conv, bn = keras.layers.Conv2D(32, 3), keras.layers.BatchNormalization()
        >>> wrapped = LatencyAware(conv, norm=bn, activation=keras.layers.ReLU())
        >>> y = wrapped(keras.ops.ones((1, 8, 8, 3)))
    """

    def __init__(
        self,
        layer,
        norm=None,
        activation=None,
        gate="hard_concrete",
        group=None,
        min_channels=1,
        init_logit=2.0,
        logit_scale=30.0,
        seed=None,
        gate_owner_name=None,
        **kwargs,
    ):
        if isinstance(layer, L.DepthwiseConv2D) and layer.depth_multiplier == 1:
            raise ValueError(
                "LatencyAware gates a DepthwiseConv2D's channel multiplier, and with "
                "depth_multiplier=1 there is none to remove: its channels are its input's, "
                "removed by gating the layer that produces them. Received: "
                f"layer={layer.name!r} with depth_multiplier=1"
            )
        if not gateable(layer):
            raise ValueError(
                "LatencyAware can wrap layers whose registry rule names a gated size (Dense, "
                "Conv1D, Conv2D without groups, SeparableConv2D, DepthwiseConv2D with "
                "depth_multiplier > 1, GRU, LSTM; see fdi_keras.graph.register_layer). "
                f"Received: layer={layer.name!r} of class {type(layer).__name__}"
            )
        for owner in (layer, activation):
            if owner is not None and activation_name(owner) in CHANNEL_MIXING:
                raise ValueError(
                    "LatencyAware cannot gate channels that a softmax normalizes together (a "
                    "closed channel would still count in the others' denominator). Received: "
                    f"{owner.name!r} with activation={owner.activation.__name__!r}"
                )
        if norm is not None and not isinstance(norm, L.BatchNormalization):
            raise ValueError(
                "norm must be a BatchNormalization layer or None. Received: "
                f"norm={type(norm).__name__}"
            )
        if activation is not None and not isinstance(activation, (L.ReLU, L.Activation)):
            raise ValueError(
                "activation must be a ReLU or Activation layer or None. Received: "
                f"activation={type(activation).__name__}"
            )
        if isinstance(layer, RECURRENT) and (norm is not None or activation is not None):
            raise ValueError(
                f"norm and activation cannot be fused into a recurrent layer. "
                f"Received: layer={layer.name!r} with norm={norm}, "
                f"activation={activation}"
            )
        if int(min_channels) != min_channels or min_channels < 1:
            raise ValueError(
                f"min_channels must be an integer >= 1. Received: min_channels={min_channels}"
            )
        super().__init__(layer, **kwargs)
        self.norm = norm
        self.activation_layer = activation
        self.gate = get_gate(gate).name
        self.group = group
        self.min_channels = int(min_channels)
        self.init_logit = float(init_logit)
        self.logit_scale = float(logit_scale)
        self.seed = seed
        self.gate_owner_name = gate_owner_name
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.channels = output_channels(layer)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        shape = self.layer.compute_output_shape(input_shape)
        for sub in (self.norm, self.activation_layer):
            if sub is not None and not sub.built:
                sub.build(shape)
        n = self.channels
        self._own_gate_parameters = self.add_weight(
            shape=(n,),
            initializer=keras.initializers.Constant(self.init_logit / self.logit_scale),
            trainable=self.gate_owner_name is None,
            name="gate_parameters",
        )
        self._own_alive = self.add_weight(
            shape=(n,), initializer="ones", trainable=False, name="alive"
        )
        self.channel_cost = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="channel_cost"
        )
        self.penalty_scale = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="penalty_scale"
        )
        self.controlled = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="controlled"
        )
        self._own_noise = self.add_weight(
            shape=(n,), initializer=keras.initializers.Constant(0.5), trainable=False, name="noise"
        )
        self.built = True

    def gate_owner(self) -> LatencyAware:
        """The wrapper whose gate variables this one uses: itself, or its group's first member
        (`share_gates_with`)."""
        link = self.__dict__.get("_gate_owner_link")
        return self if link is None else link()

    @property
    def gate_parameters(self):
        """The trainable gate parameters (the group's, when shared)."""
        return self.gate_owner()._own_gate_parameters

    @property
    def alive(self):
        """1 for a channel still in the model, 0 for one removed for good (the group's)."""
        return self.gate_owner()._own_alive

    def share_gates_with(self, owner: LatencyAware) -> None:
        """Makes this wrapper use `owner`'s gate variables and training noise: one gate per
        group, so the members of a group cannot drift apart. Its own gate variables take the
        owner's values (what is saved) and stop training."""
        if owner is self or self.gate_owner() is owner:
            return
        if owner.channels != self.channels or owner.gate != self.gate:
            raise ValueError(
                f"{self.name!r} cannot share the gates of {owner.name!r}: a group's members need "
                "the same number of channels and gate formulation. Received: "
                f"{self.channels} {self.gate!r} and {owner.channels} {owner.gate!r}"
            )
        self._own_gate_parameters.assign(owner._own_gate_parameters)
        self._own_alive.assign(owner._own_alive)
        self._own_gate_parameters.trainable = False
        self.gate_owner_name = owner.name
        # A function, not an attribute holding the layer: neither Keras's tracking nor its
        # saving walks into it (the owner is saved where it is in the model).
        object.__setattr__(self, "_gate_owner_link", lambda: owner)

    @property
    def gate_logits(self):
        """The gates' logits (a tensor); `set_gate_logits` writes them."""
        return self.gate_parameters * self.logit_scale

    def set_gate_logits(self, logits) -> None:
        self.gate_parameters.assign(np.asarray(logits, "float32") / self.logit_scale)

    def host_logits(self) -> np.ndarray:
        """`gate_logits` in NumPy. The callback reads the gates between training steps a few
        dozen times an epoch; there an eager op costs more than the arithmetic."""
        return keras.ops.convert_to_numpy(self.gate_parameters) * self.logit_scale

    def expected_alive(self):
        """Differentiable expected number of alive channels."""
        return ops.sum(get_gate(self.gate).open_probability(self.gate_logits) * self.alive)

    def expected_alive_now(self, alive=None) -> float:
        """`expected_alive` computed in NumPy, for the host (the two agree: tested); `alive`:
        the alive mask, when the caller holds it (saves reading the variable)."""
        offset = get_gate(self.gate).open_offset
        alive = keras.ops.convert_to_numpy(self.alive) if alive is None else alive
        return float(np.sum(scipy.special.expit(self.host_logits() - offset) * alive))

    def inference_mask(self):
        """The 0/1 mask used in inference: open gates of alive channels, at least min_channels."""
        is_open = get_gate(self.gate).is_open(self.gate_logits) * self.alive
        ranked = ops.where(self.alive > 0, self.gate_logits, -1e9 * ops.ones_like(self.gate_logits))
        kth = ops.top_k(ranked, self.min_channels)[0][-1]
        fallback = ops.cast(ranked >= kth, "float32")
        return ops.where(ops.sum(is_open) >= self.min_channels, is_open, fallback)

    def call(self, inputs, training=None):
        if training:
            self._check_controlled()
            gate = self.training_gate()
            self.add_loss(self.penalty_scale * self.channel_cost * self.expected_alive())
        else:
            gate = self.inference_mask()
        if isinstance(self.layer, RECURRENT):
            return self._gated_recurrent(inputs, gate, training)
        folded = self.folded_weights(self.compute_output_shape(inputs.shape))
        if folded:  # the gate scales weights, not the (much larger) output
            return self._with_scaled_weights(
                [(v, self._per_entry(gate, v)) for v in folded],
                lambda: self._block(inputs, training),
                training,
            )
        outputs = self._block(inputs, training)
        return outputs * ops.cast(self._per_entry(gate, outputs), outputs.dtype)

    def _block(self, inputs, training):
        outputs = self.layer(inputs)
        if self.norm is not None:
            outputs = self.norm(outputs, training=training)
        if self.activation_layer is not None:
            outputs = self.activation_layer(outputs)
        return outputs

    def _per_entry(self, gate, tensor):
        """`gate` laid along `tensor`'s last axis: a DepthwiseConv2D's C * M channels (channel
        c * M + m is gate m's, for every c) repeat it C times."""
        repeats = tensor.shape[-1] // self.channels
        return gate if repeats == 1 else ops.tile(gate, [repeats])

    def folded_weights(self, output_shape=None) -> list:
        """The weights the gate scales instead of the block's output, where that is exact for
        every gate value g >= 0 and cheaper: the BatchNormalization's gamma and beta
        (BN(z) * g), or else the layer's kernel and bias (its output is linear in them), when
        what follows them is scale-equivariant (f(g * z) = g * f(z): linear, ReLU).

        Scaling a channel's weights instead of its activations saves work when it has fewer
        weights than positions: always for BN's two, for a kernel when its fan-in is at most
        the output's positions per example (`output_shape`; a convolution on a large feature
        map, not a Dense layer). Empty otherwise (the output is multiplied then)."""
        after = [self.activation_layer] + ([] if self.norm is not None else [self.layer])
        if not all(a is None or activation_name(a) in SCALE_EQUIVARIANT for a in after):
            return []
        if self.norm is not None:
            norm = self.norm
            return [v for v in (norm.gamma, norm.beta) if v is not None] if norm.scale else []
        if isinstance(self.layer, L.SeparableConv2D):
            kernel = self.layer.pointwise_kernel
        else:
            kernel = self.layer.kernel
        positions = int(np.prod(output_shape[1:-1])) if output_shape is not None else 1
        if int(np.prod(kernel.shape)) // kernel.shape[-1] > positions:
            return []
        return [kernel] + ([self.layer.bias] if self.layer.use_bias else [])

    def training_gate(self):
        """This step's sampled gates. The group's owner draws the noise and keeps it for the
        step; the other members (called after it: it comes first in the graph) reuse it."""
        formulation = get_gate(self.gate)
        owner = self.gate_owner()
        if owner is self:
            noise = formulation.sample_noise(ops.shape(self.gate_logits), self.seed_generator)
            if noise is not None:
                self._own_noise.assign(noise)
        else:
            noise = owner._own_noise if formulation.uses_noise else None
        return formulation.train_gate(self.gate_logits, noise) * self.alive

    def save_own_variables(self, store):
        """Saves the group's gate values (this wrapper's own, when it does not share them)."""
        owner = self.gate_owner()
        values = [owner._own_gate_parameters, owner._own_alive, *self._own_state()[2:]]
        for i, value in enumerate(values):
            store[str(i)] = keras.ops.convert_to_numpy(value)

    def _own_state(self) -> list:
        return [
            self._own_gate_parameters,
            self._own_alive,
            self.channel_cost,
            self.penalty_scale,
            self.controlled,
            self._own_noise,
        ]

    def _check_controlled(self):
        """Refuses to train without `FastDeepIoTCallback` (as tfmot's wrappers refuse without
        theirs): the penalty's cost and strength would be stale."""
        message = (
            f"{self.name!r}: a LatencyAware model trains only with fdi_keras."
            "FastDeepIoTCallback(tree, ...) in fit's callbacks (in a custom loop, call "
            "callback.set_model(model) and callback.on_train_begin() first)."
        )
        if keras.backend.backend() != "tensorflow":
            return  # no graph-mode assertion in keras.ops; the callback docs say it
        import tensorflow as tf

        tf.debugging.assert_equal(self.controlled, 1.0, message=message)

    def load_own_variables(self, store):
        """Loads what `save_own_variables` saved; a loaded model is not under a callback's
        control until one starts training it (and links its groups again)."""
        state = self._own_state()
        if len(store.keys()) != len(state):
            raise ValueError(
                f"{self.name!r} expected {len(state)} saved variables, found "
                f"{len(store.keys())}: the file was saved by another version of fdi_keras."
            )
        for i, variable in enumerate(state):
            variable.assign(store[str(i)])
        self.controlled.assign(0.0)

    def _gated_recurrent(self, inputs, gate, training):
        """Runs the GRU/LSTM with its candidate columns scaled by the gate."""
        cell = self.layer.cell
        blocks, candidate = gate_blocks(self.layer)
        ones = ops.ones_like(gate)
        columns = ops.concatenate([gate if b == candidate else ones for b in range(blocks)])
        variables = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if cell.use_bias else [])
        return self._with_scaled_weights(
            [(v, columns) for v in variables],
            lambda: self.layer(inputs, training=training),
            training,
        )

    def _with_scaled_weights(self, scaled, run, training):
        """`run()` with each (weight, scale) of `scaled` multiplied along its last axis, read
        through a `keras.StatelessScope` (the weights themselves are untouched, gradients reach
        them and the gate).

        The scope also swallows the sublayers' state updates (BatchNormalization's moving
        statistics, the advance of a recurrent layer's dropout seed generators): written back
        after the call, so that training updates them as it would without the gate (and a
        GRU draws fresh dropout masks every batch instead of the same ones forever)."""
        layers = [x for x in (self.layer, self.norm) if x is not None]
        mapping = [(w, ops.convert_to_tensor(w) * ops.cast(g, w.dtype)) for w, g in scaled]
        state = [v for x in layers for v in x.non_trainable_variables] if training else []
        mapping += [(v, ops.convert_to_tensor(v)) for v in state]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = run()
        for v in state:
            v.assign(scope.get_current_value(v))
        return outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def mask(self) -> np.ndarray:
        """Boolean alive mask (host side) of the gates: output channels, or multipliers.

        `inference_mask` computed in NumPy: FastDeepIoT's epoch step asks for every gate's mask
        a few dozen times, and a handful of eager ops per call cost more than the step's
        arithmetic. The two agree (tests/prune/test_wrapper.py)."""
        logits = self.host_logits()
        alive = keras.ops.convert_to_numpy(self.alive) > 0
        is_open = (logits > get_gate(self.gate).threshold) & alive
        if is_open.sum() >= self.min_channels:
            return is_open
        ranked = np.where(alive, logits, -1e9)
        return ranked >= np.sort(ranked)[-self.min_channels]

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            **super().get_config(),
            "norm": serialize(self.norm) if self.norm is not None else None,
            "activation": serialize(self.activation_layer)
            if self.activation_layer is not None
            else None,
            "gate": self.gate,
            "group": self.group,
            "min_channels": self.min_channels,
            "init_logit": self.init_logit,
            "logit_scale": self.logit_scale,
            "seed": self.seed,
            "gate_owner_name": self.gate_owner_name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("norm", "activation"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(
                    config[key], custom_objects=custom_objects
                )
        return super().from_config(config, custom_objects)


def link_gate_groups(layers) -> None:
    """Gives the `LatencyAware` wrappers among `layers` that name the same `group` one shared
    gate: the first of them (in graph order) owns it, the others use it."""
    owners: dict[str, LatencyAware] = {}
    for layer in layers:
        if isinstance(layer, LatencyAware) and layer.group is not None:
            if layer.gate_owner_name is None:  # an owner (a reloaded follower names its own)
                owners.setdefault(layer.group, layer)
    for layer in layers:
        if isinstance(layer, LatencyAware) and layer.group is not None:
            layer.share_gates_with(owners.setdefault(layer.group, layer))
