"""One error shape for every refusal: `{"error": <stable code>, "detail": <reason>}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from callbridge.calls.carrier import CarrierError, CarrierUnavailable
from callbridge.calls.service import CallEnded, CallNotFound
from callbridge.logs import get_logger

__all__ = ["error_response", "install_error_handlers"]

log = get_logger(__name__)


def error_response(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CallNotFound)
    async def _not_found(request: Request, exc: CallNotFound) -> JSONResponse:
        log.info("Unknown call", path=request.url.path, call_control_id=str(exc))
        return error_response(404, "call_not_found", f"no call with call_control_id {exc}")

    @app.exception_handler(CallEnded)
    async def _ended(request: Request, exc: CallEnded) -> JSONResponse:
        log.info("Command on an ended call", path=request.url.path, call_control_id=str(exc))
        return error_response(409, "call_ended", f"call {exc} has ended")

    @app.exception_handler(CarrierError)
    async def _carrier(request: Request, exc: CarrierError) -> JSONResponse:
        unavailable = isinstance(exc, CarrierUnavailable)
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
