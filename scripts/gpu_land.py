"""Land what `make gpu` brought back from the GPU machine into this checkout.

    python scripts/gpu_land.py DIR      # DIR: the run's files (the device tool's files_at)

Copies the measurement record to docs/measurements/, calibration.json to the planner's data and
the chart beside the record, as the run's files.json maps them, then regenerates the README's
memory table here from the measurement files (the copy of README.md the run brought back is not
used: other sections may have moved on since).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

FILES_NAME = "files.json"  # written by benchmarks/gpu_run.py: file name -> its path in the repository
# Where a landed file may go (a files.json is data from another machine: never write elsewhere).
ALLOWED = ("docs/measurements/", "src/mineru_fit/planner/data/calibration.json")


def land(src: Path, root: Path = ROOT) -> list[Path]:
    """Copy the run's files into `root` and refresh its README table; the paths written."""
    from memory_table import latest_measurements, render_section, update_readme

    mapping_path = src / FILES_NAME
    if not mapping_path.is_file():
        raise SystemExit(f"{src}: no {FILES_NAME} — pass the folder the `make gpu` run wrote (the device's $OUT)")
    written = []
    for name, rel in json.loads(mapping_path.read_text()).items():
        target = PurePosixPath(rel)
        if rel == "README.md":
            continue
        if target.is_absolute() or ".." in target.parts or not any(rel.startswith(a) for a in ALLOWED):
            raise SystemExit(f"{FILES_NAME}: {rel} is not a place `make gpu` writes to — refusing it")
        source = src / Path(name).name
        if not source.is_file():
            raise SystemExit(f"{src}: {name} is listed but missing — fetch the run's files again")
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / target)
        written.append(root / target)
    readme = root / "README.md"
    update_readme(readme, render_section(latest_measurements(root / "docs" / "measurements")))
    return written + [readme]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    args = parser.parse_args()
    for path in land(args.src):
        print(f"landed {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
