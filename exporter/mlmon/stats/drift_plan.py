"""The reference side of one model's drift tests, laid out once per baseline, so that
testing a window (`mlmon.stats.drift.evaluate`) is a fixed number of numpy calls on
fixed-size arrays however many features the model has.

Every test is one row of a padded matrix. Rows, in order: the numeric outputs (a
regression model's value, a classifier's score), the numeric features, the categorical
features, the predicted class; so the numeric rows come first, the features are one
run of rows in report order, and the categorical rows come last. Columns: a leading
zero, then the row's fine bins (its categories for a categorical row), then zeros up to
the widest row. Bins empty on both sides contribute nothing to any statistic, so a
padded row gives the values its own block gives; the leading zero starts the cumulative
counts at 0, so a row's PSI buckets (a numeric row's coarse buckets, a categorical row's
categories) are differences of one gather from them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlmon.core.schema import CategoricalBlock, ModelSchema, NumericBlock
from mlmon.stats.divergences import PSI_EPSILON

# The per-row values an evaluation computes, in the order of the matrix that holds them.
VALUES = ("psi", "js", "ks", "wasserstein", "chi2", "p_value")
# Each is reported once its row holds min_samples values; a test's statistic and p-value
# only when the reference and the window both have values.
_NEEDS_BOTH_SIDES = ("ks", "chi2", "p_value")


@dataclass(frozen=True)
class _Rows:
    """One block's rows: which of the window's count blocks (numeric, categorical,
    prediction, score) holds their live counts, and the output they are (None: features)."""

    block: NumericBlock | CategoricalBlock
    numeric: bool
    source: int
    output: str | None = None

    @property
    def count(self) -> int:
        return len(self.block)

    @property
    def width(self) -> int:
        return self.block.width

    def bucket_upper(self) -> np.ndarray:
        """[rows, buckets] each PSI bucket's last fine bin (a numeric row's coarse buckets,
        the last one ending at the row's last bin; a categorical row's categories)."""
        if not self.numeric:
            return np.tile(np.arange(self.width), (self.count, 1))
        last = np.full((self.count, 1), self.width - 1)
        return np.concatenate([self.block.coarse_index, last], axis=1)

    def ref_buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """[rows, buckets] the reference's counts and proportions per PSI bucket, as the
        block holds them."""
        b = self.block
        if isinstance(b, NumericBlock):
            return b.ref_coarse, b.ref_coarse_p
        return b.ref_counts, b.ref_p


def _row_blocks(schema: ModelSchema) -> list[_Rows]:
    rows: list[_Rows] = []
    if schema.prediction_numeric is not None:
        rows.append(_Rows(schema.prediction_numeric, True, 2, "value"))
    if schema.score is not None and schema.score.ref_counts.sum() > 0:
        rows.append(_Rows(schema.score, True, 3, "score"))
    rows.append(_Rows(schema.numeric, True, 0))
    rows.append(_Rows(schema.categorical, False, 1))
    if schema.prediction_classes is not None:
        rows.append(_Rows(schema.prediction_classes, False, 2, "class"))
    return rows


def _stack(parts: list[np.ndarray], width: int, fill: float = 0.0) -> np.ndarray:
    """Stack [rows, w] parts into [all rows, width], each row continued with ``fill``."""
    out = np.full((sum(p.shape[0] for p in parts), width), fill)
    r = 0
    for p in parts:
        out[r : r + p.shape[0], : p.shape[1]] = p
        r += p.shape[0]
    return out


def _lead(a: np.ndarray) -> np.ndarray:
    """The leading zero column."""
    return np.pad(a, ((0, 0), (1, 0)))


class DriftPlan:
    """Where each count block of a window goes in the matrix, and the reference-side
    constants of every row, for one schema."""

    def __init__(self, schema: ModelSchema, shapes: tuple[tuple[int, ...], ...]) -> None:
        self._check_shapes(schema, shapes)
        self._shapes = tuple(tuple(s) for s in shapes)
        self._blocks = (
            schema.numeric,
            schema.categorical,
            schema.prediction_numeric,
            schema.prediction_classes,
            schema.score,
        )
        blocks = _row_blocks(schema)
        starts = np.cumsum([0] + [b.count for b in blocks]).tolist()
        self.rows = starts[-1]
        self.width = 1 + max(b.width for b in blocks)  # + the leading zero
        # (count block, rows, columns) of each block's counts in the matrix
        self.fills = tuple(
            (b.source, slice(r, r + b.count), slice(1, 1 + b.width))
            for b, r in zip(blocks, starts, strict=False)
            if b.count
        )
        numeric = [b for b in blocks if b.numeric]
        self.numeric_rows = sum(b.count for b in numeric)  # rows [0, numeric_rows)
        self._layout_buckets(blocks)
        self._layout_numeric(numeric)
        self._layout_categorical([b for b in blocks if not b.numeric])
        self._layout_report(schema, blocks, starts)

    @staticmethod
    def _check_shapes(schema: ModelSchema, shapes: tuple[tuple[int, ...], ...]) -> None:
        """The count blocks must be shaped as `core.state.Layout` lays them out."""
        pn, pc, sc = schema.prediction_numeric, schema.prediction_classes, schema.score
        pwidth = pn.width if pn is not None else (pc.width if pc is not None else 1)
        want = (
            (len(schema.numeric), schema.numeric.width),
            (len(schema.categorical), schema.categorical.width),
            (1, pwidth),
            (1, sc.width if sc is not None else 1),
        )
        if tuple(map(tuple, shapes)) != want:
            raise ValueError(f"window counts shaped {shapes}, the schema's are {want}")

    def _layout_buckets(self, blocks: list[_Rows]) -> None:
        """``bucket_index`` gathers each row's cumulative counts at its PSI bucket bounds
        from the flat matrix, starting at the leading zero; ``ref_p`` and the like are the
        reference's side of PSI and Jensen–Shannon per bucket."""
        upper = [1 + b.bucket_upper() for b in blocks]
        self.buckets = max(u.shape[1] for u in upper)
        bounds = _stack([_lead(u) for u in upper], self.buckets + 1, self.width - 1)
        self.bucket_index = (bounds + np.arange(self.rows)[:, None] * self.width).astype(np.int64)
        p = _stack([b.ref_buckets()[1] for b in blocks], self.buckets)
        self.ref_p, self.ref_p_pos, self.ref_p_floor = p, p > 0, np.maximum(p, PSI_EPSILON)

    def _layout_numeric(self, blocks: list[_Rows]) -> None:
        """KS and Wasserstein of the numeric rows: the reference's CDF as `ks` computes it
        (beyond a row's last bin it stays at its total), the gaps between the bins'
        points (zero in padding), the baseline's spread, the reference's sizes."""
        w = self.width
        cdf = [_lead(b.block.ref_ks_cdf) for b in blocks]
        self.ref_cdf = np.concatenate(
            [np.pad(c, ((0, 0), (0, w - c.shape[1])), mode="edge") for c in cdf]
        ).reshape(-1, w)
        gaps = _stack([_lead(b.block.point_gaps) for b in blocks], w)
        spread = np.concatenate([b.block.spread for b in blocks])
        self.spread_gaps = gaps / spread[:, None]
        self.n1_num = np.concatenate([b.block.ref_counts.sum(axis=-1) for b in blocks])

    def _layout_categorical(self, blocks: list[_Rows]) -> None:
        """Chi-squared of the categorical rows: the reference's counts and sizes."""
        self.ref_counts_cat = _stack([b.block.ref_counts for b in blocks], self.buckets)
        self.n1_cat = np.concatenate([b.block.ref_counts.sum(axis=-1) for b in blocks])
        self.n1_cat_col = self.n1_cat[:, None]
        self.n1_pos = np.concatenate([self.n1_num, self.n1_cat]) > 0

    def _layout_report(self, schema: ModelSchema, blocks: list[_Rows], starts: list[int]) -> None:
        self.needs_both = np.array([[v in _NEEDS_BOTH_SIDES] for v in VALUES])
        first = sum(b.count for b in blocks if b.output is not None and b.numeric)
        f_num, f_cat = len(schema.numeric), len(schema.categorical)
        self.features = slice(first, first + f_num + f_cat)
        self.feature_numeric = np.arange(f_num + f_cat) < f_num
        self._floors: dict[tuple[float, float], np.ndarray] = {}
        self.names = schema.numeric.names + schema.categorical.names
        self.kinds = ("numeric",) * f_num + ("categorical",) * f_cat
        self.tests = ("ks",) * f_num + ("chi2",) * f_cat
        row = {b.output: (r, b.numeric) for b, r in zip(blocks, starts, strict=False)}
        # the outputs in the order reports list them
        self.outputs = tuple(
            (name, *row[name]) for name in ("value", "class", "score") if name in row
        )

    def floors(self, ks_min: float, psi_min: float) -> np.ndarray:
        """[features] each feature's effect-size floor (KS for numeric, PSI for
        categorical), kept per pair of thresholds (they change only at runtime updates)."""
        key = (ks_min, psi_min)
        floor = self._floors.get(key)
        if floor is None:
            floor = np.where(self.feature_numeric, ks_min, psi_min)
            floor.flags.writeable = False
            if len(self._floors) > 16:
                self._floors.clear()
            self._floors[key] = floor
        return floor

    def matches(self, schema: ModelSchema, live: tuple[np.ndarray, ...]) -> bool:
        """Whether this plan was laid out for these blocks (a schema's arrays never
        change, so identity says it) and count blocks of these shapes."""
        b = self._blocks
        return (
            b[0] is schema.numeric
            and b[1] is schema.categorical
            and b[2] is schema.prediction_numeric
            and b[3] is schema.prediction_classes
            and b[4] is schema.score
            and self._shapes == (live[0].shape, live[1].shape, live[2].shape, live[3].shape)
        )


_lock = threading.Lock()
_plans: dict[int, tuple[weakref.ref, DriftPlan]] = {}


def plan_for(schema: ModelSchema, live: tuple[np.ndarray, ...]) -> DriftPlan:
    """The schema's plan for windows of these count blocks (numeric, categorical,
    prediction, score), built at the first call and kept while the schema lives; a
    re-baselined model has a new schema, hence a new plan."""
    sid = id(schema)
    entry = _plans.get(sid)
    if entry is not None and entry[0]() is schema and entry[1].matches(schema, live):
        return entry[1]
    plan = DriftPlan(schema, tuple(a.shape for a in live))
    forget: Callable[[weakref.ref], None] = lambda _: _plans.pop(sid, None)  # noqa: E731
    with _lock:
        _plans[sid] = (weakref.ref(schema, forget), plan)
    return plan
