"""Prometheus rule files as a backtest needs them: the recording rules in dependency levels
(a rule reads only raw series and the outputs of lower levels), and the alerting rules.

A rule's dependencies are the recorded names among the metric names of its expression,
found by a small lexer that skips string literals and comments; recorded names contain a
colon, which no function, keyword or label name can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`|#[^\n]*""")


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class RulesError(ValueError):
    pass


def duration(text: Any) -> float:
    """A Prometheus duration (``90s``, ``1h30m``, ``0s``) in seconds."""
    s = str(text).strip()
    parts = _DURATION.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise RulesError(f"not a Prometheus duration: {text!r}")
    return float(sum(int(n) * _UNIT[u] for n, u in parts))


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str
    labels: dict[str, str]
    interval: float | None  # the group's own evaluation interval, seconds
    group: str


@dataclass(frozen=True)
class Alerting:
    alert: str
    expr: str
    for_seconds: float
    labels: dict[str, str]
    interval: float | None
    group: str


@dataclass
class RuleSet:
    recording: list[Recording] = field(default_factory=list)
    alerting: list[Alerting] = field(default_factory=list)

    def levels(self) -> list[list[Recording]]:
        """The recording rules by dependency level, each level in file order."""
        produced = {r.record for r in self.recording}
        pending = list(self.recording)
        out: list[list[Recording]] = []
        while pending:
            # a name is ready once none of its rules (one name may have several) waits
            waiting = {r.record for r in pending}
            ready = [r for r in pending if not names_in(r.expr) & produced & waiting]
            if not ready:
                cycle = ", ".join(sorted(waiting))
                raise RulesError(f"recording rules that depend on each other: {cycle}")
            out.append(ready)
            pending = [r for r in pending if r not in ready]
        return out


def names_in(expr: str) -> set[str]:
    """The identifiers of a PromQL expression outside string literals and comments."""
    return set(_NAME.findall(_STRING.sub(" ", expr)))


def load(paths: list[Path]) -> RuleSet:
    """The rules of the given files, or of every *.yml/*.yaml file of the given folders."""
    files: list[Path] = []
    for p in paths:
        files += sorted([*p.glob("*.yml"), *p.glob("*.yaml")]) if p.is_dir() else [p]
    if not files:
        raise RulesError(f"no rule files in {', '.join(map(str, paths))}")
    rules = RuleSet()
    for f in files:
        try:
            doc = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise RulesError(f"{f}: {e}") from None
        for g in (doc or {}).get("groups") or []:
            _group(rules, g, f)
    return rules


def _group(rules: RuleSet, g: dict[str, Any], f: Path) -> None:
    interval = duration(g["interval"]) if g.get("interval") else None
    name = str(g.get("name", ""))
    for r in g.get("rules") or []:
        labels = {str(k): str(v) for k, v in (r.get("labels") or {}).items()}
        if "record" in r:
            rules.recording.append(Recording(r["record"], r["expr"], labels, interval, name))
        elif "alert" in r:
            hold = duration(r["for"]) if r.get("for") else 0.0
            rules.alerting.append(Alerting(r["alert"], r["expr"], hold, labels, interval, name))
        else:
            raise RulesError(f"{f}: group {name}: a rule with neither record nor alert")
