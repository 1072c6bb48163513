"""The Gradio web app: an understanding tab (X-ray in, report out, optionally streamed token by
token) and a generation tab (report in, downloadable PNG out). Every call goes through the same
bounded, batching queue as the HTTP API; a bad upload shows a message, never a traceback.

Both events are public, named endpoints, so gradio_client calls the app as it calls any Space:

    client = gradio_client.Client("http://HOST:PORT/")
    image, report = client.predict(handle_file("cxr.png"), INSTRUCTION, 256, False, api_name="/report")
    png_path = client.predict("FINDINGS: ...", 50, 2.0, 0, api_name="/generate")"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from unixcxr.data.images import to_uint8  # noqa: E402
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT, REPORT_INSTRUCTIONS  # noqa: E402
from unixcxr.flow.presets import preset_values  # noqa: E402
from unixcxr.serve.batcher import QueueFull  # noqa: E402
from unixcxr.serve.service import ModelService, UploadError, decode_upload  # noqa: E402
from unixcxr.validation import RULES, InvalidValue  # noqa: E402

RELEASED = preset_values("released")  # the sliders start at the authors' evaluation settings
IMAGE_HEIGHT = 400  # display size in pixels; small model outputs are scaled up
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".dcm", ".dicom"]
# System fonts only: the default theme would make every browser fetch fonts from the internet.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])
# Gradio keeps uploads and outputs in its cache folder; they are patient data, so they are deleted
# within the hour: (check every N seconds, delete files older than N seconds).
CACHE_LIFETIME_S = (1800, 1800)
NOTICE = ("Research software: the reports and images are machine-generated and must not be used for "
          "diagnosis.")


def generation_sliders(limits) -> dict[str, tuple]:
    """(minimum, maximum, value) of the generation tab's sliders: exactly the range the service
    accepts (unixcxr.validation's rules, the server's step limit), starting at the released values."""
    return {"steps": (RULES["steps"].lo, limits.max_steps, RELEASED["num_points"]),
            "cfg_text": (RULES["cfg_text"].lo, RULES["cfg_text"].hi, RELEASED["cfg_text"])}


def _read_upload(path: str | None, service: ModelService):
    if not path:
        raise gr.Error("Upload a chest X-ray first (PNG, JPEG or DICOM).")
    try:
        with open(path, "rb") as f:
            data = f.read(service.limits.max_upload_bytes + 1)
        return decode_upload(data, os.path.basename(path), service.limits)
    except (UploadError, OSError) as err:
        raise gr.Error(str(err)) from None


def build_ui(service: ModelService) -> gr.Blocks:
    limits = service.limits

    def write_report(path, instruction, max_new_tokens, stream):
        pixels = _read_upload(path, service)
        shown = Image.fromarray(to_uint8(pixels))
        try:
            if not stream:
                yield shown, service.report(pixels, instruction, max_new_tokens).result(limits.request_timeout_s)
                return
            text = ""
            for piece in service.stream_report(pixels, instruction, max_new_tokens):
                text += piece
                yield shown, text
        except (UploadError, InvalidValue) as err:
            raise gr.Error(str(err)) from None
        except QueueFull:
            raise gr.Error("The server is busy; try again in a moment.") from None

    def draw_image(report, steps, cfg_text, seed):
        try:
            return service.generate(report, steps, cfg_text, seed or 0).result(
                limits.request_timeout_s)
        except (UploadError, InvalidValue) as err:
            raise gr.Error(str(err)) from None
        except QueueFull:
            raise gr.Error("The server is busy; try again in a moment.") from None

    with gr.Blocks(title="UniX chest X-ray", analytics_enabled=False, delete_cache=CACHE_LIFETIME_S) as app:
        gr.Markdown(f"## UniX: chest X-ray reports and images\n{NOTICE}")
        with gr.Tab("Report from image"):
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES,
                                     type="filepath", elem_id="report-upload")
                    instruction = gr.Dropdown(choices=list(REPORT_INSTRUCTIONS), value=DEFAULT_REPORT_PROMPT,
                                              allow_custom_value=True, label="Instruction (pick or write one)")
                    max_new_tokens = gr.Slider(8, limits.max_new_tokens, value=limits.default_new_tokens, step=1,
                                               label="Longest report (tokens)")
                    stream = gr.Checkbox(value=True, label="Show the report as it is written")
                    button = gr.Button("Write report", variant="primary", elem_id="report-button")
                with gr.Column():
                    shown = gr.Image(label="Image read", interactive=False, height=IMAGE_HEIGHT, elem_id="report-image")
                    report = gr.Textbox(label="Report", lines=10, elem_id="report-text")
            button.click(write_report, [upload, instruction, max_new_tokens, stream], [shown, report],
                         api_name="report", api_visibility="public")
        with gr.Tab("Image from report"):
            with gr.Row():
                with gr.Column():
                    text = gr.Textbox(label="Report", lines=8, elem_id="gen-text",
                                      placeholder="FINDINGS: Small left pleural effusion. ...")
                    ranges = generation_sliders(limits)
                    steps = gr.Slider(*ranges["steps"], step=1,
                                      label=f"Sampling steps (released: {RELEASED['num_points']})")
                    cfg_text = gr.Slider(*ranges["cfg_text"], step=0.1,
                                         label=f"Text guidance (released: {RELEASED['cfg_text']})")
                    seed = gr.Number(value=0, precision=0, label="Seed")
                    draw = gr.Button("Draw image", variant="primary", elem_id="gen-button")
                with gr.Column():
                    image = gr.Image(label="Generated X-ray", type="pil", format="png", interactive=False,
                                     height=IMAGE_HEIGHT, buttons=["download"], elem_id="gen-image")
            draw.click(draw_image, [text, steps, cfg_text, seed], image, api_name="generate", api_visibility="public")
    return app.queue(default_concurrency_limit=limits.max_batch, max_size=limits.max_queue)
