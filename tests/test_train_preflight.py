"""A run is checked whole before anything is written (bad data, a changed recipe: one line, exit 2,
no stray recipe.yaml), a start that failed before any stage left a folder that starts afresh, and
`train --dry-run` plans a run (steps, tokens, FLOPs, memory, hours) without writing anything."""

import re
from pathlib import Path

import pytest
import yaml

from unixcxr.cli import main
from unixcxr.data.synthcxr import generate_dataset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOKENIZER_ONLY = {"preset": "tiny", "stages": {"tokenizer": {"vocab_size": 300}}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n=24, size=64, seed=1, workers=1, progress=False)
    return out


def _recipe(tmp_path: Path, fields: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(fields))
    return path


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_bad_data_is_one_line_and_leaves_no_run_folder(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", str(CONFIGS / "tiny.yaml"), "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope: no such data folder" in err
    assert not out.exists()
    holed = tmp_path / "holed"  # one image file gone: found before training, not in the middle of a stage
    generate_dataset(holed, n=12, size=64, seed=2, workers=1, progress=False)
    victim = sorted((holed / "files").rglob("*.jpg"))[0]
    victim.unlink()
    assert main(["train", str(CONFIGS / "tiny.yaml"), "--data", str(holed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "image file(s) of split" in err and victim.name in err
    assert not out.exists()


def test_a_folder_holding_only_a_recipe_starts_afresh(tmp_path, data):
    out = tmp_path / "run"
    out.mkdir()
    (out / "recipe.yaml").write_text("left by an older version's failed start\n")
    recipe = _recipe(tmp_path, TOKENIZER_ONLY)
    assert main(["train", str(recipe), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
    assert (out / "tokenizer.json").is_file() and yaml.safe_load((out / "recipe.yaml").read_text())["preset"] == "tiny"
    assert main(["train", str(recipe), "--data", str(data), "--out", str(out), "--no-progress"]) == 2  # now a run


def test_resuming_with_a_changed_recipe_names_the_fields(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(["train", str(_recipe(tmp_path, TOKENIZER_ONLY)), "--data", str(data), "--out", str(out),
                 "--no-progress"]) == 0
    changed = _recipe(tmp_path, {**TOKENIZER_ONLY, "seed": 7}, "changed.yaml")
    before = _files(out)
    assert main(["train", str(changed), "--data", str(data), "--out", str(out), "--resume"]) == 2
    assert "differs from the run's" in capsys.readouterr().err and _files(out) == before


def _plan_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        name = line.split(" ", 1)[0]
        if name in ("vision", "vae", "und_sft", "gen_pretrain", "gen_finetune"):
            rows[name] = line.split()
    return rows


def test_dry_run_plans_the_paper_run_on_gpus_and_writes_nothing(tmp_path, data, capsys):
    before = _files(data)
    out = tmp_path / "planned"
    assert main(["train", str(CONFIGS / "paper.yaml"), "--data", str(data), "--out", str(out), "--dry-run",
                 "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert "8 x H100" in text and "strategy fsdp" in text and "dry run: nothing was written" in text
    rows = _plan_rows(text)
    assert set(rows) == {"vision", "vae", "und_sft", "gen_pretrain", "gen_finetune"}
    steps = {name: int(row[1]) for name, row in rows.items()}
    assert steps["und_sft"] == 3840 and steps["gen_pretrain"] == 75000 and steps["gen_finetune"] == 5000
    memory = {name: float(rows[name][7]) for name in ("und_sft", "gen_pretrain", "gen_finetune")}
    hours = {name: float(rows[name][9]) for name in ("und_sft", "gen_pretrain", "gen_finetune")}
    fits = {name: int(rows[name][8]) for name in ("und_sft", "gen_pretrain", "gen_finetune")}
    assert all(10 < m < 80 for m in memory.values()), memory  # sharded over 8: fits an 80 GB card
    for name in memory:  # the micro-batch in the recipe fits, and the largest that fits is the limit
        micro = int(rows[name][3])
        # the training state is fixed and only activations grow with the micro-batch: more than pro rata
        assert micro * 80 / memory[name] - 1 <= fits[name] < micro * 80 / memory[name] * 3
    assert hours["gen_pretrain"] > hours["gen_finetune"] > 0 and hours["gen_pretrain"] > hours["und_sft"] > 0
    assert not out.exists() and _files(data) == before
    assert main(["train", str(CONFIGS / "paper.yaml"), "--data", str(data), "--dry-run", "--gpus", "1"]) == 0
    single = _plan_rows(capsys.readouterr().out)
    for name in memory:  # one GPU holds the whole training state, eight share it
        assert float(single[name][7]) > 1.5 * memory[name], name
        assert int(single[name][8]) < fits[name], name  # so less room is left for activations
    assert float(single["gen_pretrain"][9]) == pytest.approx(8 * hours["gen_pretrain"], rel=0.02)


def test_dry_run_of_the_cpu_recipe_uses_this_machine(data, capsys):
    assert main(["train", str(CONFIGS / "tiny.yaml"), "--data", str(data), "--dry-run", "--gpu", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "plan for this CPU, strategy single" in text
    assert re.search(r"data .* \(folder\): all train \d+", text)
    assert "und_sft" in _plan_rows(text)


def test_dry_run_reports_a_missing_generation_split_file(tmp_path, data, capsys):
    fields = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    fields["data"] = {"generation_split": {"train": str(tmp_path / "absent.csv")}}
    assert main(["train", str(_recipe(tmp_path, fields)), "--data", str(data), "--dry-run", "--gpu", "cpu"]) == 2
    assert "absent.csv: no such annotation file" in capsys.readouterr().err
    assert main(["train", str(CONFIGS / "tiny.yaml"), "--data", str(data), "--dry-run", "--gpus", "8"]) == 2
    assert "batch_size 4 does not split into micro-batches of 2 on 8 processes; use a batch_size divisible by 8" \
        in capsys.readouterr().err
