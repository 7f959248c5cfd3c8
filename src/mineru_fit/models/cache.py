"""Where a downloaded model lies on disk: our models dir, the Hugging Face cache, the ModelScope cache.

Pure filesystem look-ups (no hub library imported), so finding a model stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from mineru_fit.models.known import find_known
from mineru_fit.models.safetensors_header import INDEX_FILE, SINGLE_FILE


def is_model_dir(path: Path) -> bool:
    """A folder with config.json and its safetensors weights (one file or an index)."""
    return (path / "config.json").is_file() and ((path / SINGLE_FILE).is_file() or (path / INDEX_FILE).is_file())


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, read from the environment as huggingface_hub does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def modelscope_cache() -> Path:
    """ModelScope's cache root (MODELSCOPE_CACHE, else ~/.cache/modelscope)."""
    env = os.environ.get("MODELSCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "modelscope"


def local_dir_name(model_id: str) -> str:
    """The folder name a model gets under --dir/models_dir: its repo name."""
    return model_id.strip().strip("/").rsplit("/", 1)[-1]


def where(model_id: str, *, models_dir: Path | None = None) -> Path | None:
    """The folder of a complete downloaded copy of `model_id` (a model folder path is its own), or None."""
    as_path = Path(model_id).expanduser()
    if as_path.is_dir():
        return as_path if is_model_dir(as_path) else None
    known = find_known(model_id)
    hf_id = known.hf_id if known else model_id.strip().strip("/")
    ms_id = known.modelscope_id if known else hf_id
    candidates: list[Path] = []
    if models_dir is not None:
        candidates.append(Path(models_dir).expanduser() / local_dir_name(hf_id))
    if "/" in hf_id:
        candidates += _hf_snapshots(hf_id)
        candidates += _modelscope_dirs(ms_id)
    return next((c for c in candidates if is_model_dir(c)), None)


def _hf_snapshots(repo_id: str) -> list[Path]:
    # The hub cache keeps models--{org}--{name}/refs/main -> commit, snapshots/{commit}/ files.
    # Folder names keep the id's case, so try the casings a user or we might have downloaded with.
    found: list[Path] = []
    for folder in _case_variants(hf_hub_cache(), "models--" + repo_id.replace("/", "--")):
        ref = folder / "refs" / "main"
        if ref.is_file():
            found.append(folder / "snapshots" / ref.read_text().strip())
        snapshots = folder / "snapshots"
        if snapshots.is_dir():
            found += sorted(snapshots.iterdir(), key=_mtime, reverse=True)
    return found


def _modelscope_dirs(repo_id: str) -> list[Path]:
    # ModelScope has used several layouts over its versions, and replaces "." by "___" in names.
    owner, _, name = repo_id.partition("/")
    safe = name.replace(".", "___")
    base = modelscope_cache()
    found = [
        base / "models" / owner / safe,
        base / "hub" / "models" / owner / safe,
        base / "hub" / owner / safe,
        base / "hub" / owner / name,
        base / owner / safe,
        base / owner / name,
    ]
    snapshots = base / "models" / f"{owner}--{name}" / "snapshots"
    if snapshots.is_dir():
        found += sorted(snapshots.iterdir(), key=_mtime, reverse=True)
    return found


def _case_variants(parent: Path, name: str) -> list[Path]:
    exact = parent / name
    if exact.is_dir() or not parent.is_dir():
        return [exact]
    return [p for p in parent.iterdir() if p.name.lower() == name.lower()]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
