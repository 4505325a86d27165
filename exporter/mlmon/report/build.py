"""From the command's arguments to a Report: which models (all that Prometheus has in the
range, at most MAX_MODELS), and each model's sections in order."""

from __future__ import annotations

import logging
import time

from mlmon.report.blocks import ModelReport, Report
from mlmon.report.context import Context
from mlmon.report.fetch import Prometheus, ReportError
from mlmon.report.limits import MAX_MODELS
from mlmon.report.sections import SECTIONS, alerts
from mlmon.report.span import Span

log = logging.getLogger("mlmon.report")


def models_in_range(client: Prometheus, span: Span) -> list[str]:
    """Every model that exported mlmon_model_info at some point of the range."""
    found = client.instant(
        f"count by (model) (last_over_time(mlmon_model_info[{span.selector}]))", span.end
    )
    return sorted({s.label("model") for s in found if s.label("model")})


def choose_models(found: list[str], requested: list[str] | None) -> tuple[list[str], list[str]]:
    """(models to report, models left out by MAX_MODELS)."""
    if requested:
        missing = [m for m in requested if m not in found]
        if missing:
            known = ", ".join(found) or "none"
            raise ReportError(
                f"no data in the range for model(s) {', '.join(missing)} "
                f"(models in the range: {known})"
            )
        if len(requested) > MAX_MODELS:
            raise ReportError(f"at most {MAX_MODELS} models per report")
        return list(dict.fromkeys(requested)), []
    if not found:
        raise ReportError("Prometheus has no mlmon_model_info series in the range")
    return found[:MAX_MODELS], found[MAX_MODELS:]


def model_report(client: Prometheus, span: Span, model: str) -> ModelReport:
    ctx = Context(client, span, model)
    started = time.monotonic()
    sections = tuple(build(ctx) for build in SECTIONS)
    log.info("model %s: %d queries in %.1fs", model, len(ctx.queries), time.monotonic() - started)
    return ModelReport(model, sections, tuple(ctx.queries))


def build_report(client: Prometheus, span: Span, requested: list[str] | None) -> Report:
    models, left_out = choose_models(models_in_range(client, span), requested)
    report = Report(client.url, span, time.time(), [model_report(client, span, m) for m in models])
    report.other.append(alerts.unlabelled(client, span))
    report.unreported_models = left_out
    if span.step_raised:
        report.notes.append(
            f"The step was raised from {span.requested_step:g}s to "
            f"{span.step:g}s to keep each series within the point limit."
        )
    report.notes += client.notes
    report.queries = client.queries
    return report
