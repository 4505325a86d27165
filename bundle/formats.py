"""Numbers as a person writes them, in rule files and dashboard text alike."""

from __future__ import annotations


def number(value: float) -> str:
    """0.1 as 0.1, 500.0 as 500."""
    return f"{value:g}"


def percent(ratio: float) -> str:
    """0.05 as 5%."""
    return number(ratio * 100) + "%"
