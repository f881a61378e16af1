"""Accuracy of time predictions: MAPE, RMSPE and the share within +/-5% and +/-10%."""

from __future__ import annotations

import numpy as np


def accuracy(measured, predicted) -> dict[str, float]:
    """Relative-error statistics of `predicted` against `measured` (both positive)."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    err = (predicted - measured) / measured
    return {
        "n": int(len(err)),
        "mape": float(np.mean(np.abs(err))),
        "rmspe": float(np.sqrt(np.mean(err**2))),
        "within_5": float(np.mean(np.abs(err) <= 0.05)),
        "within_10": float(np.mean(np.abs(err) <= 0.10)),
    }


def format_accuracy(name: str, stats: dict) -> str:
    return (
        f"{name:<18} n={stats['n']:<5} MAPE {100 * stats['mape']:5.1f}%  "
        f"RMSPE {100 * stats['rmspe']:5.1f}%  within 5%: {100 * stats['within_5']:5.1f}%  "
        f"within 10%: {100 * stats['within_10']:5.1f}%"
    )
