"""Serve the console page at `/` and its modules under `/static/`, from the package itself.

No CDN and no build step: the files in `static/` are what the browser runs. Everything is sent
with an explicit UTF-8 charset (the console logs `✅` lines that must survive the trip).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["mount"]


class _Utf8StaticFiles(StaticFiles):
    """Static files whose text types say charset=utf-8, and that browsers revalidate."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        content_type = response.headers.get("content-type", "")
        if (
            content_type.startswith(("text/", "application/javascript"))
            and "charset" not in content_type
        ):
            response.headers["content-type"] = content_type + "; charset=utf-8"
        response.headers.setdefault("cache-control", "no-cache")
        return response


def _index() -> str:
    return resources.files("callbridge.console").joinpath("static/index.html").read_text("utf-8")


def mount(app: FastAPI) -> None:
    app.mount(
        "/static", _Utf8StaticFiles(packages=[("callbridge.console", "static")]), name="static"
    )

    @app.get("/", include_in_schema=False)
    async def console_page() -> HTMLResponse:
        return HTMLResponse(_index(), headers={"cache-control": "no-cache"})
