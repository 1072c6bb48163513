"""One FastAPI app: the JSON API under /api and the Gradio web app at /, sharing one model queue."""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.api import api_router, install_error_handlers
from unixcxr.serve.service import DEFAULT_LIMITS, ModelService, ServeLimits

log = logging.getLogger("unixcxr.serve")
DOCS_URL, OPENAPI_URL, DOCS_ASSETS = "/api/docs", "/api/openapi.json", "/api/docs/assets"


def install_docs(app: FastAPI) -> None:
    """/api/docs from Swagger UI's files inside the swagger-ui-bundle package: FastAPI's default page
    loads them from a CDN, which a hospital network may block and should never be asked to reach.
    That bundle's Swagger UI (4.x) reads OpenAPI 3.0, which is all our schema uses. Without the
    package, a plain page links the schema."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None

    if swagger_ui_path is not None:
        from fastapi.staticfiles import StaticFiles

        app.openapi_version = "3.0.3"
        app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    async def docs():
        if swagger_ui_path is None:
            return HTMLResponse(f'<!doctype html><title>{app.title}</title><h1>{app.title}</h1>'
                                f'<p>The OpenAPI schema: <a href="{OPENAPI_URL}">{OPENAPI_URL}</a> '
                                "(pip install swagger-ui-bundle for the interactive page).</p>")
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=app.title,
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def build_app(pipe: UniXPipeline, limits: ServeLimits = DEFAULT_LIMITS, log_text: bool = False,
              continuous: bool | None = None) -> FastAPI:
    """log_text: also log generated report text (off by default: reports are patient data).
    continuous: report requests join a running decode batch between tokens (None: on a CPU)."""
    # gradio takes seconds to import: only a process that builds the app pays for it
    import gradio as gr

    from unixcxr.serve.ui import THEME, build_ui

    service = ModelService(pipe, limits, continuous)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="UniX chest X-ray API", docs_url=None, openapi_url=OPENAPI_URL, redoc_url=None,
                  lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    install_docs(app)

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        """Method, path, status and time only: never bodies, query strings or report text."""
        start = time.perf_counter()
        response = await call_next(request)
        if request.url.path.startswith("/api/"):
            log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                     (time.perf_counter() - start) * 1000)
        return response

    app.include_router(api_router(service, log_text))
    return gr.mount_gradio_app(app, build_ui(service), path="", max_file_size=limits.max_upload_bytes,
                               ssr_mode=False, mcp_server=False, theme=THEME, footer_links=["api"],
                               show_error=False)  # gr.Error messages only, never exception text


def serve(pipe: UniXPipeline, host: str, port: int, limits: ServeLimits = DEFAULT_LIMITS,
          log_text: bool = False, continuous: bool | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_app(pipe, limits, log_text, continuous)
    log.info("serving %s on http://%s:%d (web app at /, API at /api, docs at /api/docs)", pipe.config.name,
             host, port)
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


class BackgroundServer:
    """uvicorn in a thread on 127.0.0.1 (a free port unless given), as a context manager: for
    notebooks, tests and benchmarks that need the real HTTP server in-process."""

    STARTUP_S = 60.0

    def __init__(self, app: FastAPI, port: int | None = None):
        import uvicorn

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, name="unixcxr-http", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.STARTUP_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
