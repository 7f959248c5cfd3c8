"""The one exception tree of mineru-fit.

Every message is one line that ends with what to do. The CLI catches only MineruFitError:
usage and configuration errors exit 2, runtime failures exit 1.
"""

from __future__ import annotations


class MineruFitError(Exception):
    """Base of every error mineru-fit raises on purpose."""

    exit_code = 1


class UsageError(MineruFitError):
    """The user asked for something that cannot be: bad flag, value or combination."""

    exit_code = 2


class SettingsError(UsageError):
    """An environment variable or config-file value is invalid."""


class PlanInputError(UsageError):
    """Planner inputs that contradict each other or the hardware."""


class ModelSpecError(UsageError):
    """A model's config.json or safetensors header cannot be read."""


class ModelNotFoundError(MineruFitError):
    """The model is neither downloaded nor a local directory."""


class HubError(MineruFitError):
    """The model hub could not be reached or refused the download."""


class DeviceError(MineruFitError):
    """The GPU inventory could not be read (never raised for 'no GPU', which is normal)."""


class MissingExtraError(MineruFitError):
    """An optional dependency is not installed; the message names the pip extra."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed — pip install 'mineru-fit[{extra}]'")
        self.package = package
        self.extra = extra


class EngineError(MineruFitError):
    """An engine (SGLang, vLLM) failed to start or stopped; the message names its log."""


class EngineNotInstalledError(UsageError):
    """The engine asked for is not installed here; the message names the pip extra."""


class EngineFlagError(UsageError):
    """A flag the plan needs does not exist in the installed engine version."""


class InputDocumentError(MineruFitError):
    """A document that cannot be parsed as given: corrupt, encrypted, empty, too large or the wrong type."""


class VlmServerError(MineruFitError):
    """The --server URL does not answer as an OpenAI-compatible MinerU server."""


class RequestRefusedError(MineruFitError):
    """A parse-API request that cannot be accepted as sent; `status` is the HTTP answer it gets."""

    def __init__(self, message: str, status: int = 422, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
