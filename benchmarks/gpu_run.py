"""`make gpu`: every GPU figure this project still owes, in one unattended run on one H100/H200.

Steps, each time-boxed inside one budget (default 450 s, under the 8 minutes allowed):
preflight (imports, bitsandbytes on the GPU) -> build the real-size MinerU2.5 with random
weights -> the memory table (benchmarks/gpu_memory.py: every level in a fresh process, one level
(extreme) under `mineru-fit monitor watch` with a `monitor --once --json` snapshot) -> the built-in
engine's server at concurrency 1, 8, 32 and its out-of-memory path under a real cap
(benchmarks/gpu_serve.py) -> the built-in engine against MinerU's own transformers backend in
bf16 (benchmarks/engine_vs_mineru.py, issue 15's speed must-holds) -> the record
docs/measurements/<gpu>-<date>.json, calibration.json, the README table and chart, pass/fail of
every check, and a short table printed last.
Everything it wrote is also copied to --out-dir (the device tool's $OUT). docs/gpu-run.md.

    python benchmarks/gpu_run.py --out-dir DIR [--wheels .whl]     # on the GPU machine
    python benchmarks/gpu_run.py --dry --out-dir DIR                # every step, tiny, on the CPU

Exit status: 0 every check passed (or n/a), 3 a check failed, 1 a step broke or a file is wrong.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "scripts"))

SITE = Path(tempfile.gettempdir()) / "mineru-fit-site"


@dataclass(frozen=True)
class Step:
    name: str
    estimate_s: float  # on one H200: an estimate from the timings in docs/gpu-run.md, not a measurement
    timeout_s: float


STEPS = (Step("preflight", 15, 90), Step("build_model", 20, 150), Step("memory_table", 170, 260),
         Step("serve", 110, 180), Step("engine_vs_mineru", 90, 240), Step("finalize", 10, 60))
# Steps a second try may leave out (what the first one already brought back).
SKIPPABLE = ("memory_table", "serve", "engine_vs_mineru")
# The engine against MinerU's transformers backend: pages per run. More than one, because MinerU
# sends a document's crops in one call (sorted by area, in batches of its batch size): at
# concurrency 8 one page's 7 crops fit one batch and nothing would wait to join. Two, because the
# step gets what the budget leaves (about 90 s) and concurrency 1 at every level's context must fit.
ENGINE_PAGES = 2
FINALIZE_RESERVE_S = 30
# Run under `monitor watch`: the longest run (batch 1), with 4-bit weights and the floor check.
WATCH_LEVEL = "extreme"


class Tee:
    """stdout to the terminal and to the run's log at once."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w")

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        sys.__stdout__.flush()
        self.file.flush()


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.dry = args, args.dry
        self.out = args.out_dir
        self.work = Path(tempfile.mkdtemp(prefix="make-gpu-"))
        os.environ["TMPDIR"] = str(self.work)  # the children's scratch folders too: one place, removed at the end
        self.root = ROOT if not self.dry else self.out / "tree"
        self.device = "cpu" if self.dry else args.device
        self.started = time.monotonic()
        self.deadline = self.started + args.budget_s
        self.steps: list[dict[str, Any]] = []
        self.data: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, step: Step, fn: Callable[[float], Any]) -> bool:
        reserve = 0 if step.name == "finalize" else FINALIZE_RESERVE_S
        timeout = min(step.timeout_s * self.args.timeout_scale, self.deadline - time.monotonic() - reserve)
        row: dict[str, Any] = {"step": step.name, "estimate_s": step.estimate_s, "timeout_s": round(timeout)}
        if timeout < 5:
            row.update(status="skipped", detail="the time box ran out")
        else:
            start = time.monotonic()
            try:
                detail = fn(timeout)
                row.update(status="ok", detail=detail)
            except Exception as exc:  # one broken step must not cost the others their figures
                row.update(status="error", detail=f"{type(exc).__name__}: {exc}")
            row["took_s"] = round(time.monotonic() - start, 1)
        self.steps.append(row)
        print(f"[{self.elapsed():5.0f} s] {step.name}: {row['status']}"
              + (f" in {row['took_s']} s (estimate {step.estimate_s:g} s)" if "took_s" in row else "")
              + (f" — {row['detail']}" if row.get("detail") else ""), flush=True)
        return row["status"] == "ok"

    def sub(self, cmd: list[str], timeout: float, log: str) -> None:
        """A child process with its output in the work folder; its last lines raise on failure."""
        from gpu_procs import kill_tree

        path = self.work / log
        with open(path, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                kill_tree(proc.pid)  # the step's servers and workers too, wherever they sit
                proc.wait()
                raise RuntimeError(f"timed out after {timeout:.0f} s ({log})") from exc
        if code != 0:
            tail = " | ".join(path.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"exit {code}: {tail}")


# ----------------------------------------------------------------------------- the steps

def install_wheels(folder: Path) -> Optional[str]:
    """The carried wheels into a folder of their own, first on the path of this run and its children."""
    wheels = sorted(glob.glob(str(folder / "*.whl")))
    if not wheels:
        return None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(SITE), *wheels], check=True)
    return f"{len(wheels)} wheels into {SITE}"


def use_paths() -> None:
    paths = [str(SITE), str(ROOT / "src")]
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.setdefault("PYTHONUNBUFFERED", "1")


# The dry run's processes see only what the GPU machine will have: a package that is installed
# here but neither there nor carried looks absent, exactly as it will there.
DEVICE_ONLY = """import importlib.machinery, sys
BLOCKED = frozenset(%s)


class DeviceOnlyPathFinder(importlib.machinery.PathFinder):
    \"\"\"make gpu GPU_DRY=1: these packages are not on the GPU machine nor carried (scripts/gpu_wheelhouse.py).\"\"\"

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [DeviceOnlyPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


def device_only_imports(run: Run) -> int:
    """Dry run: hide from this process and its children every package the GPU machine will lack."""
    import importlib.metadata as md

    from gpu_wheelhouse import CARRY, canonical, device_packages, installed_closure

    # The machine's packages bring their own needs there; here, other versions may need other
    # packages (huggingface-hub 2 needs httpx2, 1.33 there does not), so those count as present.
    allowed = installed_closure(device_packages()) | {canonical(n) for n in CARRY} | {"mineru-fit"}
    blocked = sorted(top for top, dists in md.packages_distributions().items()
                     if not any(canonical(d) in allowed for d in dists))
    folder = run.work / "device-only"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(DEVICE_ONLY % json.dumps(blocked))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    exec(compile((folder / "sitecustomize.py").read_text(), "sitecustomize.py", "exec"), {})
    return len(blocked)


def preflight(run: Run, timeout: float) -> str:
    run.sub([sys.executable, str(ROOT / "benchmarks" / "gpu_preflight.py"), "--device", run.device],
            timeout, "preflight.log")
    lines = (run.work / "preflight.log").read_text().splitlines()
    report = json.loads(next(line for line in lines if line.startswith("{")))
    run.data["preflight"] = report
    bnb = (report.get("bitsandbytes") or {}).get("library")
    return (f"{report.get('gpu') or 'no GPU (dry run)'}, torch {report['versions']['torch']}"
            + (f", {Path(bnb).name}" if bnb else "") + "".join(f"; WARNING {w}" for w in report.get("warnings", [])))


def start_build(run: Run) -> subprocess.Popen:
    """The model is built while the preflight runs: neither needs the other until the table."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "realsize.py"), str(run.work / "model"), "--device", run.device]
    with open(run.work / "build_model.log", "w") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(cmd + (["--tiny"] if run.dry else []), stdout=log, stderr=subprocess.STDOUT)


def build_model(run: Run, timeout: float) -> str:
    from gpu_procs import kill_tree

    proc: subprocess.Popen = run.data.pop("build")
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_tree(proc.pid)
        raise RuntimeError(f"timed out after {timeout:.0f} s more") from exc
    if code != 0:
        tail = " | ".join((run.work / "build_model.log").read_text(errors="replace").strip().splitlines()[-3:])
        raise RuntimeError(f"exit {code}: {tail}")
    model = run.work / "model"
    run.data["model_dir"] = model
    size = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    return f"{size / 2**20:.1f} MiB of weights, {time.monotonic() - run.started:.0f} s after the start"


def memory_table(run: Run, timeout: float) -> str:
    out = run.work / "table"
    # Extreme first: it carries the floor and the monitor checks, and a level that overruns the time
    # box leaves out those after it. The dry run measures that one only (each costs a torch import).
    levels, pages, tokens = ("extreme", 2, 3) if run.dry else ("extreme,none,basic,aggressive", 8, 64)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_memory.py"), "--model-dir", str(run.data["model_dir"]),
           "--device", run.device, "--levels", levels, "--pages", str(pages), "--output-tokens", str(tokens),
           "--out", str(out), "--watch-level", WATCH_LEVEL, "--no-calibrate", "--timeout-s", str(int(100 * run.args.timeout_scale)),
           "--budget-s", str(int(timeout - 10))]
    run.sub(cmd, timeout, "memory_table.log")
    [path] = list(out.glob("*.json"))
    run.data["table_path"] = path
    record = json.loads(path.read_text())
    errors = [f"{r['level']}: {r['error']}" for r in record["levels"] if r.get("error")]
    if errors:
        raise RuntimeError("; ".join(errors))
    return f"{len(record['levels'])} levels in {record['wall_s']} s"


def serve(run: Run, timeout: float) -> str:
    folder = run.work / "serve"
    folder.mkdir(exist_ok=True)
    out = folder / "serve.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_serve.py"), "--model-dir", str(run.data["model_dir"]),
           "--out", str(out), "--budget-s", str(int(timeout - 40))]
    if run.data.get("table_path"):
        cmd += ["--measurement", str(run.data["table_path"])]
    if run.dry:
        cmd += ["--dry", "--concurrency", "1,2,4", "--max-tokens", "4", "--crop-scale", "0.25"]
    try:
        run.sub(cmd, timeout, "serve.log")
    finally:  # it saves after each phase: a step cut short still brings what it measured
        if out.is_file():
            run.data["serve"] = json.loads(out.read_text())
    rows = [r for r in run.data["serve"]["throughput"] if "tokens_per_s" in r]
    return ", ".join(f"c={r['concurrency']} {r['tokens_per_s']} tok/s" for r in rows)


def engine_vs_mineru(run: Run, timeout: float) -> str:
    """Issue 15's speed must-holds where decode dominates: benchmarks/engine_vs_mineru.py in bf16 on
    the GPU, concurrency 8 first, then 1, then the other levels' contexts at 1, as the time box
    allows (its own budget stops before a run that would not fit)."""
    out = run.work / "engine_vs_mineru.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "engine_vs_mineru.py"), "--model", str(run.data["model_dir"]),
           "--device", run.device, "--rounds", "1", "--out", str(out), "--budget-s", str(int(timeout - 15))]
    cmd += ["--shape", "tiny", "--concurrency", "8,1"] if run.dry else ["--pages", str(ENGINE_PAGES),
                                                                       "--concurrency", "8,1"]
    try:
        run.sub(cmd, timeout, "engine_vs_mineru.log")
    finally:  # it saves after each run: a step cut short still brings what it measured
        if out.is_file():
            run.data["engine_vs_mineru"] = json.loads(out.read_text())
    summary = run.data["engine_vs_mineru"]["summary"]
    rows = summary["by_concurrency"]
    said = [f"c={c} {rows[c]['ratio']}×" for c in ("8", "1") if rows[c]["ratio"] is not None]
    return ", ".join(said) + (f"; {len(summary['skipped'])} runs left out by the time box" if summary["skipped"] else "")


def finalize(run: Run, timeout: float) -> str:
    from gpu_land import FILES_NAME
    from gpu_record import build_record, verify_files, write_outputs

    record = build_record(run)
    files = write_outputs(run, record)
    problems = verify_files(files, record, run.args.skip_steps)
    copied = {}
    for kind, path in files.items():
        if kind == "readme":  # scripts/gpu_land.py regenerates it from the record; 8 files come back at most
            continue
        shutil.copyfile(path, run.out / path.name)
        copied[path.name] = path.relative_to(run.root).as_posix()
    for log in ("serve/serve-throughput.log", "serve/serve-oom.log"):
        if (run.work / log).is_file():
            shutil.copyfile(run.work / log, run.out / Path(log).name)
    (run.out / FILES_NAME).write_text(json.dumps(copied, indent=2) + "\n")
    run.data.update(record=record, files=files, file_problems=problems)
    if problems:
        raise RuntimeError("; ".join(problems))
    return f"{len(files)} files written and checked"


def clear_previous(out: Path) -> None:
    """A rerun into the same folder must not pass off the last run's files as its own."""
    from gpu_land import FILES_NAME

    listed = out / FILES_NAME
    names = list(json.loads(listed.read_text())) if listed.is_file() else []
    fixed = [FILES_NAME, "calibration.json", "memory-by-level.png", "gpu-run.log", "serve-throughput.log", "serve-oom.log"]
    for name in names + fixed:
        (out / Path(name).name).unlink(missing_ok=True)


def command_line(args: argparse.Namespace) -> str:
    """The exact command, as the user typed it where possible."""
    if os.environ.get("MAKELEVEL"):
        return "make gpu" + (" GPU_DRY=1" if args.dry else "")
    return "python " + shlex.join([str(Path(sys.argv[0]).resolve().relative_to(ROOT))] + sys.argv[1:])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="copies of everything written (the device's $OUT)")
    parser.add_argument("--dry", action="store_true", help="every step at tiny size on the CPU, into --out-dir only")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to install first (no network needed)")
    parser.add_argument("--budget-s", type=float, help="the whole run, finalize included (default 450; dry 1800)")
    parser.add_argument("--skip", default="", help=f"steps to leave out, comma-separated: {', '.join(SKIPPABLE)} "
                                                   "(a second try with the device time left)")
    args = parser.parse_args(argv)
    args.skip_steps = sorted({name.strip() for name in args.skip.split(",") if name.strip()})
    if set(args.skip_steps) - set(SKIPPABLE):
        parser.error(f"--skip {args.skip}: only {', '.join(SKIPPABLE)} can be left out")
    # A shared 2-core machine imports torch several times slower than the GPU machine's 16 cores.
    args.timeout_scale = 5.0 if args.dry else 1.0
    args.budget_s = args.budget_s or (1800.0 if args.dry else 450.0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    clear_previous(args.out_dir)
    sys.stdout = Tee(args.out_dir / "gpu-run.log")  # type: ignore[assignment]
    installed = install_wheels(args.wheels) if args.wheels and not args.dry else None
    use_paths()
    run = Run(args)
    run.data["command"] = command_line(args)
    if args.dry:
        installed = f"{device_only_imports(run)} packages hidden that the GPU machine will not have"
    print(f"make gpu{' (dry run on the CPU)' if args.dry else ''}: budget {args.budget_s:.0f} s, work in {run.work}"
          + (f"; {installed}" if installed else ""), flush=True)
    steps = {"preflight": preflight, "build_model": build_model, "memory_table": memory_table, "serve": serve,
             "engine_vs_mineru": engine_vs_mineru, "finalize": finalize}
    run.data["build"] = start_build(run)
    for step in STEPS:
        if step.name == "build_model" and run.steps[-1]["status"] != "ok":
            break  # nothing runs without the imports the preflight checked
        if step.name in SKIPPABLE and ("model_dir" not in run.data or step.name in args.skip_steps):
            continue
        run.step(step, lambda timeout, s=step: steps[s.name](run, timeout))
    if run.steps[-1]["step"] != "finalize":  # the preflight failed: still say what is missing, and where
        run.step(STEPS[-1], lambda timeout: finalize(run, timeout))
    from gpu_record import print_summary

    print_summary(run)
    from gpu_procs import kill_tree

    kill_tree(os.getpid())  # nothing of this run outlives it (a killed build, a stray server)
    shutil.rmtree(run.work, ignore_errors=True)
    broken = any(s["status"] == "error" for s in run.steps)
    verdict = (run.data.get("record") or {}).get("verdict")
    return 1 if broken else 3 if verdict == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
