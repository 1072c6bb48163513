"""Request and response models of the JSON API: what /api/docs shows and what a client may send.

The models fix a request's shape (which fields exist, which are required, no unknown ones: a
misspelt `guidance_scal` is refused, not silently ignored). Every number's rule stays in
unixcxr.validation, applied by the service (serve/service.py) for the API and the web app alike;
the schemas below show those same rules (read from validation.RULES and the server's limits), so
the documentation cannot drift from what is enforced. Bodies are parsed by api.py itself (read up to
a limit, decoded off the event loop), then validated here with parse()."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from unixcxr.model.config import SAMPLER_PRESETS
from unixcxr.serve.service import ServeLimits, UploadError
from unixcxr.validation import RULES

Text = Annotated[object, WithJsonSchema({"type": "string"})]
Integer = Annotated[object, WithJsonSchema({"type": "integer"})]
Number = Annotated[object, WithJsonSchema({"type": "number"})]


class ReportRequest(BaseModel):
    """POST /api/report as JSON (or the same fields as multipart/form-data, `image` a file)."""

    model_config = ConfigDict(extra="forbid")
    image: Text = Field(description="base64 (standard alphabet) of a PNG, JPEG or DICOM file")
    prompt: Text = Field(None, description="the instruction (left out or empty: the released one)")
    max_new_tokens: Integer = Field(None, description="longest report in tokens (default: the server's)")


class GenerateRequest(BaseModel):
    """POST /api/generate. steps / num_inference_steps and cfg_text / guidance_scale are two names of
    one value each (ours, as the release counts, and diffusers'); give either, or both when they agree."""

    model_config = ConfigDict(extra="forbid")
    report: Text = Field(description="the findings the image should show")
    steps: Integer = Field(None, description="sampler grid points, as the release counts (50 = 49 Euler steps)")
    num_inference_steps: Integer = Field(None, description="Euler steps, as diffusers counts them (= steps - 1)")
    cfg_text: Number = Field(None, description="text guidance scale")
    guidance_scale: Number = Field(None, description="diffusers' name for cfg_text")
    seed: Integer = Field(0, description="the noise's seed: the same request draws the same image")
    settings: Annotated[object, WithJsonSchema({"type": "string", "enum": list(SAMPLER_PRESETS)})] = Field(
        None, description="sampler preset the unset values come from (default: the model's own)")


class ReportResponse(BaseModel):
    report: str = Field(description="the generated report")


class GenerateResponse(BaseModel):
    image: str = Field(description="base64 of the PNG drawn")
    seed: int
    settings: str = Field(description="the preset the unset values came from")
    steps: int = Field(description="grid points used")
    num_inference_steps: int = Field(description="Euler steps used (steps - 1)")
    guidance_scale: float = Field(description="text guidance scale used (cfg_text)")
    cfg_img: float
    shift: float
    size: int = Field(description="pixels per side")


class HealthResponse(BaseModel):
    status: str
    model: str = Field(description="the model's config name")
    waiting: int = Field(description="requests waiting for the model")


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong and, for bad input, which field and what it must be")


def parse(model: type[BaseModel], fields: dict) -> BaseModel:
    """fields -> the model, or UploadError naming the first field that does not fit (a 400)."""
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "body"
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            raise UploadError(f"unknown field {name!r}; the fields are {known}") from None
        raise UploadError(f"{name}: {first['msg'].lower()}") from None


# --- the schemas /api/docs shows, with the rules in force ------------------------------------------
def _bounds(name: str, hi: float | None = None) -> dict:
    """validation.RULES[name] as JSON-schema bounds (OpenAPI 3.0: exclusiveMinimum is a flag)."""
    rule = RULES[name]
    out = {}
    if rule.lo is not None:
        out["minimum"] = rule.lo
        if rule.lo_open:
            out["exclusiveMinimum"] = True
    top = min(v for v in (rule.hi, hi) if v is not None) if (rule.hi, hi) != (None, None) else None
    if top is not None:
        out["maximum"] = top
    return out


def request_schema(model: type[BaseModel], limits: ServeLimits) -> dict:
    """The model's JSON schema with each number's rule and this server's limits."""
    schema = model.model_json_schema()
    limits_hi = {"max_new_tokens": limits.max_new_tokens, "steps": limits.max_steps,
                 "num_inference_steps": limits.max_steps - 1}
    for name, prop in schema["properties"].items():
        if name in RULES:
            prop.update(_bounds(name, limits_hi.get(name)))
    if "report" in schema["properties"]:
        schema["properties"]["report"]["maxLength"] = limits.max_report_chars
    return schema


def report_body(limits: ServeLimits) -> dict:
    """openapi_extra of /api/report: the JSON body, or the same fields as a multipart upload."""
    json_schema = request_schema(ReportRequest, limits)
    form = {**json_schema, "properties": {**json_schema["properties"],
                                          "image": {"type": "string", "format": "binary",
                                                    "description": "a PNG, JPEG or DICOM file"}}}
    form.pop("additionalProperties", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": json_schema},
                                                          "multipart/form-data": {"schema": form}}}}


def generate_body(limits: ServeLimits) -> dict:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": request_schema(GenerateRequest, limits)}}}}


ERRORS = {400: {"model": ErrorResponse, "description": "bad input: the field named, and what it must be"},
          413: {"model": ErrorResponse, "description": "the body is over the upload limit"},
          500: {"model": ErrorResponse, "description": "internal error (details in the server log only)"},
          503: {"model": ErrorResponse, "description": "busy: retry after the Retry-After header's seconds"}}

