"""Keras layers that fdi_keras adds (Keras itself has none of these)."""

from fdi_keras.layers.lrn import LocalResponseNormalization

__all__ = ["LocalResponseNormalization"]
