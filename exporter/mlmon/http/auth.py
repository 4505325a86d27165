"""Bearer tokens for the HTTP API: read from the environment or from files, compared in
constant time, never logged (an audit line names a token by a short hash)."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from mlmon.core.config import Config, ConfigError


@dataclass(frozen=True)
class Tokens:
    admin: str | None = None  # None: the admin API is off
    ingest: str | None = None  # None: ingest is open
    metrics: str | None = None  # None: /metrics is open


def _read(env: str, path: Path | None, errors: list[str], key: str) -> str | None:
    """A token from the environment variable ``env`` (first) or the file ``path``. A token
    that is empty or only whitespace is an error, never an open door."""
    value = os.environ.get(env)
    if value is not None:
        if not value.strip():
            errors.append(f"{env} is set but empty")
            return None
        return value.strip()
    if path is None:
        return None
    try:
        value = path.read_text().strip()
    except OSError as e:
        errors.append(f"server.{key}: cannot read {path}: {e.strerror}")
        return None
    if not value:
        errors.append(f"server.{key}: {path} is empty")
        return None
    return value


def load_tokens(config: Config) -> Tokens:
    errors: list[str] = []
    s = config.server
    tokens = Tokens(
        admin=_read("MLMON_ADMIN_TOKEN", s.admin_token_file, errors, "admin_token_file"),
        ingest=_read("MLMON_INGEST_TOKEN", s.ingest_token_file, errors, "ingest_token_file"),
        metrics=_read("MLMON_METRICS_TOKEN", s.metrics_token_file, errors, "metrics_token_file"),
    )
    if errors:
        raise ConfigError(errors, str(config.path or "config"))
    return tokens


def check(authorization: str | None, token: str) -> int:
    """200 when the header carries the token, 401 when it carries none, 403 otherwise. The
    scheme is matched case-insensitively (RFC 9110 §11.1); the token in constant time."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return 401
    return 200 if hmac.compare_digest(given.strip().encode(), token.encode()) else 403


def fingerprint(token: str) -> str:
    """A short, non-reversible name for a token, for audit lines."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]
