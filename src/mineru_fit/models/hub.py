"""Download MinerU2.5 models from Hugging Face or ModelScope, or adopt a local folder.

Hub libraries are imported inside download() only. An unreachable hub is reported within
`timeout_s` (a probe request runs first) as one HubError line, never a hang or a traceback.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mineru_fit.errors import HubError, MissingExtraError, ModelNotFoundError, UsageError
from mineru_fit.models.cache import hf_hub_cache, is_model_dir, local_dir_name, where
from mineru_fit.models.known import KNOWN_MODELS, KnownModel, find_known

if TYPE_CHECKING:
    from mineru_fit.settings import ModelSource

log = logging.getLogger(__name__)

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MODELSCOPE_DEFAULT_ENDPOINT = "https://www.modelscope.cn"
SOURCES = ("huggingface", "modelscope", "local")


@dataclass(frozen=True)
class ModelStatus:
    """A known model and where its downloaded copy is (None: not downloaded)."""

    model: KnownModel
    path: Path | None

    @property
    def present(self) -> bool:
        return self.path is not None


def list_models(*, models_dir: Path | None = None) -> list[ModelStatus]:
    """Every known MinerU2.5 model, with the folder of its downloaded copy if there is one."""
    return [ModelStatus(model=m, path=where(m.hf_id, models_dir=models_dir)) for m in KNOWN_MODELS]


def download(
    model_id: str,
    source: ModelSource | str = "huggingface",
    dest: Path | None = None,
    timeout_s: float = 10.0,
    *,
    models_dir: Path | None = None,
) -> Path:
    """Fetch `model_id` into dest (else models_dir/<name>, else the hub's cache) and return its folder.

    source "local": `dest` (or `model_id`) must be a folder with config.json; it is returned as is.
    """
    kind = str(getattr(source, "value", source))
    if kind not in SOURCES:
        raise UsageError(f"unknown model source {kind!r} — accepted values: {', '.join(SOURCES)}")
    if kind == "local":
        return _adopt_local(Path(dest or model_id).expanduser())
    known = find_known(model_id)
    repo_id = known.repo_id(kind) if known else model_id.strip().strip("/")
    if repo_id.count("/") != 1:
        raise UsageError(f"{model_id!r} is not a hub id (owner/name) — e.g. {KNOWN_MODELS[0].hf_id}")
    if dest is not None:
        local_dir: Path | None = Path(dest).expanduser()
    else:
        local_dir = Path(models_dir).expanduser() / local_dir_name(repo_id) if models_dir else None
    fetch = _download_hf if kind == "huggingface" else _download_modelscope
    path = Path(fetch(repo_id, local_dir, timeout_s))
    if not is_model_dir(path):
        raise HubError(
            f"{repo_id} downloaded to {path} but it holds no config.json and safetensors weights — check the id"
        )
    return path


def _adopt_local(path: Path) -> Path:
    if not path.is_dir():
        raise ModelNotFoundError(f"local model folder {path} does not exist — pass --dir with a downloaded model folder")
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} has no config.json — pass --dir with a Hugging Face model folder")
    return path.resolve()


def _download_hf(repo_id: str, local_dir: Path | None, timeout_s: float) -> str:
    offline = _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
    endpoint = (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    if not offline:
        _probe(f"{endpoint}/api/models/{repo_id}/revision/main", timeout_s, endpoint, repo_id)
    if "huggingface_hub" not in sys.modules:
        # huggingface_hub reads these once, at import: they bound each file request (user values win).
        seconds = str(max(1, math.ceil(timeout_s)))
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", seconds)
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", seconds)
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf

    try:
        return snapshot_download(
            repo_id,
            local_dir=str(local_dir) if local_dir else None,
            # Read at call time, as where() does: huggingface_hub fixes its own at import.
            cache_dir=str(hf_hub_cache()),
            endpoint=endpoint,
            etag_timeout=timeout_s,
            local_files_only=offline,
        )
    except hf.GatedRepoError as exc:
        raise HubError(
            f"{repo_id} is gated on {endpoint} — accept its terms on the model page, then log in "
            "(`hf auth login` or HF_TOKEN)"
        ) from exc
    except hf.RepositoryNotFoundError as exc:
        raise HubError(f"{repo_id} was not found on {endpoint} — check the id, or try --source modelscope") from exc
    except hf.RevisionNotFoundError as exc:
        raise HubError(f"{repo_id} has no 'main' revision on {endpoint} — check the id") from exc
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as exc:
        if offline or isinstance(exc.__cause__, hf.OfflineModeIsEnabled):
            raise HubError(
                f"HF_HUB_OFFLINE is set and {repo_id} is not in the local cache — unset HF_HUB_OFFLINE to download it, "
                "or use --source local --dir DIR"
            ) from exc
        raise _unreachable(endpoint, repo_id, exc.__cause__ or exc) from exc
    except hf.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        raise HubError(
            f"{endpoint} refused the download of {repo_id} (HTTP {status}) — retry later or try --source modelscope"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the boundary: any hub or disk failure becomes one line
        raise HubError(
            f"download of {repo_id} from {endpoint} failed ({_one_line(exc)}) — retry, or try --source modelscope"
        ) from exc


def _download_modelscope(repo_id: str, local_dir: Path | None, timeout_s: float) -> str:
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise MissingExtraError("modelscope", "modelscope") from exc
    domain = (os.environ.get("MODELSCOPE_DOMAIN") or MODELSCOPE_DEFAULT_ENDPOINT).rstrip("/")
    endpoint = domain if domain.startswith(("http://", "https://")) else f"https://{domain}"
    _probe(f"{endpoint}/api/v1/models/{repo_id}", timeout_s, endpoint, repo_id)
    try:
        return snapshot_download(repo_id, local_dir=str(local_dir) if local_dir else None, endpoint=endpoint)
    except Exception as exc:  # noqa: BLE001 - modelscope raises many unrelated types; report one line
        raise HubError(
            f"download of {repo_id} from {endpoint} failed ({_one_line(exc)}) — retry, or try --source huggingface"
        ) from exc


def _probe(url: str, timeout_s: float, endpoint: str, repo_id: str) -> None:
    """One request with a hard timeout: any HTTP answer means reachable; no answer is a HubError."""
    import socket
    import urllib.error
    import urllib.request  # imported here: it costs ~25 ms that spec loading should not pay

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout_s):
            pass
    except urllib.error.HTTPError:
        return  # the hub answered; its status is the download's business
    except ValueError as exc:
        raise UsageError(f"hub endpoint {endpoint!r} is not a URL — fix HF_ENDPOINT / MODELSCOPE_DOMAIN") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(exc, (socket.timeout, TimeoutError)):
            raise _unreachable(endpoint, repo_id, f"no answer within {timeout_s:g} s") from exc
        raise _unreachable(endpoint, repo_id, reason) from exc


def _unreachable(endpoint: str, repo_id: str, reason: object) -> HubError:
    text = reason if isinstance(reason, str) else _one_line(reason)  # type: ignore[arg-type]
    return HubError(
        f"cannot reach {endpoint} to download {repo_id} ({text}) — check the network or proxy, set HF_ENDPOINT "
        "to a mirror, use --source modelscope, or --source local --dir DIR; MINERU_FIT_HUB_TIMEOUT_S sets the wait"
    )


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
