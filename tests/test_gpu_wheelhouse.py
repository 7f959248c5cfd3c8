"""What `make gpu` carries to the GPU machine (no network there) is complete, small and installable."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_wheelhouse import (  # noqa: E402
    CARRY, TRAVEL_LIMIT_BYTES, canonical, device_packages, requirement_problems, slim_bitsandbytes,
    travelling_tree_bytes, unmet_requirements,
)


def test_every_carried_wheel_needs_only_what_is_carried_or_already_there() -> None:
    present = device_packages()
    assert {"torch", "transformers", "nvidia-ml-py", "httpx", "typer"} <= present
    assert not {"pydantic", "fastapi", "uvicorn", "bitsandbytes"} & present  # why anything is carried at all
    assert unmet_requirements(CARRY, present) == {}
    # Dropping one carried wheel is found out here, not on the GPU machine.
    assert "fastapi" in unmet_requirements([n for n in CARRY if n != "starlette"], present)


def test_a_requirement_the_installed_version_does_not_meet_is_named(tmp_path: Path, monkeypatch) -> None:
    info = tmp_path / "needy-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: needy\nVersion: 1.0\nRequires-Dist: pydantic>=99\n"
                                   "Requires-Dist: no-such-dist-anywhere\nRequires-Dist: pytest; extra == 'dev'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = requirement_problems(["needy"], "3.12")
    assert len(problems) == 2
    assert problems[0].startswith("needy needs pydantic>=99: ") and "is installed" in problems[0]
    assert "no-such-dist-anywhere: not installed" in problems[1]
    assert requirement_problems(CARRY, f"{sys.version_info.major}.{sys.version_info.minor}") == []


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "stale,,\n")
    return path


def test_bitsandbytes_keeps_only_the_cuda_builds_asked_for_and_stays_installable(tmp_path: Path) -> None:
    files = {"bitsandbytes/__init__.py": b"__version__ = '0.50.2'\n",
             "bitsandbytes/libbitsandbytes_cpu.so": b"cpu", "bitsandbytes/libbitsandbytes_cuda130.so": b"13.0" * 100,
             "bitsandbytes/libbitsandbytes_cuda128.so": b"12.8" * 1000, "bitsandbytes/libbitsandbytes_rocm72.so": b"rocm",
             "bitsandbytes-0.50.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: bitsandbytes\nVersion: 0.50.2\n",
             "bitsandbytes-0.50.2.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                                   b"Tag: py3-none-any\n"}
    wheel = _wheel(tmp_path / "bitsandbytes-0.50.2-py3-none-any.whl", files)
    size, dropped = slim_bitsandbytes(wheel, ["cuda130"])
    assert sorted(dropped) == ["bitsandbytes/libbitsandbytes_cuda128.so", "bitsandbytes/libbitsandbytes_rocm72.so"]
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()
        # Every file is in RECORD with its true hash and size; nothing dropped is listed.
        for line in record[:-1]:
            name, digest, length = line.split(",")
            data = z.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(length) == len(data)
        assert {line.split(",")[0] for line in record} == names
    assert "bitsandbytes/libbitsandbytes_cuda130.so" in names and size == wheel.stat().st_size
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                           str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (target / "bitsandbytes").glob("*.so")) == [
        "libbitsandbytes_cpu.so", "libbitsandbytes_cuda130.so"]


def test_the_working_tree_leaves_room_for_the_wheels() -> None:
    # The wheels come to about 10 MiB (docs/gpu-run.md); the tree must leave them room in 64 MiB.
    assert travelling_tree_bytes() < TRAVEL_LIMIT_BYTES - 16 * 2**20


def test_the_dry_runs_hidden_packages_look_absent_as_on_the_gpu_machine(tmp_path: Path) -> None:
    import importlib.util

    from gpu_run import DEVICE_ONLY

    assert importlib.util.find_spec("reportlab") is not None  # installed here (the flash extra): hiding it is the test
    (tmp_path / "sitecustomize.py").write_text(DEVICE_ONLY % json.dumps(["reportlab"]))
    code = ("import importlib.util, json\n"
            "try:\n    import reportlab.pdfgen\n    outcome = 'imported'\n"
            "except ModuleNotFoundError as exc:\n    outcome = exc.name\n"
            "print(json.dumps([outcome, importlib.util.find_spec('reportlab'), importlib.util.find_spec('json') is not None]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert json.loads(done.stdout) == ["reportlab", None, True], done.stderr
    assert canonical("Pydantic_Core") == "pydantic-core"
