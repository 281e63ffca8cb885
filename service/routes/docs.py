"""The API's own documentation: `/openapi.json`, `/docs` (Swagger UI) and `/redoc`.

With API keys set they need a key like every other route (a schema lists every route and
limit of the deployment), unless `public_docs` makes them public. A browser cannot send the
key for the page's own schema request, so a deployment that wants browsable docs sets
`public_docs`; with the key, `curl -H 'Authorization: Bearer KEY' /openapi.json` works.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from densekit.service.auth import require_api_key

OPENAPI_PATH = "/openapi.json"


def docs_router(public: bool) -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[] if public else [Depends(require_api_key)])

    @router.get(OPENAPI_PATH)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs")
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - docs")

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{request.app.title} - ReDoc")

    return router
