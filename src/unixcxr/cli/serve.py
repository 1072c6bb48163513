"""Serve a UniX model: a web app (report from image, image from report) and a JSON HTTP API."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from unixcxr.cli import CliError
from unixcxr.cli.report import add_pixel_limit_argument, load_pipeline, max_pixels
from unixcxr.serve.limits import MIB, ServeLimits

PORT_MAX = 65535

EXAMPLES = """\
examples:
  unixcxr serve --model runs/small                       # http://127.0.0.1:7860
  unixcxr serve --model ~/weights/UniX --device cuda --dtype bf16 --port 8080
  unixcxr serve --demo                                   # random tiny model: try the app, no weights
  curl -s -X POST localhost:7860/api/report -F image=@cxr.png
  curl -s -X POST localhost:7860/api/generate -H 'content-type: application/json' \\
       -d '{"report": "FINDINGS: Small left pleural effusion.", "seed": 0}'

The web app is at /, the JSON API under /api (POST /api/report with a multipart file field
"image" or JSON {"image": BASE64}; POST /api/generate with JSON {"report": TEXT, "steps",
"cfg_text", "seed", "settings"} -> {"image": BASE64_PNG}), its docs at /api/docs. Requests
share one queue: up to --max-batch run together, up to --max-queue wait, more are answered
503 'busy' (with Retry-After). Uploads are checked by content (PNG, JPEG, DICOM), size and
pixel count (from the header, before decoding, which runs beside the event loop). Logs carry method,
path, status and time, never report text (unless --log-reports). Listens on 127.0.0.1 by
default; use --host 0.0.0.0 only behind your own access control."""


def register(subparsers: argparse._SubParsersAction) -> None:
    d = ServeLimits()
    parser = subparsers.add_parser("serve", help=__doc__.splitlines()[0], description=__doc__, epilog=EXAMPLES,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder, run folder or release folder")
    parser.add_argument("--demo", action="store_true", help="serve a random-weight tiny model (outputs are noise)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="weights dtype (default fp32)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--max-batch", type=int, default=d.max_batch,
                        help=f"requests run together in one model call (default {d.max_batch})")
    parser.add_argument("--image-batch", type=int, default=d.image_batch,
                        help=f"images sampled together (default {d.image_batch})")
    parser.add_argument("--max-queue", type=int, default=d.max_queue,
                        help=f"requests allowed to wait (default {d.max_queue})")
    parser.add_argument("--max-upload-mb", type=int, default=d.max_upload_bytes // MIB,
                        help=f"largest accepted upload in MiB (default {d.max_upload_bytes // MIB})")
    add_pixel_limit_argument(parser)
    parser.add_argument("--batching", choices=("auto", "continuous", "grouped"), default="auto",
                        help="reports: continuous (requests join a running decode batch between tokens), "
                             "grouped (requests that arrive together with equal settings run as one batch: "
                             "on a GPU one CUDA graph per token); auto: continuous on a CPU, grouped on a GPU")
    parser.add_argument("--log-reports", action="store_true", help="also log report text (patient data!)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    if (args.model is None) == (not args.demo):
        raise CliError("give --model FOLDER (or --demo for a random-weight tiny model)")
    if not 1 <= args.port <= PORT_MAX:
        raise CliError(f"--port must be from 1 to {PORT_MAX}, got {args.port}")
    for name in ("max_batch", "max_queue", "image_batch", "max_upload_mb"):
        if getattr(args, name) < 1:  # 0 would not mean 'none': for --max-queue it would mean unbounded
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    limits = dataclasses.replace(ServeLimits(), max_batch=args.max_batch, max_queue=args.max_queue,
                                 image_batch=args.image_batch, max_upload_bytes=args.max_upload_mb * MIB,
                                 max_pixels=max_pixels(args))
    try:
        from unixcxr.serve.app import serve
    except ImportError as err:
        raise CliError(f"the web app needs gradio ({err}); install it with: pip install 'unixcxr[serve]'") from err
    with tempfile.TemporaryDirectory(prefix="unixcxr-demo-") as tmp:
        if args.demo:
            from unixcxr.serve.demo_model import write_demo_model_folder

            args.model = write_demo_model_folder(Path(tmp) / "model")
        continuous = {"auto": None, "continuous": True, "grouped": False}[args.batching]
        serve(load_pipeline(args), args.host, args.port, limits, args.log_reports, continuous)
    return 0
