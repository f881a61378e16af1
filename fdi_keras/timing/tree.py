"""TimingTree: one interpretable execution-time tree per kernel kind (FastDeepIoT, extended).

Beyond the paper: each kind learns the tile size of its staircase (channel dims rounded up
to a multiple before computing FLOPs and parameter bytes), and a convolution or Dense the tile
of the input channels it reduces over, chosen by cross-validation.

A kernel is predicted by the tree of the kernel the runtime actually runs (`timed_as`): a
Dense layer over more than one row (a Dense on a sequence or on a feature map, as ConvNeXt's
pointwise layers are) is the same GEMM as a 1x1 convolution over as many pixels, so the
conv2d tree, fitted on hundreds of GEMM shapes, predicts it; the dense tree, 85% of whose
rows are one-row products (matrix-vector, bound by reading the weights), predicts those.
Every row is still fitted into its own kind's tree: moving the dense rows of m > 1 into the
conv2d tree's fit made both worse on the independent held-out set (conv2d MAPE 4.5% -> 5.4%,
dense 8.1% -> 9.9%, one trial on the AMD VM).
"""

from __future__ import annotations

import functools
import itertools
import json
import time
import warnings
from collections.abc import Iterable

import numpy as np

from fdi_keras.atomic import atomic_write_bytes
from fdi_keras.errors import MissingKindError, TreeFormatError
from fdi_keras.features import (
    CACHE_KNOTS,
    FEATURES,
    IN_TILE_KINDS,
    compute_features,
    is_last_tile,
    split_variables,
)
from fdi_keras.specs import NETWORK, SWEEP_DIMS, LayerSpec
from fdi_keras.timing import growth
from fdi_keras.timing.composition import MIN_NETWORKS, STATISTICS, Composition
from fdi_keras.timing.leaf import design_matrix, relative_sse

FORMAT = "fdi_keras.timing_tree"
# 2: leaves gained `steps`; 3: the composition term; 4: its memory curve; 5: leaves gained
# `copies` (a tree of 2-4 reads with a zero weight for it: it predicts what it did); 6: a
# concatenation XNNPack does not take counts its runs in `steps` only (a tree of 2-5 reads
# with its concat leaves' `copies` weight added to `steps`: it predicts what it did); 7: the
# composition term's `unhidden` share (0 in a tree of 3-6: the roofline it predicted with);
# 8: a convolution with a window counts its input runs in `copies` (0 before: a tree of 2-7
# has a zero weight for it in every conv2d leaf and predicts what it did; an older fdi_keras
# must refuse a tree of 8, which it would predict without that term); 9: splits on the channels
# in a dim's last tile (`cout_in_last_32`, `fdi_keras.features.LAST_TILE_DIMS`), which an
# older fdi_keras cannot evaluate; 10: a kind's `in_tile`, the input channels' tile (absent: 1),
# which an older fdi_keras would ignore; 11: leaves gained the working set's bytes past each
# cache knot (`fdi_keras.features.CACHE_KNOTS`; a tree of 2-10 weighs them 0: it predicts what
# it did)
FORMAT_VERSION = 11
# A format 2-4 leaf's weights: the intercept and the features before `copies`.
LEAF_WEIGHTS_BEFORE_COPIES = 1 + FEATURES.index("copies")
# A format 5-10 leaf's weights: the intercept and the features before the cache knots'.
LEAF_WEIGHTS_BEFORE_CACHE = 1 + FEATURES.index(next(iter(CACHE_KNOTS)))
TILES = (1, 4, 8, 16, 32)
# Candidate tiles of the input channels of `fdi_keras.features.IN_TILE_KINDS`: XNNPack packs an
# int8 GEMM's depth in runs of 4 or 8 (by the CPU), a float32 one in runs of 1.
IN_TILES = (1, 4, 8)
# How much splits on the channels in a dim's last tile (`fdi_keras.features.LAST_TILE_DIMS`)
# must cut a kind's cross-validated MAPE for its tree to keep them: 0.2 points.
LAST_TILE_GAIN = 0.002
# Where XNNPack runs a kind through different code: the root of its tree splits there. A
# depthwise conv with a depth multiplier above 1 ran at a median 3.0 (int8) and 4.3 (float32)
# G multiply-accumulates per second against 17.7 and 13.3 with multiplier 1 (kernels of over 1e6
# on the AMD EPYC VM, 2026-12-05); left to the greedy splits, one int8 leaf mixed the two and
# predicted MobileNetV2's 113x113x96 stride-2 kernel at 1.6 ms.
FIRST_SPLITS = {"depthwise_conv2d": ("mult", "le", 1)}
# Leaf penalties tried by the cost-complexity pruning, in squared relative error per leaf and
# per row the tree was grown on: 0 keeps every split; 1e-4 asks a split to cut the mean
# squared relative error by a hundredth of a 10% error's; 0.1 leaves about the root.
LEAF_PENALTIES = (0.0, *np.geomspace(1e-7, 1e-1, 25))


def timed_as(spec: LayerSpec) -> LayerSpec:
    """The kernel whose tree times `spec`: `spec` itself, except a Dense over m > 1 rows,
    which is timed as the 1x1 convolution over an h x w = m map (h the divisor of m nearest
    below its square root, as a feature map's rows are). LiteRT/XNNPack run both as one
    GEMM: on this project's AMD VM, m=64, 96->192 took 22.92 us as a Dense and 22.88 us as
    the convolution (int8: 7.87 / 7.88 us), where the dense tree, fitted mostly on m=1
    rows, predicted 5.75 us."""
    if spec.kind != "dense" or spec.dims["m"] == 1:
        return spec
    m = spec.dims["m"]
    h = max(d for d in range(1, int(np.sqrt(m)) + 1) if m % d == 0)
    dims = dict(h=h, w=m // h, cin=spec.dims["cin"], cout=spec.dims["cout"], kh=1, kw=1, sh=1, sw=1)
    return LayerSpec("conv2d", dims, {"padding": "same"}, spec.dtype, spec.threads)


def _drift_factors(rows, reference, drift_correction):
    """Per row, the factor that divides out drift of the calibration kernel timed with it,
    relative to `reference` (the median calibration time over the whole store)."""
    calibration = np.array([r.get("calibration_us") or np.nan for r in rows], dtype=float)
    ok = drift_correction & np.isfinite(calibration) & (calibration > 0) & np.isfinite(reference)
    return np.where(ok, reference / np.where(ok, calibration, 1.0), 1.0)


def calibration_reference(rows) -> float:
    """The median calibration-kernel time (us) over profile `rows` (NaN without one): what
    drift correction divides by, and what a later run's calibration time is compared with."""
    calibration = np.array([r.get("calibration_us") or np.nan for r in rows], dtype=float)
    return float(np.nanmedian(calibration)) if np.isfinite(calibration).any() else np.nan


def rows_to_dataset(
    rows: Iterable[dict], drift_correction: bool = True, reference: float | None = None
):
    """Profile rows -> {kind: (specs, times_us)} of the kernel kinds, dividing out drift of the
    calibration kernel. Whole-network rows are left out (see `network_rows`).

    Args:
        rows: profile rows.
        drift_correction: divide each row by its batch's calibration-kernel time.
        reference: the calibration time (us) the times are expressed at; by default the
            median over `rows`. Rows of another run compared with a tree fitted on a profile
            need that profile's (`calibration_reference(profile_rows)`): with their own median
            they would carry the machine's speed during that run.
    """
    rows = [r for r in rows if r.get("status") == "ok"]
    reference = calibration_reference(rows) if reference is None else reference
    rows = [r for r in rows if r["spec"]["kind"] != NETWORK]
    data: dict[str, tuple[list, list]] = {}
    for row, factor in zip(rows, _drift_factors(rows, reference, drift_correction)):
        specs, times = data.setdefault(row["spec"]["kind"], ([], []))
        specs.append(LayerSpec.from_dict(row["spec"]))
        times.append(row["time_us"] * factor)
    return {k: (s, np.array(t)) for k, (s, t) in data.items()}


def network_rows(
    rows: Iterable[dict], drift_correction: bool = True, reference: float | None = None
):
    """The whole-network rows: (specs, {statistic: times_us}), drift divided out relative to
    `reference` as in `rows_to_dataset`."""
    rows = [r for r in rows if r.get("status") == "ok"]
    reference = calibration_reference(rows) if reference is None else reference
    rows = [r for r in rows if r["spec"]["kind"] == NETWORK]
    factors = _drift_factors(rows, reference, drift_correction)
    specs = [LayerSpec.from_dict(r["spec"]) for r in rows]
    times = {
        "min": np.array([r["time_us"] for r in rows]) * factors,
        "median": np.array([r["median_us"] for r in rows]) * factors,
    }
    return specs, times


def sweep_groups(specs: list[LayerSpec]) -> np.ndarray:
    """A group id per spec: specs equal but for their kind's channel dimension (one sweep of
    the profiler's sampler) share one, so that a validation split keeps a sweep on one side
    instead of validating on near-copies of fitted rows."""
    ids: dict[str, int] = {}
    out = []
    for s in specs:
        rest = {k: v for k, v in s.dims.items() if k != SWEEP_DIMS.get(s.kind)}
        out.append(ids.setdefault(json.dumps([s.kind, rest, s.attrs], sort_keys=True), len(ids)))
    return np.array(out)


def held_out_sweeps(specs: list[LayerSpec], fraction: float, rng) -> np.ndarray:
    """A boolean mask holding out whole sweeps (`sweep_groups`), drawn in `rng`'s random
    order until about `fraction` of the rows are held out."""
    groups = sweep_groups(specs)
    order = rng.permutation(groups.max() + 1)
    cut = np.searchsorted(np.cumsum(np.bincount(groups)[order]), fraction * len(specs)) + 1
    return np.isin(groups, order[:cut])


def _check_statistic(statistic):
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}. Received: {statistic!r}")


def _matrices(specs, tile, in_tile):
    return design_matrix([compute_features(s, tile, in_tile) for s in specs])


class TimingTree:
    """Per-kind trees of range / integer-multiple splits with non-negative linear leaves.

    Args:
        max_depth: depth limit of each kind's tree.
        min_samples_leaf: fewest training rows in a leaf.
        min_gain: a split must cut its node's relative squared error by this fraction.
        validation_fraction: share of rows each cross-validation fold holds out (1 / the
            number of folds) to choose the tile, the pruning and whether last-tile splits
            earn their place; 0: no pruning (and every kind offered last-tile splits).
        tiles: candidate tile sizes of the channel dimension.
        in_tiles: candidate tile sizes of the input channels of a convolution or a Dense
            (`fdi_keras.features.IN_TILE_KINDS`; other kinds use 1), the first the one the
            other choices are made with, the rest tried after.
        seed: seed of the cross-validation folds.

    Example:
        >>> tree = TimingTree().fit(specs, times_us)          # or .fit_rows(profile rows)
        >>> tree.predict([LayerSpec("dense", dict(m=1, cin=256, cout=130))])
        >>> print(tree.explain("dense"))
    """

    def __init__(
        self,
        max_depth=7,
        min_samples_leaf=20,
        min_gain=0.01,
        validation_fraction=0.2,
        tiles=TILES,
        in_tiles=IN_TILES,
        seed=0,
    ):
        if max_depth < 0 or min_samples_leaf < 1:
            raise ValueError(
                "max_depth must be >= 0 and min_samples_leaf >= 1. "
                f"Received: max_depth={max_depth}, min_samples_leaf={min_samples_leaf}"
            )
        if not 0 <= validation_fraction < 1:
            raise ValueError(
                f"validation_fraction must be in [0, 1). Received: {validation_fraction}"
            )
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.min_gain = min_gain
        self.validation_fraction = validation_fraction
        if not tiles or not in_tiles or min(*tiles, *in_tiles) < 1:
            raise ValueError(
                "tiles and in_tiles must be non-empty sequences of positive integers. "
                f"Received: tiles={tiles}, in_tiles={in_tiles}"
            )
        self.tiles = tuple(tiles)
        self.in_tiles = tuple(in_tiles)
        self.seed = seed
        self.kinds_: dict[str, dict] = {}
        self.metadata_: dict = {}
        self._predicted_us: dict[LayerSpec, float] = {}  # predict_one's, per kernel
        self.overhead_us_ = 0.0
        self.composition_: dict[str, Composition] = {}

    # ---- fitting -------------------------------------------------------------------------
    def fit_rows(
        self, rows: list[dict], drift_correction: bool = True, network_kernels=None
    ) -> TimingTree:
        """Fits on profile rows (`profile.jsonl`), taking device/runtime metadata from them.

        Args:
            rows: profile rows; `network` rows (random networks timed whole) fit the
                composition term when `network_kernels` is given.
            drift_correction: divide each row by its batch's calibration-kernel time.
            network_kernels: `network spec -> its kernels' LayerSpecs`
                (`fdi_keras.profiling.networks.network_kernels`; `fit_profile` passes it).
        """
        ok = [r for r in rows if r.get("status") == "ok"]
        if not ok:
            raise ValueError(
                "No successfully timed rows to fit on. Received: "
                f"{len(rows)} rows, all failed or empty."
            )
        first = ok[0]
        metadata = {
            "device": first.get("device", {}),
            "threads": first.get("threads"),
            "dtype": first.get("dtype"),
            "rows": len(ok),
        }
        self._fit_dataset(rows_to_dataset(ok, drift_correction), metadata)
        specs, times = network_rows(ok, drift_correction)
        if specs and network_kernels is None:
            warnings.warn(
                f"{len(specs)} random networks timed whole are left out: without "
                "network_kernels no composition term is fitted. Use "
                "fdi_keras.profiling.fitting.fit_profile(rows), or pass "
                "network_kernels=fdi_keras.profiling.networks.network_kernels.",
                stacklevel=2,
            )
        elif specs:
            self.fit_composition(specs, times, network_kernels)
        return self

    def fit_composition(self, specs, times_us: dict, network_kernels) -> TimingTree:
        """Fits the whole-model correction (`fdi_keras.timing.composition`) on networks
        measured whole: `times_us` maps each statistic to their times. Networks with a kernel
        kind the tree lacks are skipped; with fewer than MIN_NETWORKS left, no term is fitted
        (a warning says why) and predictions stay sums of single-kernel times."""
        networks, keep = [], []
        for i, spec in enumerate(specs):
            kernels = network_kernels(spec)
            if all(timed_as(k).kind in self.kinds_ for k in kernels):
                networks.append([(self.predict_one(k), k) for k in kernels])
                keep.append(i)
        self.composition_ = {}
        if len(networks) < MIN_NETWORKS:
            warnings.warn(
                f"No composition term: {len(networks)} of {len(specs)} networks timed whole "
                f"have every kernel kind in the tree, and the fit needs {MIN_NETWORKS}. "
                "Profile more with --kinds=network and every kind of their kernels.",
                stacklevel=2,
            )
            return self
        # What a kernel saves inside a model is bounded by the fastest kernel's minimum time
        # (fit() keeps half of it as overhead_us_; 0: unknown, no such bound). The median's
        # term keeps only the -2 us floor: it maps the trees' minimum times to median ones,
        # whose fixed cost per invoke is larger.
        fastest = 2 * self.overhead_us_ if self.overhead_us_ > 0 else None
        fastest_kernel_us = {"min": fastest, "median": None}
        self.composition_ = {
            statistic: Composition.fit(
                statistic,
                networks,
                np.asarray(times_us[statistic])[keep],
                fastest_kernel_us[statistic],
            )
            for statistic in STATISTICS
        }
        return self

    def fit(self, specs: list[LayerSpec], times_us, metadata: dict | None = None) -> TimingTree:
        """Fits on specs and their measured times in microseconds."""
        times_us = np.asarray(times_us, dtype=float)
        if len(specs) != len(times_us) or not len(specs):
            raise ValueError(
                f"specs and times_us must be non-empty and of equal length. "
                f"Received: {len(specs)} specs, {len(times_us)} times"
            )
        if (times_us <= 0).any():
            raise ValueError(
                f"Times must be positive microseconds. Received: min(times_us)={times_us.min()}"
            )
        if any(s.kind == NETWORK for s in specs):
            raise ValueError(
                "A network timed whole is not a kernel: fit() takes kernel specs only. Fit "
                "the composition term on networks with fit_composition() or fit_rows()."
            )
        data: dict[str, tuple[list, list]] = {}
        for s, t in zip(specs, times_us):
            data.setdefault(s.kind, ([], []))[0].append(s)
            data[s.kind][1].append(t)
        data = {k: (s, np.array(t)) for k, (s, t) in data.items()}
        return self._fit_dataset(data, metadata or {})

    def _fit_dataset(self, data, metadata) -> TimingTree:
        self._predicted_us = {}  # predictions of the trees this fit replaces
        self.kinds_ = {kind: self._fit_kind(specs, y) for kind, (specs, y) in sorted(data.items())}
        self.composition_ = {}
        # Every profiled time includes one invoke; the cheapest kernel bounds that overhead.
        self.overhead_us_ = float(min(y.min() for _, y in data.values()) * 0.5)
        self.metadata_ = {**metadata, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        return self

    def _folds(self, specs) -> np.ndarray | None:
        """A cross-validation fold per row: whole sweeps (`sweep_groups`), dealt in the
        seed's random order to 1 / `validation_fraction` folds, so that no fold validates on
        near-copies of rows it was grown on. None for kinds with too few rows (or sweeps) to
        prune."""
        if len(specs) < 4 * self.min_samples_leaf or not self.validation_fraction:
            return None
        groups = sweep_groups(specs)
        if groups.max() < 1:  # one sweep: nothing to hold out
            return None
        order = np.random.default_rng(self.seed).permutation(groups.max() + 1)
        fold_of_group = np.empty(len(order), dtype=int)
        fold_of_group[order] = np.arange(len(order)) % max(2, round(1 / self.validation_fraction))
        return fold_of_group[groups]

    def _fit_kind(self, specs, y) -> dict:
        """One kind's tree: for each tile, and with or without splits on the channels in a
        dim's last tile (`fdi_keras.features.LAST_TILE_DIMS`), a tree grown on every row and
        pruned at the leaf penalty of least cross-validated MAPE (each fold's tree grown
        without the fold and pruned at every penalty of LEAF_PENALTIES); the least such error
        wins, the last-tile splits only if they cut it by LAST_TILE_GAIN (never in a kind too small
        for folds, where no gain can be shown: with 60 rows, the GRU's unpruned tree split on
        `units_in_last_16`, and a 10-unit GRU was predicted 12% low; with
        `validation_fraction=0`, no pruning, every kind is offered them). Which rows a random
        split holds out no longer decides the splits: they are grown on all.
        The last-tile splits must earn their place: offered to every kind, they fitted the
        float32 conv2d rows of the AMD EPYC VM's profile worse (cross-validated 6.6% against
        6.3%) and its dense rows better (7.1% against 10.5%; 2,595 rows, before 30 more
        chains' kernels joined them). For IN_TILE_KINDS the input channels' tile is then
        chosen the same way, the rest fixed."""
        variables = [split_variables(s) for s in specs]
        every_name = sorted(variables[0])
        folds = self._folds(specs)
        fixed_cost_max = float(y.min())  # no configuration's fixed cost exceeds the fastest's time
        name_sets = [[n for n in every_name if not is_last_tile(n)], every_name]
        if len(name_sets[0]) == len(every_name) or (folds is None and self.validation_fraction):
            name_sets = name_sets[:1]  # no last-tile variable, or no folds to show a gain with
        column_of = {n: np.array([v[n] for v in variables]) for n in every_name}

        # One design matrix per pair of tiles, shared by both sets of split variables.
        matrix = functools.cache(lambda tile, in_tile: _matrices(specs, tile, in_tile))

        def scored(names, tile, in_tile):
            """(cross-validated MAPE, pruned tree) of one choice of split variables and tiles."""
            x = matrix(tile, in_tile)
            columns = [column_of[n] for n in names]

            def grow(rows):
                return growth.grow(
                    x[rows],
                    y[rows],
                    names,
                    [c[rows] for c in columns],
                    self.max_depth,
                    self.min_samples_leaf,
                    self.min_gain,
                    fixed_cost_max,
                    FIRST_SPLITS.get(specs[0].kind),
                )

            flat = grow(np.arange(len(y)))
            if folds is None:
                return relative_sse(x, y, np.array(flat.weights[0])), flat
            cv = self._cross_validated(grow, x, y, variables, folds)
            penalty = LEAF_PENALTIES[int(np.argmin(cv))]
            errors = growth.node_errors(flat, x, y, variables)
            return float(cv.min()), growth.prune_at(
                flat, growth.cost_complexity_cut(flat, errors, penalty * len(y))
            )

        best = None
        in_tiles = self.in_tiles if specs[0].kind in IN_TILE_KINDS else (1,)
        for names, tile in itertools.product(name_sets, self.tiles):
            score, flat = scored(names, tile, in_tiles[0])
            # Last-tile splits must cut the error by LAST_TILE_GAIN: on a tie the plainer
            # tree wins (a tile of 8 with a split on `cout_in_last_16` can mimic a tile of 16).
            gain = LAST_TILE_GAIN if names is not name_sets[0] else 0.0
            if best is None or score < best[0] - gain:
                best = (score, names, tile, in_tiles[0], flat)
        # The input channels' tile is searched at the chosen output tile, with and without
        # last-tile splits (the two tiles round different dims; a joint search grows 3x the trees).
        tile = best[2]
        for names, in_tile in itertools.product(name_sets, in_tiles[1:]):
            score, flat = scored(names, tile, in_tile)
            gain = LAST_TILE_GAIN if names is not name_sets[0] else 0.0
            if score < best[0] - gain:
                best = (score, names, tile, in_tile, flat)
        score, _, tile, in_tile, flat = best
        return {
            "tile": tile,
            "in_tile": in_tile,
            "tree": flat,
            "rows": len(y),
            "validation_mape": score if folds is not None else None,
        }

    @staticmethod
    def _cross_validated(grow, x, y, variables, folds) -> np.ndarray:
        """The MAPE over every row, predicted by the tree grown without its fold and pruned
        at each penalty of LEAF_PENALTIES (per leaf and row grown on)."""
        errors = np.zeros((len(LEAF_PENALTIES), len(y)))
        for fold in np.unique(folds):
            held = np.flatnonzero(folds == fold)
            kept = np.flatnonzero(folds != fold)
            tree = grow(kept)
            node_errors = growth.node_errors(tree, x[kept], y[kept], [variables[i] for i in kept])
            cuts = [
                growth.cost_complexity_cut(tree, node_errors, p * len(kept)) for p in LEAF_PENALTIES
            ]
            for j, ends in enumerate(growth.cut_leaves(tree, cuts, [variables[i] for i in held])):
                weights = np.array([tree.weights[n] for n in ends])
                predicted = np.einsum("ij,ij->i", x[held], weights)
                errors[j, held] = np.abs(predicted / y[held] - 1)
        return errors.mean(axis=1)

    # ---- prediction ----------------------------------------------------------------------
    def _check_fitted(self):
        if not self.kinds_:
            raise ValueError(
                "This TimingTree is not fitted yet. Call fit(), fit_rows() or "
                "TimingTree.load(path) first."
            )

    def kind_model(self, kind: str) -> dict:
        self._check_fitted()
        if kind == NETWORK:
            raise ValueError(
                "A network is predicted from its kernels: use fdi_keras.predict_latency(model, "
                "tree), not the tree of one kind."
            )
        if kind not in self.kinds_:
            raise MissingKindError(
                f"The timing tree has no model for kernel kind {kind!r}; it has "
                f"{sorted(self.kinds_)}. Profile it: tools/profile_device.py --kinds={kind},... "
                "with the same --out_dir, then refit."
            )
        return self.kinds_[kind]

    @property
    def dtype(self) -> str:
        """The numeric type of the kernels this tree was profiled with (float32 when its
        metadata does not say: trees fitted before it did were float32)."""
        return self.metadata_.get("dtype") or "float32"

    @property
    def threads(self) -> int:
        """The interpreter threads this tree was profiled with (1 when its metadata does not
        say)."""
        return self.metadata_.get("threads") or 1

    def profiled(self, spec: LayerSpec) -> LayerSpec:
        """`spec` in the numeric type and thread count this tree was profiled with. A kernel
        derived from a Keras model (`model_kernels`) is float32 on 1 thread; an int8 tree
        must see its int8 bytes (a quarter of float32's), or its byte features and the
        model's weight size (the composition term's memory curve) are 4x too large."""
        if (spec.dtype, spec.threads) == (self.dtype, self.threads):
            return spec
        return LayerSpec(spec.kind, spec.dims, spec.attrs, self.dtype, self.threads)

    def timed_spec(self, spec: LayerSpec) -> LayerSpec:
        """The kernel whose tree and features predict `spec`: `timed_as(spec)`, or `spec`
        itself when this tree lacks that kind but has `spec`'s (a dense-only profile: its
        dense tree was fitted on these rows too)."""
        timed = timed_as(spec)
        return spec if timed.kind not in self.kinds_ and spec.kind in self.kinds_ else timed

    def leaf(self, spec: LayerSpec) -> tuple[int, np.ndarray, dict]:
        """(leaf id, leaf weights over [1, *FEATURES], tiles) of the leaf `spec` falls in, in
        the tree of `timed_spec(spec).kind`; `tiles` are `compute_features`' `tile` and
        `in_tile` for that kind."""
        timed = self.timed_spec(spec)
        model = self.kind_model(timed.kind)
        flat = model["tree"]
        node = flat.leaf_of(split_variables(timed))
        tiles = {"tile": model["tile"], "in_tile": model["in_tile"]}
        return node, np.array(flat.weights[node]), tiles

    def predict_one(self, spec: LayerSpec) -> float:
        """Predicted time of one kernel, microseconds (as a single-kernel model's invoke).
        Remembered per kernel: pruning asks for the same kernels many times an epoch."""
        if spec not in self._predicted_us:
            _, w, tiles = self.leaf(spec)
            features = compute_features(self.timed_spec(spec), **tiles)
            self._predicted_us[spec] = float(design_matrix([features])[0] @ w)
        return self._predicted_us[spec]

    def predict(self, specs: list[LayerSpec]) -> np.ndarray:
        return np.array([self.predict_one(s) for s in specs])

    def kernel_in_model(
        self, spec: LayerSpec, statistic: str = "min", model_weight_bytes: float = np.inf
    ) -> float:
        """Kernel `spec`'s share of a model's time (microseconds, no invoke overhead): the
        single-kernel time corrected by the composition term when the tree has one.
        `model_weight_bytes` (`fdi_keras.features.weight_bytes` of the model's kernels) says
        whether the model's weights stay in cache between invokes; unknown, they do not."""
        _check_statistic(statistic)
        single = self.predict_one(spec)
        if not self.composition_:
            return max(0.0, single - self.overhead_us_)
        return self._composition(statistic).kernel_us(single, spec, model_weight_bytes)

    def in_model_slope(
        self,
        single_slope: float,
        spec: LayerSpec,
        wider: LayerSpec,
        model_weight_bytes: float = np.inf,
    ) -> float:
        """A single-kernel time difference between `spec` and `wider` as it shows inside a
        model of `model_weight_bytes` (the minimum's composition term; unchanged without)."""
        if not self.composition_:
            return single_slope
        composition, single = self._composition("min"), self.predict_one(spec)
        return composition.kernel_us(
            single + single_slope, wider, model_weight_bytes
        ) - composition.kernel_us(single, spec, model_weight_bytes)

    def invoke_overhead(self, statistic: str = "min") -> float:
        """What one invoke of a model costs beyond its kernels, microseconds."""
        _check_statistic(statistic)
        if not self.composition_:
            return self.overhead_us_
        return self._composition(statistic).overhead_us

    def _composition(self, statistic) -> Composition:
        return self.composition_[statistic]

    # ---- explanation ---------------------------------------------------------------------
    def explain(self, kind: str | None = None) -> str:
        """The rules as text, e.g. `if cout % 16 == 0: t = 2.1 + 1.9e-05*flops ... us`."""
        self._check_fitted()
        parts = [self._explain_kind(k) for k in ([kind] if kind else self.kinds_)]
        if kind is None:
            parts += [c.explain() for c in self.composition_.values()] or [
                "inside a model: no composition term (no random networks were profiled); "
                f"model time = {self.overhead_us_:.3g} us per invoke + the sum of kernel times "
                "less that overhead each"
            ]
        return "\n\n".join(parts)

    def _explain_kind(self, kind) -> str:
        model = self.kind_model(kind)
        flat, tile, in_tile = model["tree"], model["tile"], model["in_tile"]
        head = f"{kind}: {model['rows']} rows"
        if tile > 1:
            head += f"; staircase tile {tile} (FLOPs and params use channels rounded up to {tile})"
        if in_tile > 1:
            head += f"; input channels rounded up to {in_tile}"
        if model.get("validation_mape") is not None:
            head += f"; validation MAPE {100 * model['validation_mape']:.1f}%"
        lines = [head]

        def formula(node):
            terms = [f"{flat.weights[node][0]:.3g}"] + [
                f"{w:.3g}*{name}" for w, name in zip(flat.weights[node][1:], FEATURES) if w > 0
            ]
            return f"t = {' + '.join(terms)} us  [{flat.samples[node]} rows]"

        def walk(node, indent):
            pad = "  " * indent
            if flat.left[node] == -1:
                lines.append(pad + formula(node))
                return
            var, cond, value = flat.variable[node], flat.condition[node], flat.value[node]
            if growth.is_indicator(var):  # `op=max <= 0.5` reads better as `op != max`
                no, yes = var.replace("=", " == "), var.replace("=", " != ")
            elif cond == "le":
                yes, no = f"{var} <= {value:g}", f"{var} > {value:g}"
            else:
                yes, no = f"{var} % {int(value)} == 0", f"{var} % {int(value)} != 0"
            lines.append(f"{pad}if {yes}:")
            walk(flat.left[node], indent + 1)
            lines.append(f"{pad}if {no}:")
            walk(flat.right[node], indent + 1)

        walk(0, 1)
        return "\n".join(lines)

    # ---- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "metadata": self.metadata_,
            "overhead_us": self.overhead_us_,
            "features": ["intercept", *FEATURES],
            "hyperparameters": {
                "max_depth": self.max_depth,
                "min_samples_leaf": self.min_samples_leaf,
                "min_gain": self.min_gain,
                "validation_fraction": self.validation_fraction,
                "tiles": list(self.tiles),
                "in_tiles": list(self.in_tiles),
                "seed": self.seed,
            },
            "kinds": {k: {**m, "tree": m["tree"].to_dict()} for k, m in self.kinds_.items()},
            "composition": {k: c.to_dict() for k, c in self.composition_.items()},
        }

    def save(self, path: str) -> None:
        """Writes the tree as JSON, atomically."""
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def load(cls, path: str) -> TimingTree:
        """Reads a tree saved by `save`; a corrupt or foreign file raises `TreeFormatError`."""
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise TreeFormatError(f"{path} is not valid JSON ({e}); the file is corrupt.") from e
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> TimingTree:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TreeFormatError(
                f"{source} is not an fdi_keras timing tree (no 'format': {FORMAT!r} field)."
            )
        # 2: no composition term; 3: one bandwidth or a cache step instead of the memory curve
        version = data.get("format_version")
        if version not in range(2, FORMAT_VERSION + 1):
            raise TreeFormatError(
                f"{source} has format_version {version!r}; this fdi_keras "
                f"reads versions 2 to {FORMAT_VERSION}. Refit it: rerun tools/profile_device.py "
                "with the same --out_dir, which keeps every measured row of profile.jsonl and "
                "only refits the tree."
            )
        try:
            tree = cls(**data["hyperparameters"])
            tree.metadata_ = data["metadata"]
            tree.overhead_us_ = float(data["overhead_us"])
            try:
                tree.composition_ = {
                    k: Composition.from_dict(c) for k, c in data.get("composition", {}).items()
                }
            except TypeError as e:
                raise TreeFormatError(f"{source}: a malformed composition term ({e}).") from e
            fields = [f.name for f in growth.dataclasses.fields(growth.FlatTree)]
            tree.kinds_ = {}
            for kind, m in data["kinds"].items():
                flat = growth.FlatTree(**{f: m["tree"][f] for f in fields})
                # Features a format did not have yet (`copies` before 5, the cache knots'
                # before 11) weigh nothing: its leaves are padded with zeros.
                saved = (
                    LEAF_WEIGHTS_BEFORE_COPIES
                    if version < 5
                    else LEAF_WEIGHTS_BEFORE_CACHE
                    if version < 11
                    else len(FEATURES) + 1
                )
                flat.weights = [
                    [*w, *[0.0] * (len(FEATURES) + 1 - saved)] if len(w) == saved else w
                    for w in flat.weights
                ]
                if not flat.left or any(len(w) != len(FEATURES) + 1 for w in flat.weights):
                    raise TreeFormatError(
                        f"{source}: the {kind!r} tree has no nodes or leaf "
                        f"weights of the wrong length."
                    )
                copies = 1 + FEATURES.index("copies")
                if version < 6 and kind == "concat":  # `copies` was also counted in `steps`
                    steps = 1 + FEATURES.index("steps")
                    for w in flat.weights:
                        w[steps] += w[copies]
                if version < 8 and kind == "conv2d":  # a conv's `copies` was 0
                    for w in flat.weights:
                        w[copies] = 0.0
                tree.kinds_[kind] = {"in_tile": 1, **m, "tree": flat}  # format 9: no in_tile
        except KeyError as e:
            raise TreeFormatError(
                f"{source} lacks the field {e.args[0]!r}; the file is incomplete or corrupt."
            ) from e
        return tree
