"""Local response normalization (AlexNet / GoogLeNet) that converts to TFLite's LRN op."""

import keras

from fdi_keras.graph.keras_layers import hwc
from fdi_keras.graph.registry import LayerRule, register_layer
from fdi_keras.specs import LayerSpec


@keras.saving.register_keras_serializable(package="fdi_keras")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN: `x / (bias + alpha * sum_{|j-c|<=depth_radius} x_j^2) ** beta`.

    Uses `tf.nn.local_response_normalization`, so the TFLite converter emits its builtin
    LOCAL_RESPONSE_NORMALIZATION op (which XNNPack does not delegate: this is the non-tensor
    cost DeepRebirth removes). Channels-last inputs of rank 4.

    Example:
        >>> layer = LocalResponseNormalization(depth_radius=2, alpha=1e-4, beta=0.75)
        >>> layer(keras.ops.ones((1, 8, 8, 16))).shape
        TensorShape([1, 8, 8, 16])
    """

    def __init__(self, depth_radius=5, bias=1.0, alpha=1.0, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(
                "depth_radius must be a non-negative integer. "
                f"Received: depth_radius={depth_radius}"
            )
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                "LocalResponseNormalization runs only with the TensorFlow backend (it lowers to "
                "TFLite's LRN op); predicting its latency works with any backend. Received: "
                f"backend={keras.backend.backend()!r}"
            )
        import tensorflow as tf  # only here: `import fdi_keras` stays free of TensorFlow

        return tf.nn.local_response_normalization(
            inputs, self.depth_radius, self.bias, self.alpha, self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def _lrn_kernels(node) -> list[LayerSpec]:
    h, w, c = hwc(tuple(node.inputs[0].shape[1:]))
    return [LayerSpec("lrn", dict(h=h, w=w, c=c, radius=node.layer.depth_radius))]


# LRN normalizes each channel by its neighbours': its channels cannot be removed through it.
register_layer(LocalResponseNormalization, LayerRule(channels="fixed", kernels=_lrn_kernels))
