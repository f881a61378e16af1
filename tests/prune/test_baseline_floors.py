"""The benchmark's baselines keep the floor the gated method keeps (benchmarks/baselines.py):
a comparison in which one method may starve a layer that the others may not is not fair."""

from prune_helpers import lenet

from benchmarks.baselines import ChannelChooser
from fdi_keras import latency_aware
from fdi_keras.prune.expansion import width_floor
from fdi_keras.prune.regularizer import wrappers

FLOORS = [2, 5, 7]  # ceil(0.1 * (16, 48, 64))


def test_a_floor_counts_the_original_channels_and_never_exceeds_the_current_ones():
    wrapped = wrappers(latency_aware(lenet((16, 48, 64))))
    assert [width_floor([w]) for w in wrapped] == FLOORS
    assert [width_floor([w], channels=4 * w.channels) for w in wrapped] == [7, 20, 26]
    assert width_floor([wrapped[0]], channels=1000) == 16  # capped at the 16 it has


def test_a_gradual_knapsack_keeps_the_teachers_floors_in_every_round(staircase_tree):
    first = ChannelChooser(lenet((16, 48, 64)), staircase_tree)
    assert list(first.floor.values()) == FLOORS
    unreachable = first.predicted_ms(first.full) / 1000
    pruned = first.stripped(first.knapsack_to(unreachable))  # stops at the floors
    again = ChannelChooser(pruned, staircase_tree, original=first.channels)
    assert list(again.full.values()) == FLOORS
    assert list(again.knapsack_to(unreachable).values()) == FLOORS
    alone = ChannelChooser(pruned, staircase_tree)  # without the teacher's widths
    assert list(alone.knapsack_to(unreachable).values()) == [1, 1, 1]


class StairChooser(ChannelChooser):
    """A device whose time is exactly flat within every 16 channels."""

    def predicted_ms(self, widths):
        return sum(-(-w // 16) * 16 for w in widths.values()) / 1000


def test_the_knapsack_steps_over_a_stairs_flat_to_reach_its_target(staircase_tree):
    """Removing a sixteenth of a layer saves nothing on a flat stair; the knapsack looks
    further down each layer instead of stopping there."""
    chooser = StairChooser(lenet((16, 48, 64)), staircase_tree)
    target = chooser.predicted_ms(chooser.full) - 0.016  # one stair less
    widths = chooser.knapsack_to(target)
    assert chooser.predicted_ms(widths) <= target
    assert all(w >= f for w, f in zip(widths.values(), chooser.floor.values()))
