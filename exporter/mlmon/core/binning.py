"""Fine-bin indices of a whole batch at once: for every column j of ``x``,
``searchsorted(edges[j], x[:, j], side="left")``, in a fixed number of vectorised steps
instead of one binary search per column.

Each column's edge range is cut into equal cells, with a table of how many edges lie
below each cell's start. A value's cell gives a first guess of its index, which is then
moved down or up while it breaks the definition (the edge below must be smaller than the
value, the edge at the index not). The guess only has to be close: the answer is exact
whatever the rounding, because the correction checks the definition itself. With four
cells per edge a value is typically at most one step away; the values still off after a
few rounds (edges crowded into one cell) are finished by a binary search of their column.
"""

from __future__ import annotations

import numpy as np

_CELLS_PER_EDGE = 4
_ROUNDS = 4
_LOWEST = np.finfo(np.float64).min


class BinLookup:
    """The lookup tables of one block's edges [F, E] (rows increasing, +inf padded)."""

    def __init__(self, edges: np.ndarray) -> None:
        f, e = edges.shape
        self.edges = edges
        self.width = e + 2  # each row with a -inf before and a +inf after its edges
        ext = np.full((f, self.width), np.inf)
        ext[:, 0] = -np.inf
        ext[:, 1:-1] = edges
        self.ext = ext.ravel()
        self.base = np.arange(f) * self.width
        finite = np.isfinite(edges)
        last = np.maximum(finite.sum(axis=1) - 1, 0)
        self.lo = np.where(finite[:, 0], edges[:, 0], 0.0)
        hi = np.where(finite[np.arange(f), last], edges[np.arange(f), last], self.lo)
        self.cells = max(_CELLS_PER_EDGE * e, 1)
        with np.errstate(over="ignore", invalid="ignore"):
            span = hi - self.lo  # inf when the edges span more than a float can
        self.step = np.where(np.isfinite(span) & (span > 0), span / self.cells, 1.0)
        starts = self.lo[:, None] + np.arange(self.cells)[None, :] * self.step[:, None]
        table = np.empty((f, self.cells), dtype=np.int64)
        for j in range(f):
            table[j] = edges[j].searchsorted(starts[j], side="left")
        self.table = table.ravel()
        self.table_base = np.arange(f) * self.cells

    def bin(self, x: np.ndarray) -> np.ndarray:
        """The index of every value of ``x`` [N, F] (NaN: meaningless, callers mask it)."""
        x = np.maximum(x, _LOWEST)  # -inf has no edge below it either; NaN stays NaN
        g, settled = self.rounds(x)
        return g if settled else self._finish(x, g)

    def rounds(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """The guesses of ``x`` [N, F] (no -inf) after the correction rounds, and whether
        every one of them is settled (then each is exact)."""
        with np.errstate(over="ignore", invalid="ignore"):
            c = (x - self.lo) / self.step
        np.clip(c, 0, self.cells - 1, out=c)
        c[np.isnan(c)] = 0
        g = self.table[self.table_base + c.astype(np.int64)]
        pos = self.base + g  # ext[pos] is the edge below index g, ext[pos + 1] the edge at it
        ext = self.ext
        for _ in range(_ROUNDS):
            down = ext[pos] >= x
            up = ext[pos + 1] < x
            if not (down.any() or up.any()):
                return pos - self.base, True
            pos += up
            pos -= down
        return pos - self.base, False

    def _finish(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Binary searches for the columns with a value still off after the rounds."""
        ext = self.ext.reshape(-1, self.width)
        rows = np.arange(x.shape[1])[None, :]
        off = (ext[rows, g] >= x) | (ext[rows, g + 1] < x)
        for j in np.flatnonzero(off.any(axis=0)):
            g[:, j] = self.edges[j].searchsorted(x[:, j], side="left")
        return g
