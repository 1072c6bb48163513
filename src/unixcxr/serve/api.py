"""JSON HTTP API (request and response models in schemas.py, shown at /api/docs):

    GET  /api/health     -> {"status": "ok", "model": NAME, "waiting": N}
    POST /api/report     JSON {"image": BASE64, "prompt"?: str, "max_new_tokens"?: int}
                         or multipart/form-data with a file field "image" (+ the same fields)
                         -> {"report": TEXT}
    POST /api/generate   JSON {"report": TEXT, "steps"? | "num_inference_steps"?: int,
                               "cfg_text"? | "guidance_scale"?: float, "seed"?: int,
                               "settings"?: "released" | "demo" | "unixcxr" (default: the model's own)}
                         -> {"image": BASE64_PNG, "seed": int, and the sampler settings used}

Errors are {"error": MESSAGE} with a 4xx status (bad input naming the field and what it must be,
413 too large, 503 busy with a Retry-After header); an internal failure is a 500 with no detail
(the traceback goes to the server log only). Bodies are read up to the upload limit and no
further; uploads are decoded in a pool of their own, never on the event loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.formparsers import MultiPartException
from starlette.requests import Request as StarletteRequest

from unixcxr.serve.batcher import QueueFull
from unixcxr.serve.schemas import (
    ERRORS,
    GenerateRequest,
    GenerateResponse,
    HealthResponse,
    ReportRequest,
    ReportResponse,
    generate_body,
    parse,
    report_body,
)
from unixcxr.serve.service import ModelService, UploadError, png_base64
from unixcxr.validation import InvalidValue

log = logging.getLogger("unixcxr.serve")
BODY_OVERHEAD = 64 * 1024  # JSON fields and multipart headers beside the image
RETRY_AFTER_S = 2  # what a busy answer asks the client to wait


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def error_response(status: int, message: str) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def report_fields(request: Request, limit: int) -> tuple[bytes, str, ReportRequest]:
    """(image bytes, upload name, other fields) from a JSON or a multipart body."""
    body = await read_body(request, limit)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await StarletteRequest(request.scope, replay).form()
        except (MultiPartException, ValueError, KeyError) as err:
            raise ApiError(400, "malformed multipart/form-data body") from err
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart body needs a file field named 'image'")
        fields = parse(ReportRequest, {k: v for k, v in form.items()})
        return await upload.read(), upload.filename or "upload", fields
    fields = parse(ReportRequest, await asyncio.to_thread(parse_json, body))  # megabytes: not on the event loop
    try:
        data = base64.b64decode(str(fields.image), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, "'image' must be base64 (standard alphabet) of a PNG, JPEG or DICOM file") from err
    return data, "image", fields


def parse_json(body: bytes) -> dict:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise ApiError(400, "the body must be JSON (or multipart/form-data for /api/report)") from err
    if not isinstance(fields, dict):
        raise ApiError(400, "the JSON body must be an object")
    return fields


async def wait(future, timeout: float):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError as err:
        raise ApiError(503, "the request timed out in the queue; retry later") from err


def api_router(service: ModelService, log_text: bool = False) -> APIRouter:
    router = APIRouter(prefix="/api")
    limits = service.limits
    body_limit = limits.max_upload_bytes * 4 // 3 + BODY_OVERHEAD  # base64 is 4/3 of the bytes

    @router.get("/health", response_model=HealthResponse)
    async def health():
        return {"status": "ok", "model": service.pipe.config.name, "waiting": service.batcher.waiting}

    @router.post("/report", response_model=ReportResponse, responses=ERRORS, openapi_extra=report_body(limits))
    async def report(request: Request):
        """A report for an X-ray: multipart field `image`, or JSON {"image": BASE64}."""
        data, name, fields = await report_fields(request, body_limit)
        prompt, max_new_tokens = fields.prompt, fields.max_new_tokens
        service.check_report_request(prompt, max_new_tokens)  # refused before the upload is decoded
        pixels = await wait(service.read_upload(data, name), limits.request_timeout_s)
        text = await wait(service.report(pixels, prompt, max_new_tokens), limits.request_timeout_s)
        if log_text:
            log.info("report: %s", text)
        return {"report": text}

    @router.post("/generate", response_model=GenerateResponse, responses=ERRORS,
                 openapi_extra=generate_body(limits))
    async def generate(request: Request):
        """An X-ray drawn from a report, with the sampler settings it was drawn with."""
        body = parse(GenerateRequest, parse_json(await read_body(request, BODY_OVERHEAD + limits.max_report_chars * 4)))
        report, seed, key = service.check_generate_request(body.report, body.steps, body.cfg_text, body.seed,
                                                           body.settings, num_inference_steps=body.num_inference_steps,
                                                           guidance_scale=body.guidance_scale)
        image = await wait(service.submit_generate(report, seed, key), limits.request_timeout_s)
        png = await asyncio.to_thread(png_base64, image)  # encoding a large PNG is not the loop's work
        sampler = service.sampler_settings(key)
        return {"image": png, "seed": seed, "settings": key[-1] or service.pipe.conventions.settings,
                "steps": sampler.num_points, "num_inference_steps": sampler.num_points - 1,
                "guidance_scale": sampler.cfg_text, "cfg_img": sampler.cfg_img, "shift": sampler.shift,
                "size": image.size[0]}

    return router


def install_error_handlers(app) -> None:
    """Every error leaves as {"error": MESSAGE}; nothing from a traceback reaches the client."""

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err.status, err.message)

    @app.exception_handler(UploadError)
    @app.exception_handler(InvalidValue)
    async def bad_input(request, err: ValueError):
        return error_response(400, str(err))

    @app.exception_handler(QueueFull)
    async def busy(request, err):
        return error_response(503, "the server is busy; retry in a moment")

    @app.exception_handler(Exception)
    async def internal(request, err):
        log.exception("internal error in %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")
