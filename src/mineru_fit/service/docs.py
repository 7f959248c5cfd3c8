"""The FastAPI app with API docs that load nothing from the internet.

FastAPI's /docs and /redoc pages fetch Swagger UI and ReDoc from a CDN, which a service on an offline
or air-gapped machine cannot reach. fastapi-offline (in the `api` extra) ships both and serves them from
this service; without it the pages say where the schema is instead of loading a blank page.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

DOCS_STATIC_URL = "/static-offline-docs"
_FALLBACK = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head><body>
<h1>{title}</h1><p>The interactive API docs need the fastapi-offline package, which this install lacks
(<code>pip install 'mineru-fit[api]'</code>). The OpenAPI schema is at <a href="{root}/openapi.json">/openapi.json</a>.</p>
</body></html>"""


def app_with_offline_docs(**kwargs: Any) -> FastAPI:
    """FastAPI(**kwargs) with /docs and /redoc served from this service's own files."""
    try:
        from fastapi_offline import FastAPIOffline
    except ImportError:
        app = FastAPI(docs_url=None, redoc_url=None, **kwargs)

        async def fallback(request: Any) -> HTMLResponse:
            return HTMLResponse(_FALLBACK.format(title=app.title, root=request.scope.get("root_path", "")))

        for path in ("/docs", "/redoc"):
            app.add_route(path, fallback, include_in_schema=False)
        return app
    return FastAPIOffline(static_url=DOCS_STATIC_URL, **kwargs)
