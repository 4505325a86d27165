"""Baseline profiles: the reference distributions that live traffic is compared with.

A profile is built once from training data (CSV with a header, or JSONL rows in the event
shape) and written as deterministic JSON: the same data and settings give the same bytes
and the same content hash. It fixes everything the exporter bins against: histogram edges
(deciles by default), a finer quantile grid for KS and Wasserstein, category vocabularies
(top-K plus ``__other__``), missing rates, min/max, and the prediction, score and label
distributions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlmon.core.config import ModelConfig, label_text
from mlmon.stats import embedding, multivariate

FORMAT = "mlmon-baseline/1"
OTHER = "__other__"
# Scores are probabilities: fixed, evenly spaced edges make them comparable across models.
SCORE_EDGES = tuple(round(x / 10, 1) for x in range(1, 10))
SCORE_GRID = tuple(round(x / 100, 2) for x in range(1, 100))
PROGRESS_MIN_BYTES = 4 * 1024 * 1024  # smaller files read too fast for a progress bar
RESERVED_CSV = {"prediction", "label", "score", "id", "version", "timestamp"}
ATTRIBUTION_PREFIX = "attr_"  # CSV columns of a feature's attribution (e.g. a SHAP value)
_MISSING_TEXT = {"", "na", "nan", "null", "none", "n/a"}


class BaselineError(Exception):
    """Training data or a profile that cannot be used, with a message that says where."""


def _round_edge(x: float) -> float:
    # Six significant digits keep `le` labels readable; live and reference bin on the
    # same rounded edges, so rounding changes no statistic.
    return float(f"{x:.6g}")


def numeric_profile(
    values: np.ndarray,
    missing: int,
    bins: int,
    grid: int,
    edges: tuple[float, ...] | None = None,
    fixed_grid: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Profile of one numeric column (``values`` holds the present values only)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise BaselineError("has no values (every row is missing)")
    if edges is None:
        coarse = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    else:
        coarse = np.asarray(edges, dtype=np.float64)
    if fixed_grid is None:
        fine = np.quantile(values, np.linspace(0, 1, grid + 1)[1:-1])
    else:
        fine = np.asarray(fixed_grid, dtype=np.float64)
    coarse_r = sorted({_round_edge(x) for x in coarse})
    grid_r = sorted({_round_edge(x) for x in fine} | set(coarse_r))
    counts = np.bincount(
        np.searchsorted(np.asarray(grid_r), values, side="left"), minlength=len(grid_r) + 1
    )
    return {
        "kind": "numeric",
        "count": int(values.size),
        "missing": int(missing),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "sum": float(values.sum()),
        "edges": coarse_r,
        "grid": grid_r,
        "grid_counts": [int(c) for c in counts],
    }


def categorical_profile(
    values: list[str], missing: int, top_k: int, vocabulary: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Profile of one categorical column: the top-K categories, the rest as ``__other__``.
    With a fixed ``vocabulary`` (classes), every class is kept in the given order."""
    if not values and vocabulary is None:
        raise BaselineError("has no values (every row is missing)")
    counts = Counter(values)
    if vocabulary is not None:
        kept = list(vocabulary)
    else:
        # Most frequent first; ties broken by name so the profile is deterministic.
        kept = [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]
    kept_counts = {c: int(counts.get(c, 0)) for c in kept}
    return {
        "kind": "categorical",
        "count": len(values),
        "missing": int(missing),
        "distinct": len(counts),
        "categories": [[c, kept_counts[c]] for c in kept],
        "other": int(len(values) - sum(kept_counts.values())),
    }


# ---------------------------------------------------------------- reading training data


class _Progress:
    """A one-line progress meter on stderr for large files."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled and total > 0
        self.last = 0.0

    def update(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last < 0.25:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
            f"({done / 1e6:.1f}/{self.total / 1e6:.1f} MB)"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _lines_with_progress(path: Path, progress: bool) -> Iterator[str]:
    size = path.stat().st_size
    meter = _Progress(f"reading {path.name}", size, progress and size >= PROGRESS_MIN_BYTES)
    done = 0
    with path.open("r", encoding="utf-8", newline="") as fh:
        for line in fh:
            done += len(line)
            meter.update(done)
            yield line
    meter.update(done, final=True)


@dataclass
class TrainingRows:
    """Column-wise raw values, as read: text from CSV, JSON values from JSONL."""

    columns: dict[str, list[Any]]
    predictions: list[Any]
    scores: list[Any]
    labels: list[Any]
    rows: int
    from_text: bool
    # per feature, its attribution in each row (None where absent): CSV `attr_<feature>`
    # columns, JSONL `attributions` objects
    attributions: dict[str, list[Any]] = field(default_factory=dict)


def read_training_data(
    path: str | Path, feature_names: Iterable[str] | None, progress: bool = True
) -> TrainingRows:
    path = Path(path)
    if not path.exists():
        raise BaselineError(f"{path}: no such file")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, feature_names, progress)
    return _read_csv(path, feature_names, progress)


def _read_csv(path: Path, feature_names: Iterable[str] | None, progress: bool) -> TrainingRows:
    reader = csv.reader(_lines_with_progress(path, progress))
    try:
        header = next(reader)
    except StopIteration as e:
        raise BaselineError(f"{path}: empty file, expected a header row") from e
    header = [h.strip() for h in header]
    index = {h: i for i, h in enumerate(header)}
    if feature_names is None:
        names = [
            h
            for h in header
            if h not in RESERVED_CSV and not h.startswith(("score_", ATTRIBUTION_PREFIX))
        ]
    else:
        names = list(feature_names)
        missing = [n for n in names if n not in index]
        if missing:
            raise BaselineError(
                f"{path}: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})"
            )
    cols: dict[str, list[Any]] = {n: [] for n in names}
    preds: list[Any] = []
    scores: list[Any] = []
    labels: list[Any] = []
    score_cols = [(h[6:], i) for h, i in index.items() if h.startswith("score_")]
    attr_cols = {
        h[len(ATTRIBUTION_PREFIX) :]: i
        for h, i in index.items()
        if h.startswith(ATTRIBUTION_PREFIX)
    }
    attrs: dict[str, list[Any]] = {n: [] for n in attr_cols}
    rows = 0
    for lineno, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise BaselineError(f"{path}:{lineno}: {len(row)} fields, header has {len(header)}")
        rows += 1
        for n in names:
            cols[n].append(row[index[n]])
        if "prediction" in index:
            preds.append(row[index["prediction"]])
        if "label" in index:
            labels.append(row[index["label"]])
        if "score" in index:
            scores.append(row[index["score"]])
        elif score_cols:
            scores.append({cls: row[i] for cls, i in score_cols})
        for n, i in attr_cols.items():
            attrs[n].append(row[i])
    return TrainingRows(cols, preds, scores, labels, rows, from_text=True, attributions=attrs)


def _read_jsonl(path: Path, feature_names: Iterable[str] | None, progress: bool) -> TrainingRows:
    names = list(feature_names) if feature_names is not None else None
    cols: dict[str, list[Any]] = {n: [] for n in names} if names else {}
    preds: list[Any] = []
    scores: list[Any] = []
    labels: list[Any] = []
    attrs: dict[str, list[Any]] = {}
    rows = 0
    for lineno, line in enumerate(_lines_with_progress(path, progress), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise BaselineError(f"{path}:{lineno}: not valid JSON: {e.msg}") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("features"), dict):
            raise BaselineError(f"{path}:{lineno}: expected an object with a 'features' object")
        feats = obj["features"]
        if names is None:
            # Columns discovered on the fly; earlier rows lacked them, so they were missing.
            for k in feats:
                if k not in cols:
                    cols[k] = [None] * rows
        for n, values in cols.items():
            values.append(feats.get(n))
        _add_attributions(attrs, obj.get("attributions"), rows, f"{path}:{lineno}")
        rows += 1
        preds.append(obj.get("prediction"))
        scores.append(obj.get("scores"))
        labels.append(obj.get("label"))
    if names is not None:
        absent = [n for n in names if all(v is None for v in cols[n])]
        if rows and absent:
            raise BaselineError(f"{path}: no row has feature(s) {', '.join(absent)}")
    for values in attrs.values():
        values.extend([None] * (rows - len(values)))
    return TrainingRows(cols, preds, scores, labels, rows, from_text=False, attributions=attrs)


def _add_attributions(attrs: dict[str, list[Any]], row: Any, before: int, where: str) -> None:
    """One JSONL row's ``attributions`` object into the columns (earlier rows: None)."""
    if row is None:
        return
    if not isinstance(row, dict):
        raise BaselineError(f"{where}: 'attributions' must be an object of feature -> number")
    for k, v in row.items():
        values = attrs.setdefault(k, [])
        values.extend([None] * (before - len(values)))
        values.append(v)


def multivariate_profile(
    features: dict[str, Any], data: TrainingRows, variance: float
) -> dict[str, Any] | None:
    """The baseline of multivariate drift (see `stats.multivariate`): the training rows
    encoded as ingest encodes them (numeric values, NaN for missing; each categorical's
    index in its profiled vocabulary, ``__other__`` last), and a PCA fitted to them. None
    when there are too few rows."""
    num = [n for n, p in features.items() if p["kind"] == "numeric"]
    cat = [n for n, p in features.items() if p["kind"] == "categorical"]
    x = np.full((data.rows, len(num)), np.nan)
    for j, name in enumerate(num):
        x[:, j] = [_number_or_nan(v, data.from_text) for v in data.columns[name]]
    c = np.full((data.rows, len(cat)), -1, dtype=np.int64)
    widths = []
    for j, name in enumerate(cat):
        vocab = {label: i for i, (label, _) in enumerate(features[name]["categories"])}
        widths.append(len(vocab) + 1)
        for i, v in enumerate(data.columns[name]):
            if not _is_missing(v, data.from_text):
                text = label_text(v).strip() if data.from_text else label_text(v)
                c[i, j] = vocab.get(text, len(vocab))
    if data.rows < multivariate.MIN_BASELINE_ROWS or not (num or cat):
        return None
    fitted = multivariate.fit(x, c, widths, variance=variance)
    return {"numeric": num, "categorical": cat, **fitted.to_dict()}


def _embedding_vectors(raw: list[Any], dim: int) -> tuple[np.ndarray, int]:
    """The present vectors of an embedding column as [n, dim], and how many rows had none."""
    present = []
    for row, v in enumerate(raw, start=1):
        if v is None:
            continue
        if (
            not isinstance(v, list)
            or len(v) != dim
            or not all(type(x) in (int, float) and math.isfinite(x) for x in v)
        ):
            raise BaselineError(f"row {row}: expected a list of {dim} finite numbers")
        present.append(v)
    x = np.asarray(present, dtype=np.float64).reshape(len(present), dim)
    return x, len(raw) - len(present)


def _embedding_profile(
    spec: Any, raw: list[Any], from_text: bool, bins: int, grid: int
) -> dict[str, Any]:
    """An embedding's PCA (`stats.embedding`) and the numeric profile of each component's
    projected values, under the component's name."""
    if from_text:
        raise BaselineError(
            "embedding features need JSONL training data (a list of numbers per row); "
            "CSV cannot hold them"
        )
    x, missing = _embedding_vectors(raw, spec.dim)
    if x.shape[0] < 2:
        raise BaselineError("an embedding needs at least two rows with a vector")
    pca = embedding.fit(x, spec.components)
    coords = pca.project(x)
    names = embedding.component_names(spec.name, spec.components)
    return {
        "projection": pca.to_dict(),
        "components": {
            n: numeric_profile(coords[:, j], missing, bins, grid) for j, n in enumerate(names)
        },
    }


def _number_or_nan(v: Any, from_text: bool) -> float:
    if _is_missing(v, from_text):
        return math.nan
    x = _as_number(v, from_text)  # every value was checked by _numeric_column
    return x if math.isfinite(x) else math.nan


def attribution_profile(
    data: TrainingRows, features: dict[str, Any]
) -> dict[str, dict[str, float]] | None:
    """Each profiled feature's global attribution in the training data: the events that
    carry one and their mean absolute value (None when the data has no attributions)."""
    out: dict[str, dict[str, float]] = {}
    for name, raw in data.attributions.items():
        if name not in features:
            continue
        values, _ = _numeric_column(f"{ATTRIBUTION_PREFIX}{name}", raw, data.from_text)
        if values.size:
            out[name] = {"events": int(values.size), "mean_abs": float(np.abs(values).mean())}
    return out or None


def _is_missing(v: Any, from_text: bool) -> bool:
    if v is None:
        return True
    if from_text:
        return isinstance(v, str) and v.strip().lower() in _MISSING_TEXT
    return isinstance(v, float) and not math.isfinite(v)


def _as_number(v: Any, from_text: bool) -> float:
    if from_text:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError
    return float(v)


def _infer_kind(values: list[Any], from_text: bool) -> str:
    for v in values:
        if _is_missing(v, from_text):
            continue
        try:
            x = _as_number(v, from_text)
        except (ValueError, TypeError):
            return "categorical"
        if not math.isfinite(x):
            continue
    return "numeric"


def _numeric_column(name: str, values: list[Any], from_text: bool) -> tuple[np.ndarray, int]:
    out = np.empty(len(values))
    missing = 0
    for i, v in enumerate(values):
        if _is_missing(v, from_text):
            out[i] = np.nan
            missing += 1
            continue
        try:
            x = _as_number(v, from_text)
        except (ValueError, TypeError, OverflowError):
            row = i + 2 if from_text else i + 1
            where = "line" if from_text else "row"
            raise BaselineError(f"feature {name!r}, {where} {row}: {v!r} is not a number") from None
        if not math.isfinite(x):
            out[i] = np.nan
            missing += 1
        else:
            out[i] = x
    return out[~np.isnan(out)], missing


def _categorical_column(values: list[Any], from_text: bool) -> tuple[list[str], int]:
    present = [
        label_text(v).strip() if from_text else label_text(v)
        for v in values
        if not _is_missing(v, from_text)
    ]
    return present, len(values) - len(present)


def _positive_scores(
    raw: list[Any],
    classes: tuple[str, ...] | None,
    task: str,
    positive: str | None,
    from_text: bool,
) -> np.ndarray:
    """The score the exporter tracks, row by row (NaN where a row has none): the positive
    class's for binary models, the top class's (the model's confidence) for multiclass."""
    out = []
    for s in raw:
        if s is None or (from_text and isinstance(s, str) and _is_missing(s, True)):
            out.append(math.nan)
            continue
        if isinstance(s, dict):
            vals = {str(k): float(v) for k, v in s.items() if not _is_missing(v, from_text)}
            if not vals:
                out.append(math.nan)
            elif task == "binary" and positive is not None and positive in vals:
                out.append(vals[positive])
            else:
                out.append(max(vals.values()))
        else:
            out.append(float(s))
    arr = np.asarray(out, dtype=np.float64)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def calibration_table(
    scores: np.ndarray, labels: list[Any], positive: str, from_text: bool
) -> dict[str, Any] | None:
    """Per score bucket (SCORE_EDGES): rows and positive labels among them, from the rows that
    have both a score and a label; used to recalibrate label-free estimates."""
    if len(labels) != len(scores):
        return None
    pos = np.array(
        [
            math.nan if _is_missing(v, from_text) else float(label_text(v).strip() == positive)
            for v in labels
        ]
    )
    keep = ~np.isnan(scores) & ~np.isnan(pos)
    if not keep.any():
        return None
    bins = np.searchsorted(np.asarray(SCORE_EDGES), scores[keep], side="left")
    n = len(SCORE_EDGES) + 1
    return {
        "edges": list(SCORE_EDGES),
        "counts": [int(x) for x in np.bincount(bins, minlength=n)],
        "positives": [int(x) for x in np.bincount(bins, weights=pos[keep], minlength=n)],
    }


def build_profile(
    model: ModelConfig, data: TrainingRows, created_at: str | None = None
) -> dict[str, Any]:
    """The profile as a plain dict (see module docstring); raises BaselineError on bad data.
    ``created_at`` (RFC 3339, UTC; default now) says when it was built: metadata, left out
    of the content hash, so the same data gives the same hash whenever it is built."""
    if data.rows == 0:
        raise BaselineError("the training data has no rows")
    d = model.drift
    specs = {f.name: f for f in model.features} if model.features is not None else {}
    features: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    for name, raw in data.columns.items():
        spec = specs.get(name)
        kind = spec.kind if spec and spec.kind else _infer_kind(raw, data.from_text)
        try:
            if kind == "embedding":
                embeddings[name] = _embedding_profile(spec, raw, data.from_text, d.bins, d.grid)
            elif any(type(v) is list for v in raw):
                raise BaselineError(
                    "holds lists: declare it as {kind: embedding, dim: N} in the config"
                )
            elif kind == "numeric":
                values, missing = _numeric_column(name, raw, data.from_text)
                features[name] = numeric_profile(
                    values, missing, d.bins, d.grid, edges=spec.edges if spec else None
                )
            else:
                cats, missing = _categorical_column(raw, data.from_text)
                features[name] = categorical_profile(cats, missing, d.top_k)
        except BaselineError as e:
            raise BaselineError(f"feature {name!r}: {e}") from None

    profile: dict[str, Any] = {
        "format": FORMAT,
        "model": model.name,
        "task": model.task,
        "rows": data.rows,
        "settings": {"bins": d.bins, "grid": d.grid, "top_k": d.top_k},
        "features": features,
        "prediction": _output_profile(model, data.predictions, data.from_text, "prediction"),
        "label": _output_profile(model, data.labels, data.from_text, "label"),
        "score": None,
        "calibration": None,
    }
    attributions = attribution_profile(data, features)
    if attributions is not None:  # absent otherwise: older profiles keep their hash
        profile["attributions"] = attributions
    joint = multivariate_profile(features, data, d.multivariate_variance)
    if joint is not None:
        profile["multivariate"] = joint
    if embeddings:  # absent otherwise: older profiles keep their hash
        profile["embeddings"] = {n: e["projection"] for n, e in embeddings.items()}
        for e in embeddings.values():
            features.update(e["components"])
    if model.task == "regression":
        profile["regression_error"] = regression_error(
            data.predictions, data.labels, data.from_text
        )
    else:
        positive = _positive_class(model, profile)
        scores = _positive_scores(data.scores, model.classes, model.task, positive, data.from_text)
        present = scores[~np.isnan(scores)]
        if present.size:
            profile["score"] = numeric_profile(
                present, 0, d.bins, d.grid, edges=SCORE_EDGES, fixed_grid=SCORE_GRID
            )
            if model.task == "binary" and positive is not None:
                profile["calibration"] = calibration_table(
                    scores, data.labels, positive, data.from_text
                )
    profile["created_at"] = created_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    profile["hash"] = content_hash(profile)
    return profile


def regression_error(
    predictions: list[Any], labels: list[Any], from_text: bool
) -> dict[str, Any] | None:
    """MAE and RMSE of the baseline data's predictions against its labels, over the rows
    that have both: the reference of the live error (None without such rows). Profiles
    written before this field have no key, and their models no error reference."""
    if len(predictions) != len(labels):
        return None
    pairs = [
        (_as_number(p, from_text), _as_number(y, from_text))
        for p, y in zip(predictions, labels, strict=True)
        if not _is_missing(p, from_text) and not _is_missing(y, from_text)
    ]
    err = np.asarray([p - y for p, y in pairs], dtype=np.float64)
    err = err[np.isfinite(err)]
    if err.size == 0:
        return None
    return {
        "count": int(err.size),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
    }


def _positive_class(model: ModelConfig, profile: dict[str, Any]) -> str | None:
    if model.task != "binary":
        return None
    if model.positive_class is not None:
        return model.positive_class
    classes = model.classes or tuple(
        c
        for c, _ in (profile["prediction"] or profile["label"] or {"categories": [["1", 0]]})[
            "categories"
        ]
    )
    return classes[-1]


def _output_profile(
    model: ModelConfig, raw: list[Any], from_text: bool, what: str
) -> dict[str, Any] | None:
    present = [v for v in raw if not _is_missing(v, from_text)]
    if not present:
        return None
    try:
        if model.task == "regression":
            values, missing = _numeric_column(what, raw, from_text)
            return numeric_profile(values, missing, model.drift.bins, model.drift.grid)
        cats, missing = _categorical_column(raw, from_text)
        classes = model.classes or tuple(sorted(set(cats), key=_class_sort_key))
        return categorical_profile(cats, missing, model.drift.top_k, vocabulary=classes)
    except BaselineError as e:
        raise BaselineError(f"{what}: {e}") from None


def _class_sort_key(c: str) -> tuple[int, float | str]:
    try:
        return (0, float(c))
    except ValueError:
        return (1, c)


# when a profile was built: metadata, not content
UNHASHED = ("hash", "created_at")


def content_hash(profile: dict[str, Any]) -> str:
    body = {k: v for k, v in profile.items() if k not in UNHASHED}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def dumps(profile: dict[str, Any]) -> str:
    """Deterministic JSON: sorted keys, one key per line, each list on one line."""

    def enc(v: Any, depth: int) -> str:
        if isinstance(v, dict) and v:
            pad = "  " * (depth + 1)
            items = ",\n".join(f"{pad}{json.dumps(k)}: {enc(v[k], depth + 1)}" for k in sorted(v))
            return "{\n" + items + "\n" + "  " * depth + "}"
        return json.dumps(v, sort_keys=True, separators=(", ", ": "), allow_nan=False)

    return enc(profile, 0) + "\n"


def write_profile(profile: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(dumps(profile))
    tmp.replace(path)


def load_profile(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        profile = json.loads(path.read_text())
    except OSError as e:
        raise BaselineError(f"{path}: cannot read: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise BaselineError(f"{path}: not valid JSON: {e.msg}") from e
    if not isinstance(profile, dict) or profile.get("format") != FORMAT:
        raise BaselineError(f"{path}: not a {FORMAT} profile")
    if profile.get("hash") != content_hash(profile):
        raise BaselineError(f"{path}: content hash does not match (edited by hand?)")
    return profile
