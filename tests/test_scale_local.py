"""`parse --ray` on a local Ray cluster (ray.init(num_cpus=2), loopback only): the same files as a plain
parse, file for file, for flash and for the vlm tier (a tiny random Qwen2-VL); checkpoints resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Ray's token authentication, on for every cluster here; read from the environment when ray is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pytest.importorskip("docvortex")
pytest.importorskip("reportlab")

from fixtures.documents import many_pages_pdf, scanned_png  # noqa: E402

from mineru_fit.parsing import ParseOptions, TierChoice, VlmSetup, parse_documents  # noqa: E402
from mineru_fit.parsing.sample import write_sample_pdf  # noqa: E402
from mineru_fit.planner.inputs import PlanRequest  # noqa: E402
from mineru_fit.scale import RayJob, parse_on_ray  # noqa: E402
from mineru_fit.scale.cluster import restore_signal_handlers  # noqa: E402

VOLATILE = {"seconds"}  # wall time per page: the only field two runs of the same pages may differ in
DPI = 72
OUTPUT_CAP = 12


@pytest.fixture(scope="module")
def local_ray() -> Any:
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.2", include_dashboard=False,
             log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()
        restore_signal_handlers(handlers)  # ray.init's SIGTERM handler would outlive it, into other tests


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_sample_pdf(folder / "sample.pdf")
    many_pages_pdf(folder / "long.pdf", 7)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 this is not a PDF at all")
    (folder / "scan.png").write_bytes(scanned_png())
    return folder


def _normal(path: Path, volatile: frozenset[str]) -> Any:
    """A file's content, with per-page wall times (and `volatile` fields) dropped from the JSON that records them."""
    data = path.read_bytes()
    if path.suffix != ".json" or not (path.name.endswith("_pages.json") or path.parent.name == ".checkpoints"):
        return data
    value = json.loads(data)
    rows = value if isinstance(value, list) else [value.get("record", value)]
    for row in rows:
        for key in VOLATILE | volatile:
            row.pop(key, None)
    return value


def tree(root: Path, *volatile: str) -> dict[str, Any]:
    return {str(p.relative_to(root)): _normal(p, frozenset(volatile)) for p in sorted(root.rglob("*")) if p.is_file()}


def test_flash_on_ray_writes_the_same_files_as_a_plain_parse(local_ray, inputs, tmp_path) -> None:
    plain = parse_documents([inputs], ParseOptions(out_dir=tmp_path / "plain"), TierChoice("flash", "test"))
    # Three pages per CPU task: the 7-page PDF is split over three tasks and still reads the same.
    result = parse_on_ray([inputs], ParseOptions(out_dir=tmp_path / "ray"),
                          RayJob(tier="flash", flash_chunk_pages=3), say=lambda line: None)
    assert tree(tmp_path / "ray") == tree(tmp_path / "plain")
    assert [(f.name, f.status, f.pages_ok, f.pages_failed) for f in result.report.files] == [
        (f.name, f.status, f.pages_ok, f.pages_failed) for f in plain.files]
    assert result.report.pages_ok == 10 and result.report.pages_failed == 1  # the scan needs the vlm tier
    assert [f.errors[0] for f in result.report.files if f.name == "broken"] == [
        f.errors[0] for f in plain.files if f.name == "broken"]
    flash = [a for a in result.actors if a.label.startswith("flash")]
    assert len(flash) == 1 and flash[0].pages == 11 and flash[0].pages_per_s > 0


def test_the_cli_runs_on_the_cluster_and_reports_every_page(local_ray, inputs, tmp_path) -> None:
    from typer.testing import CliRunner

    import mineru_fit.cli.commands  # noqa: F401  (registers parse)
    from mineru_fit.cli.app import app
    from mineru_fit.errors import UsageError

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["parse", str(inputs / "sample.pdf"), "-o", str(out), "--tier", "flash",
                                      "--ray", "auto", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout[result.stdout.index("{"):])
    assert body["status"] == "success" and body["pages_ok"] == 3
    assert [a["label"] for a in body["actors"]] == ["flash (CPU task)"] and body["actors"][0]["pages"] == 3
    assert (out / "sample" / "flash" / "sample.md").is_file()
    bad = CliRunner().invoke(app, ["parse", str(inputs / "sample.pdf"), "--ray", "auto", "--ray-engine", "tgi"])
    # main() turns this into one line and exit code 2, as for every usage error.
    assert isinstance(bad.exception, UsageError) and "--ray-engine tgi: use builtin, sglang, vllm" in str(bad.exception)


def test_help_and_a_plain_parse_never_import_ray(inputs, tmp_path) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nimport mineru_fit.cli.commands\nfrom mineru_fit.cli.app import app\n"
        "h = CliRunner().invoke(app, ['parse', '--help'])\n"
        f"p = CliRunner().invoke(app, ['parse', {str(inputs / 'sample.pdf')!r}, '-o', {str(tmp_path)!r}, "
        "'--tier', 'flash', '--no-progress'])\n"
        "print(h.exit_code, '--ray' in h.output, p.exit_code, 'ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.stdout.split() == ["0", "True", "0", "False"], out.stderr


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("mineru_vl_utils")
    from fixtures.tiny_qwen2vl import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


def test_vlm_on_ray_writes_the_same_files_as_a_plain_parse_and_resumes(local_ray, inputs, tiny_model, tmp_path) -> None:
    from mineru_fit.devices.host import available_ram_bytes
    from mineru_fit.models import load_spec
    from mineru_fit.planner import Hardware, make_report

    docs = [inputs / "sample.pdf", inputs / "scan.png"]
    request = PlanRequest(engine="builtin", model=str(tiny_model))
    # What a plain parse plans on a machine without a GPU (the engine actor here has none either).
    report = make_report(load_spec(tiny_model), Hardware.cpu(available_ram_bytes() or 0), request)
    levels = tuple(p for p in report.levels if p.level != "flash")
    plain = parse_documents(docs, ParseOptions(out_dir=tmp_path / "plain", dpi=DPI), TierChoice("vlm", "test"),
                            vlm=VlmSetup(model_dir=tiny_model, levels=levels, max_new_tokens=OUTPUT_CAP,
                                         model_name="tiny"))
    job = RayJob(tier="vlm", model_id="tiny", model_dir=tiny_model, request=request, max_new_tokens=OUTPUT_CAP,
                 batch_pages=2)
    result = parse_on_ray(docs, ParseOptions(out_dir=tmp_path / "ray", dpi=DPI), job, say=lambda line: None)
    assert plain.pages_ok == 4 and result.report.pages_ok == 4
    assert tree(tmp_path / "ray") == tree(tmp_path / "plain")
    [actor] = result.actors
    assert actor.pages == 4 and actor.pages_per_s > 0 and actor.info["level"] == report.chosen_level

    # A lost page (its checkpoint and crops gone): the rerun redoes only that one, and the files match again.
    (tmp_path / "ray" / "sample" / "vlm" / ".checkpoints" / "page_00001.json").unlink()
    again = parse_on_ray(docs, ParseOptions(out_dir=tmp_path / "ray", dpi=DPI), job, say=lambda line: None)
    records = {f.name: [(r.page_idx, r.resumed) for r in f.pages] for f in again.report.files}
    assert records == {"sample": [(0, True), (1, False), (2, True)], "scan": [(0, True)]}
    assert tree(tmp_path / "ray", "resumed") == tree(tmp_path / "plain", "resumed")
