"""Greedy growth and cost-complexity pruning of one kind's tree (FastDeepIoT's tree regression).

A node splits its rows with a *range* condition (`var <= t`, also on the channels in a
channel dim's last tile, `cout_in_last_32 <= 16`) or an *integer-multiple* condition
(`var % k == 0`); the split chosen is the one whose two non-negative linear leaves have the
smallest relative squared error. The tree is stored as flat parallel lists, like
scikit-learn's, which is also its JSON form.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fdi_keras.features import is_last_tile
from fdi_keras.timing.leaf import fit_nonnegative, relative_sse

MULTIPLES = (2, 4, 8, 16, 32, 64)
LOG_VARIABLES = ("log2_flops", "log2_bytes")


def is_indicator(name: str) -> bool:
    """0/1 variables of categorical attributes are named like `op=max`."""
    return "=" in name


@dataclasses.dataclass
class FlatTree:
    """Parallel lists; node i is a leaf when left[i] == -1. `weights[i]` is node i's model."""

    variable: list = dataclasses.field(default_factory=list)
    condition: list = dataclasses.field(default_factory=list)  # "le" or "mod"
    value: list = dataclasses.field(default_factory=list)
    left: list = dataclasses.field(default_factory=list)
    right: list = dataclasses.field(default_factory=list)
    weights: list = dataclasses.field(default_factory=list)
    samples: list = dataclasses.field(default_factory=list)

    def add_leaf(self, weights, samples) -> int:
        for lst, v in (
            (self.variable, None),
            (self.condition, None),
            (self.value, None),
            (self.left, -1),
            (self.right, -1),
        ):
            lst.append(v)
        self.weights.append([float(w) for w in weights])
        self.samples.append(int(samples))
        return len(self.left) - 1

    def goes_left(self, node: int, variables: dict) -> bool:
        v = variables[self.variable[node]]
        if self.condition[node] == "le":
            return v <= self.value[node]
        return int(v) % int(self.value[node]) == 0

    def leaf_of(self, variables: dict) -> int:
        node = 0
        while self.left[node] != -1:
            node = self.left[node] if self.goes_left(node, variables) else self.right[node]
        return node

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mask(values, condition, value):
    return values <= value if condition == "le" else (values.astype(np.int64) % value) == 0


def _candidates(names, columns, min_leaf):
    for name, values in zip(names, columns):
        uniq = np.unique(values)
        if len(uniq) > 1:
            qs = np.unique(np.quantile(values, np.linspace(0.05, 0.95, 19), method="lower"))
            for t in qs:
                yield name, values, "le", float(t)
        if name not in LOG_VARIABLES and not is_indicator(name) and not is_last_tile(name):
            for k in MULTIPLES:
                if uniq.max() >= k:
                    yield name, values, "mod", k


def _best_split(x, y, names, columns, min_leaf, intercept_max=np.inf):
    best = None
    for name, values, condition, value in _candidates(names, columns, min_leaf):
        m = _mask(values, condition, value)
        n_left = int(m.sum())
        if n_left < min_leaf or len(y) - n_left < min_leaf:
            continue
        wl = fit_nonnegative(x[m], y[m], intercept_max)
        wr = fit_nonnegative(x[~m], y[~m], intercept_max)
        sse = relative_sse(x[m], y[m], wl) + relative_sse(x[~m], y[~m], wr)
        if best is None or sse < best[0]:
            best = (sse, name, condition, value, m)
    return best


def grow(
    x,
    y,
    names,
    columns,
    max_depth,
    min_samples_leaf,
    min_gain,
    intercept_max=np.inf,
    first_split=None,
) -> FlatTree:
    """Grows a tree top-down; a node splits only if the split cuts its error by `min_gain`.
    Every leaf's intercept is at most `intercept_max` (`fit_nonnegative`). `first_split`, a
    (variable, condition, value) the runtime is known to branch on, splits the root whenever
    both sides keep `min_samples_leaf` rows, whatever its gain."""
    tree = FlatTree()

    def forced(idx):
        name, condition, value = first_split
        m = _mask(columns[names.index(name)][idx], condition, value)
        if min(m.sum(), (~m).sum()) < min_samples_leaf:
            return None
        return None, name, condition, value, m

    def build(idx, depth):
        w = fit_nonnegative(x[idx], y[idx], intercept_max)
        node = tree.add_leaf(w, len(idx))
        sse = relative_sse(x[idx], y[idx], w)
        if depth >= max_depth or len(idx) < 2 * min_samples_leaf or sse <= 1e-12:
            return node
        best = forced(idx) if depth == 0 and first_split is not None else None
        if best is None:
            best = _best_split(
                x[idx], y[idx], names, [c[idx] for c in columns], min_samples_leaf, intercept_max
            )
            if best is None or best[0] > sse * (1 - min_gain):
                return node
        _, name, condition, value, m = best
        tree.variable[node], tree.condition[node], tree.value[node] = name, condition, value
        tree.left[node] = build(idx[m], depth + 1)
        tree.right[node] = build(idx[~m], depth + 1)
        return node

    build(np.arange(len(y)), 0)
    return tree


def _paths(tree: FlatTree, variables: list[dict]) -> list[list[int]]:
    """Each row's nodes from the root to its leaf."""
    paths = []
    for v in variables:
        node, path = 0, [0]
        while tree.left[node] != -1:
            node = tree.left[node] if tree.goes_left(node, v) else tree.right[node]
            path.append(node)
        paths.append(path)
    return paths


def node_errors(tree: FlatTree, x, y, variables: list[dict]) -> np.ndarray:
    """Each node's relative squared error on the rows that reach it, with its own linear
    model: a leaf's error, or what an inner node's would be if it were a leaf."""
    routes = [[] for _ in tree.left]
    for i, path in enumerate(_paths(tree, variables)):
        for node in path:
            routes[node].append(i)
    return np.array(
        [
            relative_sse(x[idx], y[idx], np.array(tree.weights[node])) if idx else 0.0
            for node, idx in enumerate(routes)
        ]
    )


def cost_complexity_cut(tree: FlatTree, errors, leaf_penalty: float) -> np.ndarray:
    """The inner nodes that become leaves in the subtree of least error + `leaf_penalty` per
    leaf (minimal cost-complexity pruning, Breiman et al. 1984): a boolean per node.
    `errors`: `node_errors` on the rows the tree was grown on."""
    cut = np.zeros(len(tree.left), dtype=bool)

    def cost(node):
        as_leaf = errors[node] + leaf_penalty
        if tree.left[node] == -1:
            return as_leaf
        below = cost(tree.left[node]) + cost(tree.right[node])
        if as_leaf <= below:
            cut[node] = True
            return as_leaf
        return below

    cost(0)
    return cut


def cut_leaves(tree: FlatTree, cuts, variables: list[dict]) -> list[list[int]]:
    """For each cut of `cuts` (`cost_complexity_cut`), the node each row ends at in the tree
    pruned there."""
    paths = _paths(tree, variables)
    return [[next(n for n in path if cut[n] or n == path[-1]) for path in paths] for cut in cuts]


def prune_at(tree: FlatTree, cut) -> FlatTree:
    """The tree with every node of `cut` made a leaf (a compact copy)."""
    pruned = dataclasses.replace(tree, left=list(tree.left), right=list(tree.right))
    for node in np.flatnonzero(cut):
        pruned.left[node] = pruned.right[node] = -1
    return compact(pruned)


def compact(tree: FlatTree) -> FlatTree:
    """Drops nodes that pruning made unreachable, renumbering the rest."""
    out = FlatTree()

    def copy(node):
        new = out.add_leaf(tree.weights[node], tree.samples[node])
        if tree.left[node] != -1:
            out.variable[new] = tree.variable[node]
            out.condition[new] = tree.condition[node]
            out.value[new] = tree.value[node]
            out.left[new] = copy(tree.left[node])
            out.right[new] = copy(tree.right[node])
        return new

    copy(0)
    return out
