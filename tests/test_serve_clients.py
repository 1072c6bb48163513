"""The server as the field's clients use it, served for real on loopback: gradio_client calls the web
app's named endpoints and gets what the pipeline computes; /api/docs' schema documents every request
and response field with the rules in force; /api/generate takes diffusers' names and answers with
the settings it drew with."""

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve import LIMITS, png_bytes, xray
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.app import BackgroundServer, build_app
from unixcxr.serve.demo_model import write_demo_model_folder

REPORT = "FINDINGS: Small left effusion."
TOKENS = 8


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UniXPipeline.from_pretrained(write_demo_model_folder(tmp_path_factory.mktemp("m") / "model"))


@pytest.fixture(scope="module")
def server(pipe):
    with BackgroundServer(build_app(pipe, LIMITS)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url + "/", verbose=False)


def test_gradio_client_sees_two_named_endpoints(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/report", "/generate"} <= set(endpoints)
    assert [p["label"] for p in endpoints["/generate"]["parameters"]] == \
        ["Report", "Sampling steps (released: 50)", "Text guidance (released: 2.0)", "Seed"]


def test_gradio_client_report_equals_the_pipeline(client, pipe, tmp_path):
    from gradio_client import handle_file

    image = xray(0)
    Image.fromarray(image).save(tmp_path / "cxr.png")
    shown, text = client.predict(handle_file(str(tmp_path / "cxr.png")), DEFAULT_REPORT_PROMPT, TOKENS, False,
                                 api_name="/report")
    assert text == pipe.report(image, max_new_tokens=TOKENS)[0]
    assert Image.open(shown).size == (image.shape[1], image.shape[0])
    streamed = client.predict(handle_file(str(tmp_path / "cxr.png")), DEFAULT_REPORT_PROMPT, TOKENS, True,
                              api_name="/report")[1]
    assert streamed == text  # the streamed pieces end as the whole report


def test_gradio_client_generate_equals_the_pipeline(client, pipe):
    path = client.predict(REPORT, 4, 2.0, 9, api_name="/generate")
    expected = pipe.generate(REPORT, steps=4, cfg_text=2.0, seed=9)[0]
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected))


def test_gradio_client_gets_the_message_of_a_bad_request(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="report is empty"):
        client.predict("   ", 4, 2.0, 0, api_name="/generate")


def test_generate_takes_diffusers_names_and_answers_with_the_settings_used(server, pipe):
    answer = httpx.post(f"{server.url}/api/generate", json={"report": REPORT, "num_inference_steps": 3,
                                                            "guidance_scale": 3.0, "seed": 4}, timeout=60)
    body = answer.json()
    assert answer.status_code == 200, body
    assert {k: v for k, v in body.items() if k != "image"} == {
        "seed": 4, "settings": "unixcxr", "steps": 4, "num_inference_steps": 3, "guidance_scale": 3.0,
        "cfg_img": 1.0, "shift": 1.0, "size": 16}
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert np.array_equal(np.asarray(image), np.asarray(pipe.generate(REPORT, steps=4, cfg_text=3.0, seed=4)[0]))


@pytest.mark.parametrize("body, message", [
    ({"report": REPORT, "guidance_scal": 3.0}, "unknown field 'guidance_scal'; the fields are report, steps"),
    ({"report": REPORT, "steps": 10, "num_inference_steps": 3}, "num_inference_steps must be steps - 1 = 9"),
    ({"report": REPORT, "num_inference_steps": 100}, "num_inference_steps must be an integer from 1 to 99"),
    ({"steps": 3}, "report: field required"),
])
def test_misspelt_conflicting_or_missing_fields_are_a_400_naming_them(server, body, message):
    answer = httpx.post(f"{server.url}/api/generate", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"]


def test_the_openapi_schema_documents_requests_responses_and_the_rules_in_force(server):
    schema = httpx.get(f"{server.url}/api/openapi.json").json()
    generate = schema["paths"]["/api/generate"]["post"]
    body = generate["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["report"] and body["additionalProperties"] is False
    assert {"type": "integer", "minimum": 2, "maximum": LIMITS.max_steps}.items() <= body["properties"]["steps"].items()
    assert body["properties"]["num_inference_steps"]["maximum"] == LIMITS.max_steps - 1  # as enforced
    assert body["properties"]["guidance_scale"]["maximum"] == 20.0
    assert body["properties"]["settings"]["enum"] == ["released", "demo", "unixcxr"]
    report = schema["paths"]["/api/report"]["post"]["requestBody"]["content"]
    assert report["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert report["application/json"]["schema"]["properties"]["max_new_tokens"]["maximum"] == LIMITS.max_new_tokens
    responses = schema["components"]["schemas"]
    assert {"GenerateResponse", "ReportResponse", "HealthResponse", "ErrorResponse"} <= set(responses)
    assert "num_inference_steps" in responses["GenerateResponse"]["properties"]
    assert set(generate["responses"]) >= {"200", "400", "413", "503"}


def test_multipart_fields_go_through_the_same_model(server):
    answer = httpx.post(f"{server.url}/api/report", files={"image": ("x.png", png_bytes(xray(1)))},
                        data={"max_new_tokens": "4", "temperature": "2"})
    assert answer.status_code == 400 and "unknown field 'temperature'" in answer.json()["error"]
