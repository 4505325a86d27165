"""`mlmon backtest`: when each alert would have fired over a past range.

PromQL is only ever evaluated by Prometheus. A private sandbox Prometheus reads the raw
series from the source through remote read (the source is only read). The recording rules
are evaluated over the range level by level (`rules.RuleSet.levels`): each rule with
query_range on the sandbox at its group's interval, aligned to it; the results become
blocks (`promtool tsdb create-blocks-from openmetrics`) added to the sandbox's storage
before the next level reads them. (`promtool tsdb create-blocks-from rules` cannot chain
rules, and evaluates each group at its rule manager offset, so every level would lag the
one below by up to an interval.) Then every alert expression is evaluated over the range
the same way, and `for:` is applied as the rule manager applies it: a label set is pending
from the first evaluation that returns it, fires once it has been returned at every
evaluation for `for:`, and resolves at the first evaluation that does not return it.

Live, each group runs at its own offset within its interval, so a rule reading another
group's output sees it up to an interval late; the backtest evaluates every level at the
same aligned instants, so a chain of n levels can fire up to n intervals earlier than it
did live.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlmon.history.backfill import create_blocks
from mlmon.history.openmetrics import gauge_lines
from mlmon.history.rules import Alerting, Recording, RulesError, RuleSet

# Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS = 10_000
QUERY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Firing:
    alert: str
    labels: dict[str, str]
    pending_at: float  # the first evaluation that returned the label set
    fired_at: float
    resolved_at: float | None  # None: still firing at the end of the range
    value: float  # the expression's value when it fired


def firings(alert: Alerting, present: dict[tuple, dict[float, float]], grid: list[float]):
    """The firings of one alert from, per label set, its values at the evaluation times
    that returned it (``grid``: every evaluation time of the range, in order)."""
    out = []
    for key, values in present.items():
        labels = {**dict(key), **alert.labels, "alertname": alert.alert}
        since: float | None = None
        fired: tuple[float, float] | None = None
        for t in grid:
            if t not in values:
                if fired is not None:
                    out.append(Firing(alert.alert, labels, since, *fired[:1], t, fired[1]))
                since, fired = None, None
                continue
            since = t if since is None else since
            if fired is None and t - since >= alert.for_seconds:
                fired = (t, values[t])
        if fired is not None:
            out.append(Firing(alert.alert, labels, since, fired[0], None, fired[1]))
    return sorted(out, key=lambda f: (f.fired_at, f.alert, sorted(f.labels.items())))


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """/api/v1/query_range in pieces of at most MAX_POINTS evaluations."""
    result: dict[tuple, dict] = {}
    t = start
    while t <= end:
        stop = min(end, t + (MAX_POINTS - 1) * step)
        params = {"query": expr, "start": t, "end": stop, "step": step}
        req = f"{url}/api/v1/query_range?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(req, timeout=QUERY_TIMEOUT) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RulesError(f"query failed: {body.get('error', body)}: {expr}")
        for s in body["data"]["result"]:
            key = tuple(sorted(s["metric"].items()))
            result.setdefault(key, {}).update({float(ts): float(v) for ts, v in s["values"]})
        t = stop + step
    return [{"labels": dict(k), "values": v} for k, v in result.items()]


def grid(start: float, end: float, step: float) -> list[float]:
    """The evaluation times of a range: multiples of ``step`` from ``start`` (aligned)."""
    first = math.ceil(start / step) * step
    return [first + i * step for i in range(int((end - first) // step) + 1)]


def alert_timeline(url: str, alert: Alerting, start: float, end: float, step: float):
    every = alert.interval or step
    times = grid(start, end, every)
    if not times:
        return []
    present = {
        tuple(sorted((k, v) for k, v in s["labels"].items() if k != "__name__")): s["values"]
        for s in query_range(url, alert.expr, times[0], times[-1], every)
    }
    return firings(alert, present, times)


class Sandbox:
    """A private Prometheus that reads the source's raw series by remote read, and to whose
    storage the recorded series' blocks are added."""

    def __init__(self, source: str, workdir: Path, step: float) -> None:
        self.workdir, self.step = workdir, step
        self.config = {
            "global": {"evaluation_interval": f"{int(step)}s"},
            "remote_read": [{"url": source.rstrip("/") + "/api/v1/read", "read_recent": True}],
        }
        self.server = self._start()

    def _start(self) -> Any:
        from mlmon.demo import stack  # the same process helpers the tests and the demo use

        return stack.start_prometheus(
            self.config, self.workdir, extra_args=("--storage.tsdb.retention.time=100y",)
        )

    @property
    def url(self) -> str:
        return self.server.url

    def add_blocks(self, blocks: Path) -> None:
        """Move promtool's blocks into the storage and restart to load them."""
        self.server.stop()
        data = self.workdir / "data"
        for b in sorted(p for p in blocks.iterdir() if p.is_dir()):
            shutil.move(str(b), str(data / b.name))
        self.server = self._start()

    def stop(self) -> None:
        self.server.stop()


def record_level(sandbox: Sandbox, level: list[Recording], start: float, end: float) -> None:
    """Evaluate one level of recording rules over the range on the sandbox (query_range at
    each rule's group interval, aligned to it, the rule's labels added), and add the
    results to its storage as blocks (`promtool tsdb create-blocks-from openmetrics`)."""
    tmp = sandbox.workdir / "level"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    by_name: dict[str, dict[tuple, dict[float, float]]] = {}
    for r in level:
        every = r.interval or sandbox.step
        times = grid(start, end, every)
        if not times:
            continue
        found = by_name.setdefault(r.record, {})
        for series in query_range(sandbox.url, r.expr, times[0], times[-1], every):
            labels = {k: v for k, v in series["labels"].items() if k != "__name__"}
            labels.update(r.labels)
            found.setdefault(tuple(sorted(labels.items())), {}).update(series["values"])
    lines = [
        line
        for name, found in by_name.items()
        if found
        for line in gauge_lines(name, ((dict(k), sorted(v.items())) for k, v in found.items()))
    ]
    if not lines:
        return
    (tmp / "level.om").write_text("\n".join(lines) + "\n# EOF\n")
    create_blocks(tmp / "level.om", tmp / "blocks")
    sandbox.add_blocks(tmp / "blocks")


@dataclass(frozen=True)
class BacktestRequest:
    prometheus: str
    rules: list[Path]
    start: float
    end: float
    step: float = 60.0


def run(rules: RuleSet, req: BacktestRequest, progress: Callable[[str], None]) -> list[Firing]:
    if not req.end > req.start:
        raise RulesError("--to must be after --from")
    with tempfile.TemporaryDirectory(prefix="mlmon-backtest-") as tmp:
        sandbox = Sandbox(req.prometheus, Path(tmp), req.step)
        try:
            levels = rules.levels()
            for i, level in enumerate(levels, start=1):
                progress(f"recording rules, level {i} of {len(levels)}: {len(level)} rules")
                record_level(sandbox, level, req.start, req.end)
            progress(f"alerts: {len(rules.alerting)}")
            out: list[Firing] = []
            for alert in rules.alerting:
                out += alert_timeline(sandbox.url, alert, req.start, req.end, req.step)
        finally:
            sandbox.stop()
    return sorted(out, key=lambda f: (f.fired_at, f.alert, sorted(f.labels.items())))


def to_json(firings_: list[Firing], req: BacktestRequest) -> dict[str, Any]:
    return {
        "from": req.start,
        "to": req.end,
        "step": req.step,
        "firings": [asdict(f) for f in firings_],
    }
