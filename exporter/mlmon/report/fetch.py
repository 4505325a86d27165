"""The Prometheus client: instant and range queries over the HTTP API (`/api/v1/query`,
`/api/v1/query_range`) with the standard library, each bounded in time and in size."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlencode, urlsplit

from mlmon import __version__
from mlmon.report.limits import MAX_RESPONSE_BYTES, MAX_SERIES_PER_QUERY, QUERY_TIMEOUT_SECONDS
from mlmon.report.series import Series, from_json


class ReportError(ValueError):
    """Prometheus could not be asked, or refused: the message says which query and why."""


def promql_string(value: str) -> str:
    """A label value as a PromQL string literal (PromQL takes JSON's escapes)."""
    return json.dumps(value)


class Prometheus:
    def __init__(self, url: str, timeout: float = QUERY_TIMEOUT_SECONDS) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ReportError(f"--prometheus takes http://HOST:PORT[/PATH], got {url!r}")
        if not timeout > 0:
            raise ReportError("--query-timeout must be positive")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.queries = 0
        self.notes: list[str] = []  # limits that cut an answer short

    def instant(self, promql: str, at: float) -> list[Series]:
        return self._series(self._call("query", {"query": promql, "time": f"{at:.3f}"}), promql)

    def range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step:g}",
        }
        return self._series(self._call("query_range", params), promql)

    def _series(self, data: dict, promql: str) -> list[Series]:
        kind, result = data.get("resultType"), data.get("result") or []
        if kind == "scalar":
            result = [{"metric": {}, "value": result}]
        elif kind not in ("matrix", "vector"):
            raise ReportError(f"unexpected {kind!r} answer to {promql!r}")
        if len(result) > MAX_SERIES_PER_QUERY:
            self.notes.append(
                f"{len(result)} series answered {promql!r}; the first {MAX_SERIES_PER_QUERY} "
                "were used"
            )
            result = result[:MAX_SERIES_PER_QUERY]
        series = [from_json(item) for item in result]
        return sorted((s for s in series if s.points), key=lambda s: sorted(s.labels.items()))

    def _call(self, endpoint: str, params: dict[str, str]) -> dict:
        """POST (so a long query never meets a URL length limit); Prometheus gets the same
        timeout as the socket, so it gives up on its own first."""
        self.queries += 1
        body = urlencode({**params, "timeout": f"{self.timeout:g}s"}).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v1/{endpoint}",
            data=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": f"mlmon-report/{__version__}",
            },
        )
        query = params["query"]
        try:
            with urllib.request.urlopen(request, timeout=self.timeout + 5) as reply:
                raw = reply.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as e:
            raise ReportError(f"Prometheus answered {e.code} to {query!r}: {_reason(e)}") from None
        except TimeoutError:
            raise ReportError(f"no answer within {self.timeout + 5:g}s to {query!r}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ReportError(f"cannot reach Prometheus at {self.url}: {reason}") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ReportError(f"the answer to {query!r} is over {MAX_RESPONSE_BYTES} bytes")
        return _data(raw, query)


def _reason(e: urllib.error.HTTPError) -> str:
    """Prometheus' own `error` field, else the start of the body."""
    try:
        raw = e.read(64 * 1024)
    except OSError:
        return str(e.reason)
    try:
        return str(json.loads(raw).get("error") or e.reason)
    except (ValueError, AttributeError):
        return raw[:200].decode("utf-8", "replace") or str(e.reason)


def _data(raw: bytes, query: str) -> dict:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ReportError(f"the answer to {query!r} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise ReportError(f"Prometheus refused {query!r}: {error}")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise ReportError(f"the answer to {query!r} has no data")
    return data
