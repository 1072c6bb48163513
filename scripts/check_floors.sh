#!/usr/bin/env bash
# Are the dependency floors in pyproject.toml true? Installs the project into a throwaway venv with
# the LOWEST allowed version of each floor that the code's API use decides (pip resolves everything
# else around them, as it would for a user), then runs the tests that exercise those packages:
# the server and web app (gradio, fastapi, starlette, uvicorn, python-multipart, pydantic,
# gradio_client) and image reading (pydicom). Needs the package registries; takes a few minutes.
#
#   bash scripts/check_floors.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-$(mktemp -d)/floors}"
FLOORS=(
  "gradio==6.0.0"            # mount_gradio_app(theme=, footer_links=), api_visibility=, Image(buttons=): 6.0
  "pydicom==3.0.0"           # pydicom.pixels (apply_modality_lut, apply_voi_lut): 3.0
  "fastapi==0.115.2"         # gradio 6.0's own floor; our use (openapi_extra, lifespan) is older
  "starlette==0.40.0"        # gradio 6.0's floor; formparsers.MultiPartException is older
  "uvicorn==0.14.0"          # Server / Config / .started
  "python-multipart==0.0.18" # starlette's form parser
)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -c constraints.txt -e ".[dev]" "${FLOORS[@]}"
"$VENV/bin/python" - "${FLOORS[@]}" <<'PY'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, f"{name} {version(name)} installed, {wanted} asked"
print("installed:", ", ".join(sys.argv[1:]))
PY
OMP_NUM_THREADS=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" \
  tests/test_serve.py tests/test_serve_hardening.py tests/test_serve_clients.py tests/test_data_images.py \
  tests/test_model_folders.py
