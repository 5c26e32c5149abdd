"""Liveness, readiness (store and hub reachable, and which is not) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callbridge import __version__
from callbridge.runtime import runtime_of

__all__ = ["router"]

router = APIRouter(tags=["health"])
READY_TIMEOUT = 2.0


@router.get("/api/health", summary="Liveness: the process answers")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


async def _check(probe: Any) -> str | None:
    try:
        await asyncio.wait_for(probe(), READY_TIMEOUT)
    except Exception as exc:  # any failure means "not ready"; say what it was
        return f"{type(exc).__name__}: {exc}"
    return None


@router.get("/api/ready", summary="Readiness: store and hub reachable")
async def ready(request: Request) -> JSONResponse:
    runtime = runtime_of(request)
    store_error, hub_error = await asyncio.gather(
        _check(runtime.store.ping), _check(runtime.hub.ping)
    )
    checks = {
        "store": {"ok": store_error is None, "error": store_error},
        "hub": {"ok": hub_error is None, "error": hub_error},
    }
    ok = store_error is None and hub_error is None
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


@router.get("/api/info", summary="What this service is: version, simulator mode, scenarios")
async def info(request: Request) -> dict[str, Any]:
    """For front ends: in simulator mode, the numbers that play each scenario."""
    runtime = runtime_of(request)
    scenarios: list[dict[str, str]] = []
    if runtime.simulator:
        from callbridge.sim.scenarios import SCENARIOS

        scenarios = [
            {"name": s.name, "number": s.number, "description": s.description}
            for s in SCENARIOS.values()
        ]
    return {
        "version": __version__,
        "simulator": runtime.simulator,
        "scenarios": scenarios,
        "ping_interval": runtime.settings.ws_ping_interval,
    }


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
