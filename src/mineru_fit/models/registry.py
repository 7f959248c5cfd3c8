"""ModelSpec for a name or a folder: the shipped MinerU2.5 spec, a downloaded copy, or any local folder."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from mineru_fit.errors import ModelNotFoundError, ModelSpecError
from mineru_fit.models.cache import where
from mineru_fit.models.config import parse_config, parse_image_spec, read_config, read_image_spec
from mineru_fit.models.derive import derive_tensors
from mineru_fit.models.known import DEFAULT_MODEL, KNOWN_MODELS, find_known
from mineru_fit.models.roles import classify, with_roles
from mineru_fit.models.safetensors_header import read_checkpoint_tensors
from mineru_fit.models.spec import DTYPE_BYTES, ModelSpec, TensorInfo

SHIPPED_DIR = "MinerU2.5-2509-1.2B"
_REINSTALL = "reinstall mineru-fit (pip install --force-reinstall mineru-fit)"


@lru_cache(maxsize=1)
def default_spec() -> ModelSpec:
    """The shipped MinerU2.5-2509 spec (package data, tensors derived by transformers); cached."""
    data = resources.files("mineru_fit.models").joinpath("data", SHIPPED_DIR)
    config = parse_config(_package_json(data.joinpath("config.json")), origin=f"package {SHIPPED_DIR}/config.json")
    image = parse_image_spec(
        _package_json(data.joinpath("preprocessor_config.json")),
        origin=f"package {SHIPPED_DIR}/preprocessor_config.json",
    )
    tensors = _manifest_tensors(_package_json(data.joinpath("tensors.json"), kind=list))
    return ModelSpec(
        name=DEFAULT_MODEL.hf_id,
        source="package",
        text=config.text,
        vision=config.vision,
        image=image,
        torch_dtype=config.torch_dtype,
        tensors=tensors,
        tensors_from_header=False,
    )


def load_spec(model: str | Path | None = None, *, models_dir: Path | None = None) -> ModelSpec:
    """Spec for a folder, a known MinerU2.5 id (downloaded copy, else the shipped spec) or None (default).

    `models_dir` is where `models download` puts models (settings.models_dir); the hub caches are searched too.
    """
    if model is None:
        return default_spec()
    path = Path(model).expanduser()
    if path.is_dir():
        return spec_from_dir(path)
    if path.is_file():
        raise ModelSpecError(f"{path} is a file — pass the model folder that holds config.json")
    model_id = str(model)
    found = where(model_id, models_dir=models_dir)
    known = find_known(model_id)
    if found is not None:
        return spec_from_dir(found, name=known.hf_id if known else model_id)
    if known is not None:
        # Every MinerU2.5 release shares the 2509 architecture, so the shipped numbers hold.
        default = default_spec()
        return default if known is DEFAULT_MODEL else _renamed(default, known.hf_id)
    names = ", ".join(m.hf_id for m in KNOWN_MODELS)
    raise ModelNotFoundError(
        f"{model_id!r} is neither a model folder nor a downloaded model — run `mineru-fit models download "
        f"{model_id}` or pass a folder (known ids: {names})"
    )


def spec_from_dir(path: Path, *, name: str | None = None) -> ModelSpec:
    """Spec from a checkpoint folder: config.json, preprocessor_config.json and safetensors headers."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelSpecError(
            f"{path}: no config.json — pass a Hugging Face model folder, or download one with `mineru-fit models download`"
        )
    config = read_config(config_path)
    image = read_image_spec(path / "preprocessor_config.json")
    header = read_checkpoint_tensors(path)
    if header is None:
        tensors = derive_tensors(config.text, config.vision, dtype=config.safetensors_dtype)
    else:
        tensors = with_roles(header)
    return ModelSpec(
        name=name or path.resolve().name,
        source=str(path),
        text=config.text,
        vision=config.vision,
        image=image,
        torch_dtype=config.torch_dtype,
        tensors=tensors,
        tensors_from_header=header is not None,
    )


def _renamed(spec: ModelSpec, name: str) -> ModelSpec:
    return replace(spec, name=name)


def _package_json(resource, kind: type = dict):
    try:
        data = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"shipped model data {resource} is unreadable ({exc}) — {_REINSTALL}") from exc
    if not isinstance(data, kind):
        raise ModelSpecError(f"shipped model data {resource} is not a JSON {kind.__name__} — {_REINSTALL}")
    return data


def _manifest_tensors(entries: list) -> tuple[TensorInfo, ...]:
    tensors = []
    for entry in entries:
        try:
            name, dtype, shape = entry["name"], entry["dtype"], tuple(entry["shape"])
            valid = isinstance(name, str) and dtype in DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
        except (KeyError, TypeError):
            valid = False
        if not valid:
            raise ModelSpecError(f"shipped tensors.json has a malformed entry {entry!r} — {_REINSTALL}")
        tensors.append(TensorInfo(name=name, dtype=dtype, shape=shape, role=classify(name, shape)))
    return tuple(tensors)
