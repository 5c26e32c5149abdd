"""One error shape for every refusal: `{"error": <stable code>, "detail": <reason>}`."""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from callbridge.api.auth import AuthError, RateLimited
from callbridge.calls.carrier import CarrierError, CarrierUnavailable
from callbridge.calls.service import CallEnded, CallNotFound, NotAnswerable
from callbridge.logs import get_logger

__all__ = ["error_response", "install_error_handlers"]

log = get_logger(__name__)


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        response = error_response(exc.status, exc.error, exc.detail)
        if exc.status == 401:
            # RFC 6750 §3.1: no error code when the request carried no credentials at all.
            challenge = 'Bearer realm="callbridge"'
            if exc.error != "missing_credentials":
                challenge += f', error="invalid_token", error_description="{exc.error}"'
            response.headers["WWW-Authenticate"] = challenge
        return response

    @app.exception_handler(RateLimited)
    async def _rate(request: Request, exc: RateLimited) -> JSONResponse:
        seconds = max(1, math.ceil(exc.retry_after))
        response = error_response(429, "rate_limited", exc.detail, retry_after=seconds)
        response.headers["Retry-After"] = str(seconds)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        log.info("Invalid request", path=request.url.path, errors=len(errors))
        detail = "; ".join(_describe(error) for error in errors) or "invalid request"
        return error_response(422, "invalid_request", detail)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(CallNotFound)
    async def _not_found(request: Request, exc: CallNotFound) -> JSONResponse:
        log.info("Unknown call", path=request.url.path, call_control_id=str(exc))
        return error_response(404, "call_not_found", f"no call with call_control_id {exc}")

    @app.exception_handler(CallEnded)
    async def _ended(request: Request, exc: CallEnded) -> JSONResponse:
        log.info("Command on an ended call", path=request.url.path, call_control_id=str(exc))
        return error_response(409, "call_ended", f"call {exc} has ended")

    @app.exception_handler(NotAnswerable)
    async def _not_answerable(request: Request, exc: NotAnswerable) -> JSONResponse:
        log.info("Answer refused", path=request.url.path, call_control_id=str(exc))
        return error_response(
            409, "not_answerable", f"call {exc} is not an inbound call waiting to be answered"
        )

    @app.exception_handler(CarrierError)
    async def _carrier(request: Request, exc: CarrierError) -> JSONResponse:
        unavailable = isinstance(exc, CarrierUnavailable)
        if not unavailable:  # the client already logged "Telnyx unavailable" once
            log.warning(
                "Telnyx refused a command",
                path=request.url.path,
                status=exc.status,
                code=exc.code,
                detail=exc.detail,
            )
        return error_response(
            502,
            "carrier_unavailable" if unavailable else "carrier_error",
            f"Telnyx answered {exc.status}: {exc.title}"
            + (f" — {exc.detail}" if exc.detail else ""),
            carrier={
                "status": exc.status,
                "code": exc.code,
                "title": exc.title,
                "detail": exc.detail,
            },
        )
