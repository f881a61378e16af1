"""Latency-steered structured pruning: gates, the latency penalty, the callback and strip."""

from fdi_keras.prune.callback import FastDeepIoTCallback
from fdi_keras.prune.expansion import expand_to_local_minima
from fdi_keras.prune.regularizer import LatencyRegularizer
from fdi_keras.prune.strip import strip
from fdi_keras.prune.wrap import latency_aware
from fdi_keras.prune.wrapper import LatencyAware, link_gate_groups

__all__ = [
    "FastDeepIoTCallback",
    "LatencyAware",
    "LatencyRegularizer",
    "expand_to_local_minima",
    "latency_aware",
    "link_gate_groups",
    "strip",
]
