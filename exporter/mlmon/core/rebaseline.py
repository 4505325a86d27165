"""Re-baselining from the live window: the current window of a version becomes the model's
reference distributions.

Bin edges, the percentile grid and category vocabularies stay as they are (the window holds
counts on those bins, not raw values), so the layout -- and the state -- survive. The
reference counts, missing counts, sums and means come from the window; min, max and the
spread used to normalise Wasserstein stay the baseline's. The previous profile is kept next
to the new one (``<name>.json.<timestamp>.bak``) and can be restored.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np

from mlmon.core.baseline import content_hash, load_profile, write_profile
from mlmon.core.schema import NumericBlock
from mlmon.core.state import Layout


def _numeric(p: dict[str, Any], counts: np.ndarray, missing: float, total: float) -> None:
    k = len(p["grid"]) + 1
    p["grid_counts"] = [int(c) for c in counts[:k]]
    n = int(counts[:k].sum())
    p["count"], p["missing"], p["sum"] = n, int(missing), float(total)
    p["mean"] = float(total / n) if n else p["mean"]


def _attributions(out: dict[str, Any], schema: Any, events: np.ndarray, sums: np.ndarray) -> None:
    """The window's global attributions become the baseline's (the old ones go when the
    window carried none: they would no longer describe the baseline's data)."""
    carried = {
        name: {"events": int(events[j]), "mean_abs": float(sums[j] / events[j])}
        for j, name in enumerate(schema.attribution_names)
        if events[j] > 0
    }
    out.pop("attributions", None)
    if carried:
        out["attributions"] = carried


def profile_from_window(
    profile: dict[str, Any], schema: Any, layout: Layout, window: np.ndarray, fwindow: np.ndarray
) -> dict[str, Any]:
    out = copy.deepcopy(profile)
    v = Layout.view
    num, cat = schema.numeric, schema.categorical
    bins, miss, sums = (
        v(window, layout.num_bins),
        v(window, layout.num_missing),
        v(fwindow, layout.num_sum),
    )
    for j, name in enumerate(num.names):
        _numeric(out["features"][name], bins[j], miss[j], sums[j])
    cbins, cmiss = v(window, layout.cat_bins), v(window, layout.cat_missing)
    for j, name in enumerate(cat.names):
        p = out["features"][name]
        k = len(cat.categories[j])
        counts = cbins[j, :k]
        p["categories"] = [[c, int(counts[i])] for i, (c, _) in enumerate(p["categories"])]
        p["other"], p["missing"] = int(counts[k - 1]), int(cmiss[j])
        p["count"] = int(counts.sum())
    pred = v(window, layout.pred_bins)[0]
    if isinstance(schema.prediction_numeric, NumericBlock) and out.get("prediction"):
        _numeric(
            out["prediction"],
            pred,
            window[layout.pred_missing.start],
            fwindow[layout.pred_sum.start],
        )
    elif schema.prediction_classes is not None and out.get("prediction"):
        p = out["prediction"]
        p["categories"] = [[c, int(pred[i])] for i, (c, _) in enumerate(p["categories"])]
        p["other"] = int(pred[len(p["categories"])])
        p["count"] = int(pred.sum())
    if schema.score is not None and out.get("score"):
        _numeric(out["score"], v(window, layout.score_bins)[0], 0, fwindow[layout.score_sum.start])
    _attributions(out, schema, v(window, layout.attr_n), v(fwindow, layout.attr_abs))
    out["rows"] = int(window[layout.ok_events.start])
    out["rebaselined_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["hash"] = content_hash(out)
    return out


def replace_profile(path: Path, profile: dict[str, Any]) -> Path:
    """Keep the current profile as a timestamped backup, then write the new one."""
    backup = path.with_name(
        f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}{time.time_ns() % 1_000_000:06d}.bak"
    )
    backup.write_bytes(path.read_bytes())
    write_profile(profile, path)
    return backup


def latest_backup(path: Path) -> Path | None:
    backups = sorted(path.parent.glob(f"{path.name}.*.bak"))
    return backups[-1] if backups else None


def restore_latest(path: Path) -> tuple[dict[str, Any], Path]:
    """Put the most recent backup back in place (it is then removed); raises FileNotFoundError
    when there is none."""
    backup = latest_backup(path)
    if backup is None:
        raise FileNotFoundError(f"no backup of {path.name}")
    profile = load_profile(backup)
    write_profile(profile, path)
    backup.unlink()
    return profile, backup
