"""Which Host headers and Origins the service answers: the guard against DNS rebinding and cross-site forms.

A page on any web site can make the browser send requests to 127.0.0.1. Two things give such a request
away: after a DNS rebinding its Host header carries the attacker's name, and a cross-site form or
fetch carries the attacker's Origin. A token-less local service (Jupyter's default setup) must refuse
both; tools without a browser (curl, MinerU's client) send no Origin and are not affected.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
EVERY_INTERFACE = ("0.0.0.0", "::", "")
ANY_HOST = "*"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def allowed_hosts_for(bind_host: str, extra: tuple[str, ...] = ()) -> Optional[tuple[str, ...]]:
    """The localhost names, the bind address and `extra`; None (any name) when bound to every interface
    without `extra`, or when `extra` holds '*'."""
    if ANY_HOST in extra or (bind_host.strip("[]") in EVERY_INTERFACE and not extra):
        return None
    names = [*LOCAL_NAMES, *extra]
    if bind_host.strip("[]") not in EVERY_INTERFACE:
        names.append(bind_host)
    return tuple(dict.fromkeys(name.strip("[]").lower() for name in names))


def host_name(header: str) -> str:
    """'Example.COM:8000' -> 'example.com', '[::1]:8000' -> '::1' (the name without the port)."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") > 1:  # a bare IPv6 address
        return value
    return value.split(":", 1)[0].rstrip(".")


def host_allowed(header: Optional[str], allowed: Optional[tuple[str, ...]]) -> bool:
    """Whether a Host header names this service (allowed None: any; '*.example.com' matches its subdomains)."""
    if allowed is None:
        return True
    name = host_name(header or "")
    return any(name == pattern or (pattern.startswith("*.") and name.endswith(pattern[1:])) for pattern in allowed)


def _origin_key(scheme: str, netloc: str) -> tuple[str, str, int]:
    parts = urlsplit(f"{scheme}://{netloc}")
    port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    return scheme, (parts.hostname or "").rstrip("."), port


def same_origin(origin: str, host_header: str, scheme: str) -> bool:
    """Whether a browser's Origin header is this service itself (scheme, host and port all alike)."""
    try:
        parts = urlsplit(origin.strip())
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return False  # 'null' (sandboxed frames, file: pages) and anything odd
        return _origin_key(parts.scheme, parts.netloc) == _origin_key(scheme, host_header.strip())
    except ValueError:  # a port that is not a number
        return False
