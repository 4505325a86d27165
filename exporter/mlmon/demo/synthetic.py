"""Synthetic tabular data in the event shape, for examples, the demo and tests.

`TableSpec` describes independent features (normal numerics, categorical with fixed
probabilities) and a logistic scoring model; `events` draws rows from it, optionally with
some numeric features shifted by a number of standard deviations.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TableSpec:
    numeric: Mapping[str, tuple[float, float]]  # name -> (mean, std)
    categorical: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # name -> p
    weights: Mapping[str, float] = field(default_factory=dict)  # logistic weight per numeric
    intercept: float = 0.0

    def config_features(self) -> dict[str, str]:
        return {
            **dict.fromkeys(self.numeric, "numeric"),
            **dict.fromkeys(self.categorical, "categorical"),
        }


def wide_spec(n_numeric: int = 18, n_categorical: int = 2) -> TableSpec:
    """Features on different scales and spreads, so nothing works by accident of units."""
    numeric = {f"x{j:02d}": (10.0 * j - 40.0, 1.0 + j / 3.0) for j in range(n_numeric)}
    cats = {f"c{j}": {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05} for j in range(n_categorical)}
    weights = {
        name: (0.8 if j % 3 == 0 else 0.0) / sd for j, (name, (_, sd)) in enumerate(numeric.items())
    }
    intercept = -sum(w * numeric[n][0] for n, w in weights.items())
    return TableSpec(numeric=numeric, categorical=cats, weights=weights, intercept=intercept)


def credit_spec() -> TableSpec:
    """The demo's credit-risk model: applicants, and a logistic score of default."""
    return TableSpec(
        numeric={
            "age": (41.0, 11.0),
            "income": (52_000.0, 16_000.0),
            "debt_ratio": (0.32, 0.12),
            "credit_lines": (4.0, 2.0),
            "months_employed": (70.0, 40.0),
        },
        categorical={
            "country": {"DE": 0.35, "FR": 0.25, "ES": 0.15, "IT": 0.15, "NL": 0.1},
            "channel": {"web": 0.6, "branch": 0.3, "partner": 0.1},
        },
        weights={"debt_ratio": 6.0, "income": -0.00004, "months_employed": -0.01},
        intercept=-0.4,
    )


def events(
    spec: TableSpec,
    n: int,
    seed: int,
    shift: Mapping[str, float] | None = None,
    version: str | None = None,
    id_prefix: str = "",
    attributions: bool = False,
) -> list[dict[str, Any]]:
    """``n`` events; ``shift`` moves named numeric features by that many standard deviations.
    Each event carries a label drawn from the true (unshifted) score, and with
    ``attributions`` each weighted feature's contribution to the logit, w * (x - mean): the
    exact SHAP value of a linear score with independent features."""
    rng = np.random.default_rng(seed)
    shift = shift or {}
    cols: dict[str, np.ndarray] = {}
    for name, (mu, sd) in spec.numeric.items():
        cols[name] = rng.normal(mu + shift.get(name, 0.0) * sd, sd, n).round(4)
    cats: dict[str, np.ndarray] = {}
    for name, probs in spec.categorical.items():
        keys = list(probs)
        p = np.asarray([probs[k] for k in keys])
        cats[name] = np.asarray(keys)[rng.choice(len(keys), size=n, p=p / p.sum())]
    logit = spec.intercept + sum(w * cols[k] for k, w in spec.weights.items())
    score = (1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=float) * np.ones(n)))).round(6)
    labels = (rng.random(n) < score).astype(int)
    out = []
    for i in range(n):
        feats: dict[str, Any] = {k: float(v[i]) for k, v in cols.items()}
        feats.update({k: str(v[i]) for k, v in cats.items()})
        ev: dict[str, Any] = {
            "id": f"{id_prefix}{i}",
            "features": feats,
            "prediction": int(score[i] >= 0.5),
            "scores": {"1": float(score[i])},
            "label": int(labels[i]),
        }
        if version is not None:
            ev["version"] = version
        if attributions:
            ev["attributions"] = {
                k: round(w * (feats[k] - spec.numeric[k][0]), 6) for k, w in spec.weights.items()
            }
        out.append(ev)
    return out


def write_csv(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    rows = list(rows)
    names = list(rows[0]["features"])
    attributed = list(rows[0].get("attributions", {}))  # as attr_<feature> columns
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*names, *(f"attr_{k}" for k in attributed), "prediction", "score", "label"])
        for r in rows:
            f = r["features"]
            w.writerow(
                [
                    *("" if f.get(k) is None else f[k] for k in names),
                    *(r["attributions"][k] for k in attributed),
                    r["prediction"],
                    r["scores"]["1"],
                    r["label"],
                ]
            )


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    with Path(path).open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def without_labels(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Events as a model server would send them: no ground truth."""
    return [{k: v for k, v in r.items() if k != "label"} for r in rows]
