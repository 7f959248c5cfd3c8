"""The wheels `make gpu` carries to the lent GPU machine, which has no network.

That machine has torch (CUDA 13.0), transformers, numpy, httpx, typer, rich, nvidia-ml-py and
more (scripts/gpu_device_packages.txt) but not pydantic, FastAPI, uvicorn or bitsandbytes. This
downloads those wheels, at the versions this checkout's tests ran with, for the machine's Python
(3.12, manylinux x86_64) into .whl/ (git-ignored), keeps only bitsandbytes' CUDA 13 kernels (its
wheel is 43 MB, the working tree may carry 64 MiB) and checks the size. docs/gpu-run.md says why.

    python scripts/gpu_wheelhouse.py [--dest .whl] [--python-version 3.12] [--cuda 130,132]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parents[1]
DEVICE_PACKAGES = ROOT / "scripts" / "gpu_device_packages.txt"
# What the make-gpu steps import that the machine lacks (the test checks this list is complete).
# typing-extensions is there, at a version not on record: pydantic needs >= 4.16, so ours comes along.
CARRY = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
         "pydantic-settings", "python-dotenv", "fastapi", "starlette", "opentelemetry-api", "uvicorn", "bitsandbytes",
         # MinerU's own transformers backend, the other side of benchmarks/engine_vs_mineru.py.
         "mineru-vl-utils", "httpx-retries", "loguru")
# The device tool's limit on what travels with a call: working tree plus carried folders.
TRAVEL_LIMIT_BYTES = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
_BNB_LIB = re.compile(r"^bitsandbytes/libbitsandbytes_(cuda\d+|rocm\d+|xpu\d*)\.(so|dll|dylib)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    lines = path.read_text().splitlines()
    return {canonical(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def device_environment(python_version: str) -> dict[str, str]:
    """PEP 508 marker values of the GPU machine (Linux x86_64, CPython)."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def installed_closure(names: Iterable[str]) -> set[str]:
    """`names` and everything they require as installed here (markers evaluated for this Python)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or ()
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen


def unmet_requirements(names: Iterable[str], present: set[str], python_version: str = "3.12") -> dict[str, list[str]]:
    """For each carried distribution (as installed here): what it requires that is neither carried
    nor on the machine. Empty when the wheelhouse is complete."""
    from packaging.requirements import Requirement

    carried = {canonical(n) for n in names}
    env = device_environment(python_version)
    unmet: dict[str, list[str]] = {}
    for name in names:
        for line in md.requires(name) or ():
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue  # extras and other platforms
            if canonical(req.name) not in carried | present:
                unmet.setdefault(name, []).append(str(req))
    return unmet


def requirement_problems(names: Iterable[str], python_version: str) -> list[str]:
    """Installed here (or there): each carried distribution's requirements that the versions present
    do not satisfy. The preflight runs this on the GPU machine, where versions are not on record."""
    from packaging.requirements import Requirement

    env = device_environment(python_version)
    problems = []
    for name in names:
        try:
            requires = md.requires(name) or ()
        except md.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            try:
                have = md.version(req.name)
            except md.PackageNotFoundError:
                problems.append(f"{name} needs {req}: not installed")
                continue
            if req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} needs {req}: {have} is installed")
    return problems


def pinned(names: Iterable[str]) -> list[str]:
    """name==version as installed here: the versions the tests ran with."""
    return [f"{name}=={md.version(name)}" for name in names]


def download(requirements: list[str], dest: Path, python_version: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + requirements, check=True)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def slim_bitsandbytes(wheel: Path, keep: Iterable[str]) -> tuple[int, list[str]]:
    """Rewrite the wheel in place without the GPU libraries not in `keep` (e.g. "cuda130");
    RECORD is rewritten to match. Returns the new size and the libraries dropped."""
    keep = set(keep)
    out = wheel.with_suffix(".slim")
    dropped: list[str] = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        lines = []
        for info in src.infolist():
            match = _BNB_LIB.match(info.filename)
            if match and match.group(1) not in keep:
                dropped.append(info.filename)
                continue
            if info.filename == record_name:
                continue
            data = src.read(info)
            dst.writestr(info, data)
            lines.append(_record_line(info.filename, data))
        lines.append(f"{record_name},,")
        dst.writestr(record_name, "\n".join(lines) + "\n")
    out.replace(wheel)
    return wheel.stat().st_size, dropped


def travelling_tree_bytes(root: Path = ROOT) -> int:
    """What a device call sends besides carried folders: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for name in filter(None, listed):
        path = root / name.decode()
        if path.is_file():
            total += path.stat().st_size
    return total


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12.3 in 2026-11)")
    parser.add_argument("--cuda", default="130,132",
                        help="bitsandbytes builds to keep: the machine's torch is cu130 (torch.version.cuda 13.0)")
    args = parser.parse_args(argv)

    present = device_packages()
    unmet = unmet_requirements(CARRY, present, args.python_version)
    if unmet:
        for name, reqs in unmet.items():
            print(f"{name} needs {', '.join(reqs)}: neither carried nor on the GPU machine — add it to CARRY")
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()  # one version of each: two stop the whole install there
    requirements = pinned(CARRY)
    download(requirements, args.dest, args.python_version)
    [bnb] = args.dest.glob("bitsandbytes-*.whl")
    before = bnb.stat().st_size
    after, dropped = slim_bitsandbytes(bnb, [f"cuda{v.strip()}" for v in args.cuda.split(",")])
    print(f"bitsandbytes: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (dropped {len(dropped)} GPU builds)")
    wheels = sorted(args.dest.glob("*.whl"))
    carried = sum(w.stat().st_size for w in wheels)
    tree = travelling_tree_bytes()
    for wheel in wheels:
        print(f"  {wheel.stat().st_size / 2**20:6.2f} MiB  {wheel.name}")
    total = tree + carried
    print(f"wheels {carried / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
          f"of the {TRAVEL_LIMIT_BYTES / 2**20:.0f} MiB a device call may carry")
    if total > TRAVEL_LIMIT_BYTES:
        print("too large: drop a CUDA build (--cuda) or untracked files")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
