"""The HTTP API, served for real on loopback by uvicorn (web app mounted beside it) with a tiny
random model: answers equal the pipeline's, bad input gets a message (never a traceback), the
queue bounds and batches work, and the logs carry no report text."""

import base64
import dataclasses
import io
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from test_data_images import write_dicom
from unixcxr.flow.sampler import PRESETS
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.app import BackgroundServer, build_app
from unixcxr.serve.batcher import Batcher, QueueFull
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.serve.service import ModelService, ServeLimits
from unixcxr.validation import InvalidValue

TOKENS = 8
LIMITS = ServeLimits(max_upload_bytes=200_000, max_batch=4, max_queue=64)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return UniXPipeline.from_pretrained(write_demo_model_folder(tmp_path_factory.mktemp("m") / "model"))


@pytest.fixture(scope="module")
def server(pipe):
    with BackgroundServer(build_app(pipe, LIMITS)) as s:
        yield s


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def xray(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 40), dtype=np.uint8)


def test_health_names_the_model(server):
    assert httpx.get(f"{server.url}/api/health").json() == {"status": "ok", "model": "tiny", "waiting": 0}


def test_web_app_is_served_beside_the_api(server):
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_report_by_multipart_and_by_json_equals_the_pipeline(server, pipe):
    image = xray(0)
    expected = pipe.report(image, max_new_tokens=TOKENS)[0]
    multipart = httpx.post(f"{server.url}/api/report", files={"image": ("cxr.png", png_bytes(image))},
                           data={"max_new_tokens": str(TOKENS)})
    as_json = httpx.post(f"{server.url}/api/report", json={"image": base64.b64encode(png_bytes(image)).decode(),
                                                           "max_new_tokens": TOKENS})
    assert multipart.status_code == as_json.status_code == 200
    assert multipart.json() == as_json.json() == {"report": expected}


def test_dicom_uploads_are_read(server, pipe, tmp_path):
    dicom = write_dicom(tmp_path / "a.dcm", xray(1).astype(np.uint16) * 16)
    answer = httpx.post(f"{server.url}/api/report", files={"image": ("a.dcm", dicom.read_bytes())},
                        data={"max_new_tokens": str(TOKENS)})
    assert answer.json() == {"report": pipe.report(dicom, max_new_tokens=TOKENS)[0]}


def test_generate_returns_the_pipeline_image_as_png(server, pipe):
    answer = httpx.post(f"{server.url}/api/generate", json={"report": "FINDINGS: Small effusion.", "steps": 4,
                                                            "seed": 9}, timeout=60)
    assert answer.status_code == 200 and answer.json()["seed"] == 9
    image = Image.open(io.BytesIO(base64.b64decode(answer.json()["image"])))
    assert image.format == "PNG"
    expected = pipe.generate("FINDINGS: Small effusion.", steps=4, seed=9)[0]
    assert np.array_equal(np.asarray(image), np.asarray(expected))


BAD_REPORT_REQUESTS = [
    ("text file", dict(files={"image": ("notes.png", b"patient notes, not an image" * 10)}), 400, "not a PNG"),
    ("truncated png", dict(files={"image": ("cut.png", png_bytes(xray(2))[:60])}), 400, "cut.png: corrupt"),
    ("empty file", dict(files={"image": ("e.png", b"")}), 400, "empty"),
    ("no file field", dict(data={"prompt": "x"}, files={"other": ("a", b"x")}), 400, "field named 'image'"),
    ("bad base64", dict(json={"image": "not base64!"}), 400, "base64"),
    ("not json", dict(content=b"{nope", headers={"content-type": "application/json"}), 400, "must be JSON"),
    ("too many tokens", dict(json={"image": base64.b64encode(png_bytes(xray(3))).decode(), "max_new_tokens": 10**6}),
     400, "max_new_tokens must be an integer from 1 to 512"),
    ("too large", dict(files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + bytes(400_000))}), 413, "over the limit"),
]


@pytest.mark.parametrize("name, request_kwargs, status, message", BAD_REPORT_REQUESTS,
                         ids=[r[0] for r in BAD_REPORT_REQUESTS])
def test_bad_report_requests_get_a_message_not_a_traceback(server, name, request_kwargs, status, message):
    answer = httpx.post(f"{server.url}/api/report", **request_kwargs)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    assert "Traceback" not in answer.text and "File \"" not in answer.text


@pytest.mark.parametrize("body, message", [({"report": "  "}, "report is empty"),
                                           ({"report": "x", "steps": 1000}, "steps must be an integer from 2 to 100"),
                                           ({"report": "x", "steps": "many"}, "integer"),
                                           ({"report": "x", "settings": "fast"}, "settings must be")])
def test_bad_generate_requests_get_a_message(server, body, message):
    answer = httpx.post(f"{server.url}/api/generate", json=body)
    assert answer.status_code == 400 and message in answer.json()["error"]


def test_logs_carry_no_report_or_prompt_text(server, caplog):
    caplog.set_level(logging.DEBUG)
    prompt, report = "PROMPT-MARKER describe this film", "FINDINGS: REPORT-MARKER effusion"
    answer = httpx.post(f"{server.url}/api/report", files={"image": ("x.png", png_bytes(xray(4)))},
                        data={"prompt": prompt, "max_new_tokens": str(TOKENS)})
    httpx.post(f"{server.url}/api/generate", json={"report": report, "steps": 2})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /api/report 200" in logged and "POST /api/generate 200" in logged
    for secret in (prompt, report, answer.json()["report"]):
        assert secret not in logged


def test_the_generation_sliders_span_exactly_what_the_service_accepts(pipe):
    """The web app's sliders and the service read one source: every slider value is accepted, a step
    past either end is refused, and the sliders start at the released settings."""
    from unixcxr.serve.ui import generation_sliders

    service = ModelService(pipe, LIMITS)
    try:
        ranges = generation_sliders(LIMITS)
        assert set(ranges) == {"steps", "cfg_text"}
        for name, (lo, hi, value) in ranges.items():
            step = 1 if name == "steps" else 0.1
            for accepted in (lo, hi, value):
                service.check_generate_request("FINDINGS: Clear.", **{name: accepted})
            for refused in (lo - step, hi + step):
                with pytest.raises(InvalidValue):
                    service.check_generate_request("FINDINGS: Clear.", **{name: refused})
        released = PRESETS["released"]
        assert (ranges["steps"][2], ranges["cfg_text"][2]) == (released.num_points, released.cfg_text)
    finally:
        service.close()


# --- the queue ---------------------------------------------------------------------------------------
def test_waiting_requests_with_the_same_settings_run_as_one_batch():
    calls, gate = [], threading.Event()
    batcher = Batcher(lambda key, items: calls.append((key, list(items))) or [f"{key}:{i}" for i in items],
                      max_batch=8, max_queue=16)
    blocker = batcher.run_alone(gate.wait)  # holds the worker while requests pile up
    futures = [batcher.submit("a", i) for i in range(5)] + [batcher.submit("b", i) for i in range(2)]
    gate.set()
    assert [f.result(timeout=10) for f in futures] == [f"a:{i}" for i in range(5)] + ["b:0", "b:1"]
    assert blocker.result() is True and calls == [("a", [0, 1, 2, 3, 4]), ("b", [0, 1])]
    batcher.close()


def test_a_full_queue_refuses_at_once_and_a_failing_batch_fails_only_its_callers():
    gate = threading.Event()

    def run(key, items):
        if key == "bad":
            raise RuntimeError("boom")
        return items

    batcher = Batcher(run, max_batch=8, max_queue=2)
    taken = threading.Event()
    batcher.run_alone(lambda: taken.set() or gate.wait())
    assert taken.wait(timeout=10)  # the worker has taken the blocker: the queue is empty again
    bad, good = batcher.submit("bad", 1), batcher.submit("ok", 2)
    with pytest.raises(QueueFull):
        batcher.submit("ok", 3)
    gate.set()
    with pytest.raises(RuntimeError, match="boom"):
        bad.result(timeout=10)
    assert good.result(timeout=10) == 2
    batcher.close()


@pytest.mark.slow
def test_load_of_hundreds_of_requests_at_concurrency_8_loses_none(pipe):
    images = [xray(10 + i) for i in range(3)]
    expected_reports = [pipe.report(img, max_new_tokens=TOKENS)[0] for img in images]
    uploads = [png_bytes(img) for img in images]
    expected_images = {s: np.asarray(pipe.generate("FINDINGS: Clear.", steps=2, seed=s)[0]) for s in range(3)}
    limits = dataclasses.replace(LIMITS, max_batch=8)

    def one(i: int, client: httpx.Client) -> bool:
        if i % 4 == 3:
            answer = client.post("/api/generate", json={"report": "FINDINGS: Clear.", "steps": 2, "seed": i % 3})
            image = Image.open(io.BytesIO(base64.b64decode(answer.json()["image"])))
            return np.array_equal(np.asarray(image), expected_images[i % 3])
        answer = client.post("/api/report", files={"image": ("x.png", uploads[i % 3])},
                             data={"max_new_tokens": str(TOKENS)})
        return answer.status_code == 200 and answer.json()["report"] == expected_reports[i % 3]

    with BackgroundServer(build_app(pipe, limits)) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(lambda i: one(i, client), range(300)))
    assert len(results) == 300 and all(results)


def test_serve_command_needs_a_model_or_the_demo(capsys):
    from unixcxr.cli import main

    assert main(["serve"]) == 2
    assert "give --model FOLDER" in capsys.readouterr().err
