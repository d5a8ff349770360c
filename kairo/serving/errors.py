"""Errors the server answers with: a status, a message for the caller, and the shape the route family uses.

OpenAI routes (`/v1/…`) answer `{"error": {"message", "type", "param", "code"}}` as the OpenAI API does;
Kaito's routes answer FastAPI's `{"detail": "…"}` as Kaito's server does.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 503: "service_unavailable", 500: "server_error"}


class ApiError(Exception):
    """A request the server refuses or cannot answer; rendered in the route family's error shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def error_body(path: str, status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    if is_openai(path):
        return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                          "param": param, "code": code}}
    return {"detail": message}


def error_response(path: str, status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(path, status, message, param, code), status_code=status, headers=headers)


def describe_validation(errors: list[dict[str, Any]], content_type: str = "") -> tuple[str, str | None]:
    """A one-line message (and the field) from pydantic's errors: what is wrong where."""
    parts, first_param = [], None
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            detail = err.get("ctx", {}).get("error", "")
            return f"the body is not valid JSON ({detail} at character {loc[0] if loc else '?'})", None
        if not loc and err.get("type") == "value_error":  # a rule over the whole body names its own field
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            named = re.match(r"([\w.\[\]]+): ", message)
            return message, named.group(1) if named else None
        if not loc:  # the body as a whole: missing, not JSON, or JSON but not an object
            return _describe_body(err, content_type), None
        field = ".".join(loc)
        first_param = first_param or field
        parts.append(f"{field}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts), first_param


def _describe_body(err: dict[str, Any], content_type: str) -> str:
    media = content_type.split(";")[0].strip().lower()
    if err.get("type") == "missing":
        return "the request has no body — send a JSON object with Content-Type: application/json"
    if isinstance(err.get("input"), bytes):  # not read as JSON: the Content-Type did not say JSON
        said = f"this request says {media}" if media else "this request has no Content-Type"
        return f"the body must be JSON, sent with Content-Type: application/json ({said})"
    kind = type(err.get("input")).__name__
    kind = {"list": "an array", "str": "a string", "NoneType": "null", "int": "a number", "float": "a number",
            "bool": "a boolean"}.get(kind, kind)
    return f"the body must be a JSON object ({{...}}), not {kind}"


def install_handlers(app: FastAPI) -> None:
    """Render every refusal in the caller's shape; no request mistake becomes a 500."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request.url.path, exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation(list(exc.errors()), request.headers.get("content-type", ""))
        path = request.url.path
        # OpenAI answers malformed bodies with 400; Kaito's FastAPI server with 422.
        return error_response(path, 400 if is_openai(path) else 422, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request.url.path, exc.status_code, str(exc.detail), headers=exc.headers)
