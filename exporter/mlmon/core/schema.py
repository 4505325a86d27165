"""A model's resolved schema: its config joined with its baseline profile.

Numeric columns are grouped into one `NumericBlock` and categorical columns into one
`CategoricalBlock`, each holding fixed-size, padded numpy arrays (edges, vocabularies,
reference counts), so ingest bins every feature of a batch with a handful of array
operations and the drift statistics run over all features at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np

from mlmon.core.baseline import OTHER, SCORE_EDGES, SCORE_GRID, BaselineError, numeric_profile
from mlmon.core.binning import BinLookup
from mlmon.core.config import FeatureSpec, ModelConfig
from mlmon.stats import divergences as stats
from mlmon.stats import embedding, multivariate


@dataclass
class NumericBlock:
    """Numeric columns binned on each column's fine grid; bin i is (grid[i-1], grid[i]], the
    last bin is (grid[-1], +inf). Rows are padded with +inf edges to a common width."""

    names: tuple[str, ...]
    edges: np.ndarray  # [F, E] fine interior edges, +inf padded
    n_bins: np.ndarray  # [F] real bins per column (len(grid) + 1)
    points: np.ndarray  # [F, B] representative point of each bin (Wasserstein)
    coarse_edges: tuple[tuple[float, ...], ...]  # histogram `le` bounds per column
    coarse_pos: tuple[np.ndarray, ...]  # fine-bin index whose upper edge is each coarse edge
    coarse_index: np.ndarray  # [F, C] coarse_pos padded with the last fine bin
    ref_counts: np.ndarray  # [F, B] reference counts on the fine grid
    ref_missing: np.ndarray  # [F]
    ref_sum: np.ndarray  # [F]
    mins: np.ndarray  # [F]
    maxs: np.ndarray  # [F]
    stds: np.ndarray  # [F]

    @cached_property
    def ref_coarse(self) -> np.ndarray:
        """The reference's coarse counts (drift compares every window with them)."""
        return self.coarse_counts(self.ref_counts)

    @cached_property
    def ref_ks_cdf(self) -> np.ndarray:
        """The reference's CDF on the fine grid as `stats.ks` computes it (cumulative counts
        over the total), so a window equal to the reference gives exactly 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.cumsum(self.ref_counts, axis=-1) / self.ref_counts.sum(axis=-1)[:, None]

    @cached_property
    def ref_fine_cdf(self) -> np.ndarray:
        """The reference's cumulative proportions on the fine grid as `stats.wasserstein`
        computes them."""
        return np.cumsum(stats.reference_proportions(self.ref_counts), axis=-1)

    @cached_property
    def point_gaps(self) -> np.ndarray:
        return np.diff(self.points, axis=-1)

    @cached_property
    def ref_coarse_p(self) -> np.ndarray:
        return stats.reference_proportions(self.ref_coarse)

    @cached_property
    def spread(self) -> np.ndarray:
        return np.where(self.stds > 0, self.stds, 1.0)

    @property
    def width(self) -> int:
        return self.edges.shape[1] + 1

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_profiles(cls, names: list[str], profiles: list[dict[str, Any]]) -> NumericBlock:
        e_max = max((len(p["grid"]) for p in profiles), default=0)
        f = len(names)
        edges = np.full((f, e_max), np.inf)
        points = np.zeros((f, e_max + 1))
        ref = np.zeros((f, e_max + 1))
        coarse_pos = []
        for i, p in enumerate(profiles):
            grid = np.asarray(p["grid"], dtype=np.float64)
            k = grid.size
            edges[i, :k] = grid
            ref[i, : k + 1] = p["grid_counts"]
            ext = np.concatenate(([min(p["min"], grid[0])], grid, [max(p["max"], grid[-1])]))
            pts = (ext[:-1] + ext[1:]) / 2.0
            points[i, : k + 1] = pts
            points[i, k + 1 :] = pts[-1]  # padding adds zero distance
            coarse_pos.append(np.searchsorted(grid, np.asarray(p["edges"]), side="left"))
        c_max = max((len(p) for p in coarse_pos), default=0)
        coarse_index = np.full((f, c_max), e_max, dtype=np.int64)
        for i, pos in enumerate(coarse_pos):
            coarse_index[i, : len(pos)] = pos
        return cls(
            names=tuple(names),
            edges=edges,
            n_bins=np.asarray([len(p["grid"]) + 1 for p in profiles], dtype=np.int64),
            points=points,
            coarse_edges=tuple(tuple(p["edges"]) for p in profiles),
            coarse_pos=tuple(coarse_pos),
            coarse_index=coarse_index,
            ref_counts=ref,
            ref_missing=np.asarray([p["missing"] for p in profiles], dtype=np.float64),
            ref_sum=np.asarray([p["sum"] for p in profiles], dtype=np.float64),
            mins=np.asarray([p["min"] for p in profiles], dtype=np.float64),
            maxs=np.asarray([p["max"] for p in profiles], dtype=np.float64),
            stds=np.asarray([p["std"] for p in profiles], dtype=np.float64),
        )

    # Up to this many comparisons, binning compares every value with every edge in one
    # vectorised step; beyond, the cell lookup of `binning` is cheaper.
    BROADCAST_LIMIT = 100_000

    def bin(self, x: np.ndarray) -> np.ndarray:
        """Fine-bin index of every value of ``x`` ([N, F], NaN for missing; the index of a
        NaN is meaningless, callers mask it): the number of the column's edges below the
        value, which is ``searchsorted(edges, x, side="left")``."""
        if x.shape[0] * self.edges.size <= self.BROADCAST_LIMIT:
            return np.count_nonzero(self.edges[None, :, :] < x[:, :, None], axis=-1)
        return self.lookup.bin(x)

    @cached_property
    def lookup(self) -> BinLookup:
        return BinLookup(self.edges)

    def coarse_cumulative(self, counts: np.ndarray) -> np.ndarray:
        """[F, C] cumulative counts at each column's coarse edges (the histogram buckets
        without +Inf); padding columns repeat the column's total."""
        cum = np.cumsum(counts, axis=-1)
        return np.take_along_axis(cum, self.coarse_index, axis=-1)

    def coarse_counts(self, counts: np.ndarray) -> np.ndarray:
        """[F, C + 1] counts per coarse bucket (zero-padded), from fine-grid counts."""
        cum = self.coarse_cumulative(counts)
        total = counts.sum(axis=-1, keepdims=True)
        return np.diff(np.concatenate([np.zeros_like(total), cum, total], axis=-1), axis=-1)


@dataclass
class CategoricalBlock:
    """Categorical columns: each column's vocabulary, then its ``__other__`` bucket."""

    names: tuple[str, ...]
    vocab: tuple[dict[str, int], ...]
    categories: tuple[tuple[str, ...], ...]  # vocabulary + (OTHER,) per column
    ref_counts: np.ndarray  # [G, K] padded with zeros
    ref_missing: np.ndarray  # [G]

    @cached_property
    def ref_p(self) -> np.ndarray:
        """The reference's proportions (drift compares every window with them)."""
        return stats.reference_proportions(self.ref_counts)

    @property
    def width(self) -> int:
        return self.ref_counts.shape[1] if len(self.names) else 1

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_profiles(cls, names: list[str], profiles: list[dict[str, Any]]) -> CategoricalBlock:
        cats = [(*tuple(c for c, _ in p["categories"]), OTHER) for p in profiles]
        k = max((len(c) for c in cats), default=1)
        ref = np.zeros((len(names), k))
        for i, p in enumerate(profiles):
            counts = [n for _, n in p["categories"]] + [p["other"]]
            ref[i, : len(counts)] = counts
        return cls(
            names=tuple(names),
            vocab=tuple({c: j for j, c in enumerate(cs[:-1])} for cs in cats),
            categories=tuple(cats),
            ref_counts=ref,
            ref_missing=np.asarray([p["missing"] for p in profiles], dtype=np.float64),
        )

    def other_index(self, j: int) -> int:
        return len(self.categories[j]) - 1


@dataclass(frozen=True)
class JointModel:
    """The baseline's multivariate model (`stats.multivariate`), with the schema's numeric
    and categorical columns reordered to the order it was fitted in."""

    reconstruction: multivariate.Reconstruction
    num_order: np.ndarray
    cat_order: np.ndarray

    def errors(self, x_num: np.ndarray, cat_idx: np.ndarray) -> np.ndarray:
        if self.in_order:  # the usual case: no copy to reorder the columns
            return multivariate.errors(self.reconstruction, x_num, cat_idx)
        return multivariate.errors(
            self.reconstruction, x_num[:, self.num_order], cat_idx[:, self.cat_order]
        )

    @cached_property
    def in_order(self) -> bool:
        return bool(
            (self.num_order == np.arange(len(self.num_order))).all()
            and (self.cat_order == np.arange(len(self.cat_order))).all()
        )


def _joint(num: list[str], cat: list[str], profile: dict[str, Any]) -> JointModel | None:
    """The multivariate model when the profile has one over exactly these features (a
    config that monitors a subset of the baseline's features has none)."""
    doc = profile.get("multivariate")
    if (
        not doc
        or sorted(doc["numeric"]) != sorted(num)
        or sorted(doc["categorical"]) != sorted(cat)
    ):
        return None
    return JointModel(
        multivariate.Reconstruction.from_dict(doc),
        np.array([num.index(n) for n in doc["numeric"]], dtype=np.int64),
        np.array([cat.index(n) for n in doc["categorical"]], dtype=np.int64),
    )


@dataclass(frozen=True)
class Embedding:
    """An embedding feature and the baseline's projection of it; its components are the
    numeric block's columns ``columns`` (named ``<name>.pc1`` ...)."""

    name: str
    projection: embedding.Projection
    columns: slice

    @cached_property
    def axes(self) -> np.ndarray:
        """[dim, k] the axes as the right operand of one matrix product per batch."""
        return np.ascontiguousarray(self.projection.components.T)

    @cached_property
    def offset(self) -> np.ndarray:
        """[k] the projected mean, so projecting is ``x @ axes - offset``."""
        return self.projection.mean @ self.axes

    @property
    def dim(self) -> int:
        return self.projection.dim

    def errors(self, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """[n] the vectors' reconstruction errors; NaN when the embedding is not scored."""
        if not self.projection.scored:
            return np.full(x.shape[0], np.nan)
        return self.projection.errors(x, coords)


@dataclass
class ModelSchema:
    config: ModelConfig
    profile: dict[str, Any]
    numeric: NumericBlock
    categorical: CategoricalBlock
    classes: tuple[str, ...]  # empty for regression
    positive_class: str | None
    prediction_numeric: NumericBlock | None  # regression
    prediction_classes: CategoricalBlock | None  # classification
    score: NumericBlock | None  # classification
    feature_kinds: dict[str, str]
    positive_index: int = -1  # binary models: index of the positive class
    calibration_rates: np.ndarray | None = None  # observed positive rate per score bucket
    error_scale: float = 1.0  # regression: the baseline's spread of predictions
    # The baseline's global attribution (mean |attribution|) of each feature, numeric then
    # categorical (NaN: no attributions in the training data); None: none at all.
    attribution_baseline: np.ndarray | None = None
    joint: JointModel | None = None  # multivariate drift's baseline model
    # embedding features; their components are the numeric block's last columns, after the
    # `inputs_numeric` columns events carry themselves
    embeddings: tuple[Embedding, ...] = ()
    inputs_numeric: tuple[str, ...] = ()

    @property
    def attribution_names(self) -> tuple[str, ...]:
        """The features an event's ``attributions`` may name, in the order of their counts."""
        return (*self.numeric.names, *self.categorical.names)

    def recalibrate(self, p: np.ndarray) -> np.ndarray:
        """Binary scores mapped to the baseline's observed positive rate of their score
        bucket (where the baseline has rows in it); unchanged without a table."""
        if self.calibration_rates is None or self.score is None:
            return p
        bins = np.searchsorted(np.asarray(self.score.coarse_edges[0]), p, side="left")
        rate = self.calibration_rates[bins]
        return np.where(np.isnan(rate), p, rate)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def baseline_hash(self) -> str:
        return self.profile["hash"]

    @property
    def baseline_rows(self) -> int:
        return int(self.profile["rows"])

    @property
    def baseline_created(self) -> float | None:
        """When the baseline was built or last re-baselined (seconds since the epoch), or
        None for a profile that does not say (built before profiles carried a date)."""
        text = self.profile.get("rebaselined_at") or self.profile.get("created_at")
        if not isinstance(text, str):
            return None
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None


@dataclass
class _Outputs:
    """What a model puts out, as the schema holds it."""

    classes: tuple[str, ...] = ()
    positive: str | None = None
    numeric: NumericBlock | None = None  # regression
    classes_block: CategoricalBlock | None = None  # classification
    score: NumericBlock | None = None  # classification


def resolve(model: ModelConfig, profile: dict[str, Any]) -> ModelSchema:
    """Join a model's config with its baseline; raise BaselineError when they disagree."""
    errors: list[str] = []
    pf = profile["features"]
    if profile.get("task") not in (None, model.task):
        errors.append(
            f"baseline was built for task {profile['task']!r}, config says {model.task!r}"
        )
    kinds = _feature_kinds(model, pf, profile.get("embeddings") or {}, errors)
    if model.task == "regression":
        outputs = _regression_outputs(profile, errors)
    else:
        outputs = _class_outputs(model, profile, errors)
    if errors:
        raise BaselineError("; ".join(errors))
    return _schema(model, profile, kinds, outputs)


def _feature_kinds(
    model: ModelConfig, pf: dict[str, Any], embedded: dict[str, Any], errors: list[str]
) -> dict[str, str]:
    """Each configured feature's kind (every feature of the baseline when the config lists
    none), as the baseline has it; a feature missing from the baseline or of another kind
    is an error. An embedding's components are not features of their own here."""
    specs = model.features
    if specs is None:
        parts = {n for e, d in embedded.items() for n in embedding.component_names(e, _k(d))}
        names = [n for n in pf if n not in parts] + list(embedded)
        specs = tuple(FeatureSpec(name=n, kind=None) for n in names)
    kinds: dict[str, str] = {}
    for s in specs:
        if s.name in embedded or s.kind == "embedding":
            if _embedding_matches(s, embedded.get(s.name), errors):
                kinds[s.name] = "embedding"
            continue
        if s.name not in pf:
            errors.append(f"feature {s.name!r} is not in the baseline")
            continue
        kind = pf[s.name]["kind"]
        if s.kind is not None and s.kind != kind:
            errors.append(
                f"feature {s.name!r} is {s.kind} in the config but {kind} in the baseline"
            )
        kinds[s.name] = kind
    return kinds


def _k(doc: dict[str, Any]) -> int:
    return int(doc["components"])


def _embedding_matches(spec: FeatureSpec, doc: dict[str, Any] | None, errors: list[str]) -> bool:
    """Whether the baseline holds the embedding the config describes."""
    name = spec.name
    if doc is None:
        errors.append(f"feature {name!r} is not an embedding in the baseline")
        return False
    if spec.kind not in (None, "embedding"):
        errors.append(
            f"feature {name!r} is {spec.kind} in the config but embedding in the baseline"
        )
        return False
    for key in ("dim", "components"):
        want = getattr(spec, key)
        if want is not None and want != doc[key]:
            errors.append(
                f"embedding {name!r} has {key} {want} in the config but {doc[key]} in the baseline"
            )
            return False
    return True


def _reference_prediction(profile: dict[str, Any]) -> dict[str, Any] | None:
    """The baseline's prediction column, or its label column when it has no predictions."""
    return profile.get("prediction") or profile.get("label")


def _regression_outputs(profile: dict[str, Any], errors: list[str]) -> _Outputs:
    ref_pred = _reference_prediction(profile)
    if ref_pred is None:
        errors.append("a regression baseline needs a prediction or label column")
        return _Outputs()
    return _Outputs(numeric=NumericBlock.from_profiles(["prediction"], [ref_pred]))


def _class_outputs(model: ModelConfig, profile: dict[str, Any], errors: list[str]) -> _Outputs:
    """The classes (from the config, else the baseline), the positive one of a binary model,
    the baseline's class counts, and the score buckets (fixed, empty without reference
    scores)."""
    ref_pred = _reference_prediction(profile)
    out = _Outputs()
    if model.classes is not None:
        out.classes = model.classes
    elif ref_pred is not None:
        out.classes = tuple(c for c, _ in ref_pred["categories"])
    classes = out.classes
    if len(classes) < 2:
        errors.append(
            "classes are unknown: list them in the config or add a prediction "
            "or label column to the training data"
        )
    elif model.task == "binary" and len(classes) != 2:
        errors.append(f"a binary model needs two classes, the baseline has {len(classes)}")
    else:
        out.positive = (model.positive_class or classes[-1]) if model.task == "binary" else None
        out.classes_block = _class_block(classes, ref_pred)
    score_profile = profile.get("score") or _empty_score_profile()
    out.score = NumericBlock.from_profiles(["score"], [score_profile])
    return out


def _class_block(classes: tuple[str, ...], ref_pred: dict[str, Any] | None) -> CategoricalBlock:
    """The predicted classes as one categorical column, with the baseline's counts."""
    ref = {c: n for c, n in (ref_pred["categories"] if ref_pred else [])}
    return CategoricalBlock.from_profiles(
        ["prediction"],
        [
            {
                "categories": [[c, ref.get(c, 0)] for c in classes],
                "other": ref_pred["other"] if ref_pred else 0,
                "missing": 0,
            }
        ],
    )


def _calibration_rates(model: ModelConfig, profile: dict[str, Any]) -> np.ndarray | None:
    """A binary model's observed positive rate per score bucket of the baseline (NaN where
    a bucket is empty), when the config asks to recalibrate and the baseline has the table."""
    cal = profile.get("calibration")
    if not (cal and model.task == "binary" and model.performance.recalibrate):
        return None
    counts = np.asarray(cal["counts"], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.asarray(cal["positives"]) / counts, np.nan)


def _schema(
    model: ModelConfig, profile: dict[str, Any], kinds: dict[str, str], outputs: _Outputs
) -> ModelSchema:
    pf = profile["features"]
    inputs = [n for n, k in kinds.items() if k == "numeric"]
    cat = [n for n, k in kinds.items() if k == "categorical"]
    embeddings = _embeddings(inputs, [n for n, k in kinds.items() if k == "embedding"], profile)
    parts = [embedding.component_names(e.name, e.projection.k) for e in embeddings]
    num = inputs + [n for names in parts for n in names]
    pred_num, positive = outputs.numeric, outputs.positive
    return ModelSchema(
        config=model,
        profile=profile,
        numeric=NumericBlock.from_profiles(num, [pf[n] for n in num]),
        categorical=CategoricalBlock.from_profiles(cat, [pf[n] for n in cat]),
        classes=outputs.classes,
        positive_class=positive,
        prediction_numeric=pred_num,
        prediction_classes=outputs.classes_block,
        score=outputs.score,
        feature_kinds=kinds,
        positive_index=outputs.classes.index(positive) if positive is not None else -1,
        calibration_rates=_calibration_rates(model, profile),
        error_scale=float(pred_num.stds[0])
        if pred_num is not None and pred_num.stds[0] > 0
        else 1.0,
        attribution_baseline=_attribution_baseline([*num, *cat], profile),
        joint=_joint(inputs, cat, profile),
        embeddings=embeddings,
        inputs_numeric=tuple(inputs),
    )


def _embeddings(
    inputs: list[str], names: list[str], profile: dict[str, Any]
) -> tuple[Embedding, ...]:
    """The embeddings in config order, each with its columns after the inputs' columns."""
    out = []
    start = len(inputs)
    for name in names:
        projection = embedding.Projection.from_dict(profile["embeddings"][name])
        out.append(Embedding(name, projection, slice(start, start + projection.k)))
        start += projection.k
    return tuple(out)


def _attribution_baseline(names: list[str], profile: dict[str, Any]) -> np.ndarray | None:
    attributions = profile.get("attributions")
    if not attributions:
        return None
    return np.array([attributions.get(n, {}).get("mean_abs", np.nan) for n in names])


def _empty_score_profile() -> dict[str, Any]:
    # No reference scores: keep the fixed score buckets so live scores are still exported;
    # with an empty reference no score drift is computed.
    p = numeric_profile(np.array([0.5]), 0, 10, 100, edges=SCORE_EDGES, fixed_grid=SCORE_GRID)
    p["grid_counts"] = [0] * len(p["grid_counts"])
    p.update(count=0, sum=0.0, min=0.0, max=1.0, std=0.0)
    return p
