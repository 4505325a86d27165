"""Small value parsers shared by the config and the wire: durations, listen and upstream
addresses, and the text form of classes, categories and groups."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_UPSTREAM_RE = re.compile(r"^http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?/?$")


def parse_duration(value: Any) -> float:
    """`90`, `90s`, `15m`, `1h`, `7d` -> seconds; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 15m or 1h")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be a positive duration")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value.strip())
        if m:
            seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
            if seconds > 0:
                return seconds
    raise ValueError(f"expected a duration such as 60s, 15m or 1h, got {value!r}")


def label_text(value: Any) -> str:
    """Classes, categories and groups arrive as JSON strings, ints or booleans; they are
    compared as text (booleans as JSON spells them)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if type(value) is str else str(value)


def split_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` or `[v6]:PORT` -> (host, port)."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected a port number in {address!r}")
    return host or "127.0.0.1", int(port)


def upstream_address(url: str) -> tuple[str, int]:
    """`http://HOST[:PORT]` -> (host, port); plain HTTP, no path."""
    m = _UPSTREAM_RE.match(url or "") if isinstance(url, str) else None
    if not m:
        raise ValueError(f"expected http://HOST[:PORT] (plain HTTP, no path), got {url!r}")
    port = int(m.group(2) or 80)
    if not 0 < port <= 65535:
        raise ValueError(f"port out of range in {url!r}")
    return m.group(1).strip("[]"), port
