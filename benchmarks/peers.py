"""The time models peers use, fitted on the same profile rows as the TimingTree.

- `RandomForest`: nn-Meter's kernel predictor (a forest per kind over dims, FLOPs and memory).
- `MLP`: LitePred's predictor shape (a small multi-layer perceptron per kind on log features).
- `LookupTable`: HALP / NetAdapt's latency table, interpolated: the distance-weighted mean of
  the nearest measured configurations in log-dimension space.
- `fdi_keras.timing.FlopsLinear`: what FLOP-driven compressors assume.

All of them predict log time from the same variables: the raw dims and categorical indicators
the tree splits on, and the log of every feature its leaves are linear in
(`fdi_keras.features.FEATURES`: FLOPs, bytes in and out, parameter bytes, `steps`, `copies`).
They are fitted per kind (a Dense over several rows stays with the dense rows: the peers are
given the rows as profiled); none sees the held-out rows.
"""

from __future__ import annotations

import numpy as np

from fdi_keras.features import compute_features, split_variables


def _x(specs):
    rows = []
    for s in specs:
        v, f = split_variables(s), compute_features(s)
        rows.append([np.log1p(v[k]) for k in sorted(v)] + [np.log1p(f[k]) for k in sorted(f)])
    return np.array(rows)


class _PerKind:
    """Fits one scikit-learn regressor per kind on log time."""

    def make(self):
        raise NotImplementedError

    def fit(self, specs, y):
        self.models = {}
        for kind in {s.kind for s in specs}:
            idx = [i for i, s in enumerate(specs) if s.kind == kind]
            self.models[kind] = self.make().fit(_x([specs[i] for i in idx]), np.log(y[idx]))
        return self

    def predict(self, specs):
        return np.array([np.exp(self.models[s.kind].predict(_x([s]))[0]) for s in specs])


class RandomForest(_PerKind):
    def make(self):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(300, random_state=0, n_jobs=1)


class MLP(_PerKind):
    def make(self):
        from sklearn.neural_network import MLPRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            StandardScaler(),
            MLPRegressor(
                hidden_layer_sizes=(64, 64), max_iter=3000, early_stopping=True, random_state=0
            ),
        )


class LookupTable(_PerKind):
    def make(self):
        from sklearn.neighbors import KNeighborsRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), KNeighborsRegressor(4, weights="distance"))
