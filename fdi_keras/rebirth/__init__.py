"""DeepRebirth slimming: merge non-tensor layers and parallel branches into tensor layers.

`plan(model, tree)` lists the slimmable patterns (with predicted savings), `slim(model, x, y,
plan)` applies them and learns the merged layers layer by layer, `finetune` is the final
whole-network step (labels plus distillation from the teacher).
"""

from fdi_keras.rebirth.layerwise import finetune
from fdi_keras.rebirth.patterns import Merge, Skip
from fdi_keras.rebirth.plan import Plan, plan
from fdi_keras.rebirth.slim import SlimResult, SlimStep, slim
from fdi_keras.rebirth.transforms import apply_merges, folded_weights

__all__ = [
    "Merge",
    "Plan",
    "Skip",
    "SlimResult",
    "SlimStep",
    "apply_merges",
    "finetune",
    "folded_weights",
    "plan",
    "slim",
]
