"""Adversarial inputs: every test under tests/adversarial/ is one kind of hostile or careless input, and the run
ends with a table of kinds tried and how the software answered.

Each test is summarised from its node id (file, test, parameters) and its outcome, so any plain pytest
test here is picked up. A test may add what the software answered with pytest's own fixture:
`record_property("answer", "413 JSON")`; the `answered` fixture below does that for an HTTP response and
checks what every answer must be (never a 5xx, never a traceback, JSON whenever it is an error). The
table is printed at the end of the run and written to test-artifacts/adversarial-summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).parent
SUMMARY = HERE.parent.parent / "test-artifacts" / "adversarial-summary.json"
_rows: list[dict[str, str]] = []


def _kind(nodeid: str) -> tuple[str, str]:
    """('upload names', 'traversal[../../x]') from 'tests/adversarial/test_upload_names.py::test_traversal[../../x]'."""
    path, _, test = nodeid.partition("::")
    group = Path(path).stem.removeprefix("test_").replace("_", " ")
    return group, test.removeprefix("test_")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "adversarial" not in Path(report.nodeid.partition("::")[0]).parts:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        group, kind = _kind(report.nodeid)
        answer = str(dict(report.user_properties).get("answer", ""))
        if report.skipped and isinstance(report.longrepr, tuple):
            answer = answer or str(report.longrepr[2])[:80]
        _rows.append({"group": group, "kind": kind, "outcome": report.outcome, "answer": answer})


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _rows:
        return
    width = min(60, max(len(r["kind"]) for r in _rows))
    terminalreporter.section("adversarial inputs: kinds tried and outcomes")
    group = None
    for row in sorted(_rows, key=lambda r: r["group"]):
        if row["group"] != group:
            group = row["group"]
            terminalreporter.write_line(f"{group}:")
        terminalreporter.write_line(f"  {row['kind'][:width]:<{width}}  {row['outcome']:<7}  {row['answer']}")
    counts = {o: sum(1 for r in _rows if r["outcome"] == o) for o in ("passed", "failed", "skipped")}
    terminalreporter.write_line(f"{len(_rows)} kinds: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n))
    try:
        SUMMARY.parent.mkdir(exist_ok=True)
        SUMMARY.write_text(json.dumps({"kinds": _rows, "counts": counts}, indent=2))
    except OSError as exc:  # a read-only checkout still gets the table above
        terminalreporter.write_line(f"(could not write {SUMMARY.name}: {exc.strerror})")


@pytest.fixture
def answered(record_property: Callable[[str, Any], None]) -> Callable[..., Any]:
    """answered(response) -> response: records '<status> <type>' and checks the answer is no crash."""

    def check(response: Any, *, raw: bytes = b"") -> Any:
        status = response.status_code
        kind = response.headers.get("content-type", "").split(";")[0] or "no body"
        record_property("answer", f"{status} {kind}")
        text = response.text if response is not None else raw.decode("latin-1")
        assert status < 500 or status == 503, f"{status}: {text[:300]}"
        assert "Traceback" not in text and 'File "/' not in text, text[:300]
        if status >= 400:
            assert kind == "application/json", f"{status} {kind}: {text[:200]}"
            assert isinstance(response.json().get("detail"), (str, list))
        return response

    return check


@pytest.fixture(scope="package")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(base URL, core) of one parse service on loopback for the hostile inputs: small limits, a short body
    timeout, the CLI's default Host allow-list."""
    pytest.importorskip("fastapi")
    pytest.importorskip("docvortex")
    from fixtures.service import running_service

    from mineru_fit.service import Limits, ServiceConfig
    from mineru_fit.service.hosts import allowed_hosts_for
    from mineru_fit.units import MIB

    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("adversarial"), workers=2, job_timeout_s=60,
                           limits=Limits(max_upload_bytes=4 * MIB, max_pages=50, max_files=5),
                           allowed_hosts=allowed_hosts_for("127.0.0.1"), body_timeout_s=1.0)
    with running_service(config) as base:
        yield base, config
