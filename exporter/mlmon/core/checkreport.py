"""The result of `mlmon check` for a CI log (plain-text tables) and for machines (one JSON
document with the same rows). Both are built from the same `CheckResult`, every number
printed with `number` (four significant digits), so the two always agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlmon.core.batchcheck import CheckResult
from mlmon.core.conditions import PER_FEATURE, Check

FEATURE_COLUMNS = (
    ("feature", "feature"),
    ("kind", "kind"),
    ("present", "present"),
    ("test", "test"),
    ("p_value", "p-value"),
    ("p_value_adjusted", "p-corrected"),
    ("score", "score"),
    ("drifted", "drifted"),
    ("missing_ratio", "missing"),
    ("outside_ratio", "outside"),
)
METRIC_HEADER = ("metric", "subject", "value", "status", "fails if")
RESULTS = {0: "PASS", 1: "FAIL", 2: "UNTESTED"}


def number(x: Any) -> str:
    """A cell: '-' for nothing, yes/no, integers as they are, floats to 4 digits."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x) or "-"


def table(header: tuple[str, ...], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    return [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [list(header), *rows]
    ]


def metric_rows(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.metric not in PER_FEATURE]


def text(result: CheckResult) -> str:
    """The whole report: a heading, per version the feature and metric tables, then the
    conditions that hold and the result."""
    out = heading(result)
    for version, stats in result.stats["versions"].items():
        out += ["", f"version {version}: {stats['window_events']} event(s)"]
        rows = [f for f in result.features if f["version"] == version]
        out += table(
            tuple(h for _, h in FEATURE_COLUMNS),
            [[number(f[k]) for k, _ in FEATURE_COLUMNS] for f in rows],
        )
        checks = [c for c in metric_rows(result.checks) if c.version == version]
        if checks:
            out.append("")
            out += table(METRIC_HEADER, [metric_cells(c) for c in checks])
    out += footer(result)
    return "\n".join(out) + "\n"


def metric_cells(c: Check) -> list[str]:
    return [c.metric, c.subject or "-", number(c.value), c.status, c.fails_if or "-"]


def heading(result: CheckResult) -> list[str]:
    s, i = result.stats, result.intake
    labels = f"labels: {outcomes(i.labels)}" if i.labels_given else "no labels"
    lines = [
        f"mlmon check: model {result.model}, {Path(result.data).name}: {i.events} event(s), "
        f"{labels}",
        f"baseline {s['baseline']['hash']} ({s['baseline']['rows']} rows); "
        f"correction {s['correction']}, drift.min_samples {s['min_samples']}",
    ]
    if i.labels_given and i.evicted:
        lines.append(
            f"{i.evicted} prediction(s) left the label store (labels.max_entries) before "
            "their label came: raise it to join every label of a file this long"
        )
    if i.unknown_features:
        names = ", ".join(sorted(i.unknown_features))  # bounded as the exporter bounds them
        lines.append(f"ignored: feature(s) the model does not have: {names}")
    return lines


def outcomes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items()) if n) or "none"


def footer(result: CheckResult) -> list[str]:
    held = result.conditions
    out = ["", f"conditions that hold: {len(held)}"]
    out += [f"  FAIL {c.alert} version={c.version}{where(c)}: {c.detail}" for c in held]
    out += [f"  UNTESTED {why}" for why in result.untested]
    code = result.exit_code
    out.append(f"result: {RESULTS[code]} (exit {code})")
    return out


def where(c: Check) -> str:
    """What a condition is about, as the alert's labels name it (feature, output, the
    group as attribute=group, the champion)."""
    if c.metric in ("drifted_features_ratio", "multivariate_drift") or not c.subject:
        return ""
    label = {
        "prediction_drift": "output=",
        "accuracy_difference": "",
    }.get(c.metric, "feature=" if c.metric in (*PER_FEATURE, "embedding_drift") else "")
    return f" {label}{c.subject}"


def document(result: CheckResult) -> dict[str, Any]:
    """The same result as JSON: every condition, feature row and metric row."""
    s, i = result.stats, result.intake
    return {
        "model": result.model,
        "data": result.data,
        "labels": result.labels,
        "events": i.events,
        "label_outcomes": dict(i.labels),
        "label_store_evicted": i.evicted,
        "unknown_features": dict(i.unknown_features),
        "baseline": s["baseline"],
        "correction": s["correction"],
        "min_samples": s["min_samples"],
        "thresholds": s["thresholds"],
        "result": RESULTS[result.exit_code].lower(),
        "exit_code": result.exit_code,
        "conditions": [_check_json(c) | {"detail": c.detail} for c in result.conditions],
        "untested": result.untested,
        "features": result.features,
        "metrics": [_check_json(c) for c in metric_rows(result.checks)],
    }


def _check_json(c: Check) -> dict[str, Any]:
    return {
        "alert": c.alert or None,
        "version": c.version,
        "metric": c.metric,
        "subject": c.subject or None,
        "value": c.value,
        "fails_if": c.fails_if or None,
        "status": c.status,
    }


def write_json(result: CheckResult, path: str | Path) -> None:
    Path(path).write_text(json.dumps(document(result), indent=2, allow_nan=False) + "\n")
