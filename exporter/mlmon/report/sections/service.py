"""The service summary: inferences, error ratio and p99 latency over the whole range (from the
exporter's counters and latency histogram, summed over replicas), per version and in all,
and their 5-minute rates over time against the model's limits."""

from __future__ import annotations

from mlmon.report.blocks import Figure, Figures, Section, Table
from mlmon.report.context import Context, cell, plot, text
from mlmon.report.series import Series
from mlmon.report.units import fmt

ALL = "all versions"


def build(ctx: Context) -> Section:
    totals = totals_by_version(ctx)
    error_limit = ctx.threshold("error_ratio_max")
    latency_limit = ctx.threshold("latency_p99_seconds_max")
    limits = {"error": _last(error_limit), "p99": _last(latency_limit)}
    blocks = [_figures(totals.get(ALL, {}), limits), _table(totals, limits)]
    sel = ctx.selector()
    blocks += [
        plot(
            "Inferences per second (5-minute rate)",
            "rate",
            ctx.over_range(f"model_version:mlmon_inference_requests:rate5m{sel}"),
            ("version",),
        ),
        plot(
            "Error ratio (5-minute rate)",
            "share",
            ctx.over_range(f"model_version:mlmon_inference_error_ratio:ratio_rate5m{sel}"),
            ("version",),
            error_limit,
            "error_ratio_max",
        ),
        plot(
            "p99 latency (5-minute rate)",
            "seconds",
            ctx.over_range(f"model_version:mlmon_inference_latency_seconds:p99_rate5m{sel}"),
            ("version",),
            latency_limit,
            "latency_p99_seconds_max",
        ),
    ]
    intro = (
        "Counted from the exporter's counters over the whole range, summed over replicas "
        "(Prometheus' increase(); inferences before its first scrape of a replica are not "
        "counted). The limits are the model's thresholds at the end of the range."
    )
    return Section("service", "Service", tuple(blocks), intro)


def totals_by_version(ctx: Context) -> dict[str, dict[str, float]]:
    """{version or ALL: {requests, failures, p99}} over the range, at its end."""
    sel, r = ctx.selector(), ctx.span.selector
    out: dict[str, dict[str, float]] = {}
    for key, counter in (
        ("requests", "mlmon_inference_requests_total"),
        ("failures", "mlmon_inference_failures_total"),
    ):
        for s in ctx.at_end(f"sum by (version) (increase({counter}{sel}[{r}]))"):
            _put(out, s.label("version"), key, s)
            out.setdefault(ALL, {})[key] = out.get(ALL, {}).get(key, 0.0) + (s.last or 0.0)
    bucket = f"increase(mlmon_inference_latency_seconds_bucket{sel}[{r}])"
    for by in ("version, le", "le"):
        for s in ctx.at_end(f"histogram_quantile(0.99, sum by ({by}) ({bucket}))"):
            _put(out, s.label("version") if "version" in by else ALL, "p99", s)
    return out


def _put(out: dict[str, dict[str, float]], version: str, key: str, s: Series) -> None:
    if s.last is not None:
        out.setdefault(version, {})[key] = s.last


def _last(s: Series | None) -> float | None:
    return s.last if s is not None else None


def error_ratio(row: dict[str, float]) -> float | None:
    requests = row.get("requests", 0.0)
    return row.get("failures", 0.0) / requests if requests > 0 else None


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and value > limit


def _figures(row: dict[str, float], limits: dict[str, float | None]) -> Figures:
    ratio, p99 = error_ratio(row), row.get("p99")
    return Figures(
        (
            Figure("Inferences", fmt(row.get("requests"), "count"), row.get("requests")),
            Figure(
                "Error ratio",
                fmt(ratio, "share"),
                ratio,
                _above(ratio, limits["error"]),
                f"limit {fmt(limits['error'], 'share')}",
            ),
            Figure(
                "p99 latency",
                fmt(p99, "seconds"),
                p99,
                _above(p99, limits["p99"]),
                f"limit {fmt(limits['p99'], 'seconds')}",
            ),
        )
    )


def _table(totals: dict[str, dict[str, float]], limits: dict[str, float | None]) -> Table:
    order = sorted(v for v in totals if v != ALL) + ([ALL] if ALL in totals else [])
    rows = []
    for version in order:
        row = totals[version]
        ratio, p99 = error_ratio(row), row.get("p99")
        rows.append(
            (
                text(version or "(none)"),
                cell(row.get("requests"), "count"),
                cell(row.get("failures", 0.0 if row.get("requests") else None), "count"),
                cell(ratio, "share", _above(ratio, limits["error"])),
                cell(p99, "seconds", _above(p99, limits["p99"])),
            )
        )
    columns = ("version", "inferences", "failed", "error ratio", "p99 latency")
    return Table(columns, tuple(rows), caption="Over the whole range")
