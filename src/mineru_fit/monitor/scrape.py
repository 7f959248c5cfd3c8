"""Fetching engines' /metrics over HTTP: the monitor's only network edge. Never raises for a dead engine."""

from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from mineru_fit.errors import UsageError
from mineru_fit.monitor.engines import parse_metrics
from mineru_fit.monitor.snapshot import EngineState
from mineru_fit.runrecords import RunRecord

logger = logging.getLogger(__name__)

# An engine busy with a batch still answers /metrics in milliseconds; a second means trouble,
# and the monitor must not stall its refresh waiting for it.
DEFAULT_TIMEOUT_S = 1.0


def metrics_url(url: str) -> str:
    """The /metrics URL for what a user typed: a base URL, host:port, or the metrics URL itself."""
    text = url.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--engine-url {url!r} is not an http(s) URL — e.g. http://127.0.0.1:30000")
    path = parts.path.rstrip("/")
    if not path:
        path = "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def engine_targets(records: Iterable[RunRecord], urls: Sequence[str]) -> list[tuple[str, Optional[RunRecord]]]:
    """Every engine to scrape, once each: run records first, then --engine-url values."""
    targets: dict[str, Optional[RunRecord]] = {}
    for record in records:
        targets.setdefault(metrics_url(record.metrics_url), record)
    for url in urls:
        targets.setdefault(metrics_url(url), None)
    return list(targets.items())


def scrape(client: httpx.Client, url: str, record: Optional[RunRecord] = None) -> EngineState:
    """One engine's state; an engine that does not answer is the state "unreachable: ..."."""
    kind = record.engine if record is not None else "unknown"
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        logger.info("scraping %s failed: %r", url, exc)
        return EngineState(metrics_url=url, kind=kind, record=record, error=f"unreachable: {_describe(exc)}")
    if response.status_code != 200:
        return EngineState(metrics_url=url, kind=kind, record=record,
                           error=f"unreachable: HTTP {response.status_code} from {url}")
    return parse_metrics(response.text, url, record)


def scrape_all(client: httpx.Client, targets: Sequence[tuple[str, Optional[RunRecord]]]) -> tuple[EngineState, ...]:
    return tuple(scrape(client, url, record) for url, record in targets)


def make_client(timeout_s: float = DEFAULT_TIMEOUT_S) -> httpx.Client:
    # Local engines only: proxies from the environment would route 127.0.0.1 elsewhere.
    return httpx.Client(timeout=timeout_s, trust_env=False)


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or host unknown ({exc})" if str(exc) else "connection refused"
    return f"{type(exc).__name__}: {exc}"
