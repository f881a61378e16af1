"""DeepRebirth slimming: merge non-tensor layers and parallel branches into tensor layers.

`plan(model, tree)` lists the slimmable patterns (with predicted savings), `slim(model, x, y,
plan)` applies them and learns the merged layers layer by layer, `finetune` is the final
whole-network step (labels plus distillation from the teacher).
"""

from fdi_keras.rebirth import layerwise
from fdi_keras.rebirth.layerwise import finetune, outputs_probabilities
from fdi_keras.rebirth.patterns import Merge, Skip
from fdi_keras.rebirth.plan import Plan, plan
from fdi_keras.rebirth.slim import SlimResult, SlimStep, cannot_slow_down, safe_without_tree, slim
from fdi_keras.rebirth.transforms import apply_merges, folded_weights

__all__ = [
    "Merge",
    "Plan",
    "Skip",
    "SlimResult",
    "SlimStep",
    "apply_merges",
    "cannot_slow_down",
    "finetune",
    "folded_weights",
    "layerwise",
    "outputs_probabilities",
    "plan",
    "safe_without_tree",
    "slim",
]
