"""One settings object: the guide's environment variables, MINERU_FIT_* and a config file.

Precedence (highest first): explicit CLI flags (applied by callers), environment variables,
the config file (MINERU_FIT_CONFIG, else ~/.config/mineru-fit/config.toml), defaults.
Unknown keys in the config file and unknown MINERU_FIT_* variables are errors, not ignored.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mineru_fit.errors import SettingsError

DEFAULT_CONFIG_PATH = Path("~/.config/mineru-fit/config.toml")
# What the built-in engine runs with when PYTORCH_CUDA_ALLOC_CONF is unset: variable image sizes
# fragment the caching allocator, and expandable segments avoid that. A value the user set stays.
DEFAULT_ALLOC_CONF = "expandable_segments:True"
_DEVICE_MODE = re.compile(r"^(cuda(:\d+)?|cpu|mps)$")


class ModelSource(str, Enum):
    huggingface = "huggingface"
    modelscope = "modelscope"
    local = "local"


def config_path() -> Path:
    """The config file in effect (it may not exist)."""
    return Path(os.environ.get("MINERU_FIT_CONFIG", str(DEFAULT_CONFIG_PATH))).expanduser()


class Settings(BaseSettings):
    """Everything mineru-fit reads from the environment or its config file."""

    model_config = SettingsConfigDict(
        env_prefix="MINERU_FIT_",
        extra="forbid",
        case_sensitive=False,
        populate_by_name=True,
    )

    # --- the guide's variables (no MINERU_FIT_ prefix) ---
    virtual_vram_size_gib: Optional[float] = Field(
        default=None,
        validation_alias=AliasChoices("MINERU_VIRTUAL_VRAM_SIZE", "virtual_vram_size"),
        description="GiB of VRAM this process may treat as its own; drives every budget and batch size.",
    )
    device_mode: Optional[str] = Field(
        default=None,
        validation_alias=AliasChoices("MINERU_DEVICE_MODE", "device_mode"),
        description="cuda, cuda:N, cpu or mps; unset means the first CUDA GPU, else cpu.",
    )
    pytorch_cuda_alloc_conf: Optional[str] = Field(
        default=None,
        validation_alias=AliasChoices("PYTORCH_CUDA_ALLOC_CONF", "pytorch_cuda_alloc_conf"),
        description="Respected as given; engines set expandable_segments:True when it is unset.",
    )
    model_source: ModelSource = Field(
        default=ModelSource.huggingface,
        validation_alias=AliasChoices("MINERU_MODEL_SOURCE", "model_source"),
        description="Where models come from: huggingface, modelscope or local.",
    )

    # --- our own (MINERU_FIT_*) ---
    model: str = Field(
        default="opendatalab/MinerU2.5-2509-1.2B",
        description="Model id on the hub, or a local directory.",
    )
    models_dir: Optional[Path] = Field(
        default=None, description="Where `models download` puts models (default: the hub cache)."
    )
    host: str = Field(default="127.0.0.1", description="Address servers bind to.")
    port: int = Field(default=30000, ge=1, le=65535, description="Engine port (MinerU's default).")
    hub_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds before an unreachable model hub is reported."
    )
    api_token: Optional[SecretStr] = Field(default=None, description="Bearer token for the parse API.")
    log_level: str = Field(default="WARNING", description="Python logging level for the CLI.")
    config: Optional[Path] = Field(default=None, description="Config file path (MINERU_FIT_CONFIG).")
    state_dir: Optional[Path] = Field(
        default=None, description="Run records, engine logs and startup measurements (default ~/.local/state/mineru-fit)."
    )
    sglang_executable: Optional[str] = Field(
        default=None, description="Command that replaces `python -m sglang.launch_server` (e.g. another venv's python)."
    )
    vllm_executable: Optional[str] = Field(
        default=None, description="Command that replaces `vllm serve` (e.g. /opt/vllm/bin/vllm serve)."
    )
    ray_snapshot: Optional[Path] = Field(
        default=None,
        description="A devices snapshot (`devices --record`) that `parse --ray` engine actors on this node plan for "
                    "instead of NVML, running on the CPU: set it per node (`MINERU_FIT_RAY_SNAPSHOT=FILE ray start ...`).",
    )

    @field_validator("virtual_vram_size_gib")
    @classmethod
    def _positive_vram(cls, value: Optional[float]) -> Optional[float]:
        if value is not None and not value > 0:
            raise ValueError("must be a positive number of GiB, e.g. 8")
        return value

    @field_validator("device_mode")
    @classmethod
    def _device_mode(cls, value: Optional[str]) -> Optional[str]:
        if value is None or value == "":
            return None
        value = value.strip().lower()
        if not _DEVICE_MODE.match(value):
            raise ValueError("accepted values: cuda, cuda:N, cpu, mps")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("accepted values: debug, info, warning, error, critical")
        return value

    @property
    def virtual_vram_bytes(self) -> Optional[int]:
        if self.virtual_vram_size_gib is None:
            return None
        return int(self.virtual_vram_size_gib * 1024**3)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# What a user typed, per field: the env var name (or config key) shown in errors.
_FIELD_NAMES = {
    "virtual_vram_size_gib": "MINERU_VIRTUAL_VRAM_SIZE",
    "device_mode": "MINERU_DEVICE_MODE",
    "pytorch_cuda_alloc_conf": "PYTORCH_CUDA_ALLOC_CONF",
    "model_source": "MINERU_MODEL_SOURCE",
}


def _variable_name(loc: tuple[Any, ...]) -> str:
    key = str(loc[0]) if loc else "?"
    if key.upper() in _FIELD_NAMES.values():
        return key.upper()
    if key in _FIELD_NAMES:
        return _FIELD_NAMES[key]
    return f"MINERU_FIT_{key.upper()}"


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = _variable_name(tuple(err.get("loc", ())))
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f"={value!r}"
    if err.get("type") == "extra_forbidden":
        where = f" in {config_path()}" if config_path().is_file() else ""
        return f"unknown setting {name}{where} — remove it (see `mineru-fit doctor` for the known ones)"
    if err.get("type") == "enum":
        accepted = ", ".join(m.value for m in ModelSource)
        return f"{name}{shown} is not valid — accepted values: {accepted}"
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{name}{shown} is not valid — {message}"


def _unknown_prefixed_variables() -> list[str]:
    known = {f"MINERU_FIT_{name.upper()}" for name in Settings.model_fields}
    return sorted(k for k in os.environ if k.upper().startswith("MINERU_FIT_") and k.upper() not in known)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; an invalid value raises SettingsError with one line naming it."""
    unknown = _unknown_prefixed_variables()
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]} — unset it (see `mineru-fit doctor` for the known ones)")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(_one_line(exc)) from exc
    except (OSError, ValueError) as exc:  # an unreadable or malformed TOML file
        raise SettingsError(f"cannot read config file {config_path()}: {exc} — fix or remove it") from exc
