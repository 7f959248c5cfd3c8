"""MinerU 4's error body, `{"error": {type, code, message, param}}`, and its translation of our refusals."""

from __future__ import annotations

from typing import Any, NoReturn, Optional

from fastapi.responses import JSONResponse

from mineru_fit.errors import RequestRefusedError

# Our refusals' HTTP statuses as MinerU 4 codes them.
_CODES = {413: "file_too_large", 415: "unsupported_file_type", 422: "invalid_file", 503: "server_busy"}


class V1Error(Exception):
    """A /v1 answer other than success, carried to the app's handler."""

    def __init__(self, status: int, code: str, message: str, *, param: Optional[str] = None,
                 error_type: Optional[str] = None, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type or error_type_for(status)
        self.headers = headers


def error_type_for(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def code_for(status: int) -> str:
    return _CODES.get(status, "invalid_request")


def fail(status: int, code: str, message: str, *, param: Optional[str] = None, error_type: Optional[str] = None) -> NoReturn:
    raise V1Error(status, code, message, param=param, error_type=error_type)


def invalid(message: str, *, param: Optional[str] = None, code: str = "invalid_request", status: int = 400) -> NoReturn:
    raise V1Error(status, code, message, param=param)


def body(error_type: str, code: Optional[str], message: str, param: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"type": error_type, "code": code, "message": message, "param": param}}


def response(exc: V1Error) -> JSONResponse:
    return JSONResponse(body(exc.error_type, exc.code, exc.message, exc.param), status_code=exc.status,
                        headers=exc.headers)


def from_refusal(exc: RequestRefusedError, param: Optional[str] = "files") -> V1Error:
    """A refusal of the shared core (bad file, limits, full queue) as a /v1 error."""
    headers = {"retry-after": str(exc.retry_after_s)} if exc.retry_after_s else None
    error_type = "engine_error" if exc.status == 503 else None
    return V1Error(exc.status, code_for(exc.status), str(exc),
                   param=None if exc.status == 503 else param, error_type=error_type, headers=headers)
