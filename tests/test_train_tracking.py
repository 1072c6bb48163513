"""Training runs watched in the field's trackers: with tensorboard installed (the `track` extra) every
scalar of metrics.jsonl, each validation's sample sheet and its generated reports reach TensorBoard,
read back here with TensorBoard's own event reader; the recipe can turn it off; W&B is used only
when asked, and then only offline."""

import os

import numpy as np
import pytest
from PIL import Image
from torch import nn

from test_train_loop import Regression, _trainer
from unixcxr.train.metrics import WANDB_ENV, MetricsLog, read_metrics, wandb_requested
from unixcxr.train.recipe import RuntimeRecipe

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="pip install 'unixcxr[track]'")


def validate_writing_samples(folder):
    """A validator as ours are: it writes STAGE_DIR/samples/step_N.{png,txt} and returns numbers."""

    def validate(step: int) -> dict[str, float]:
        samples = folder / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        sheet = np.zeros((8, 12), np.uint8)
        sheet[:, :step] = 255  # the sheet of step N has N white columns
        Image.fromarray(sheet, mode="L").save(samples / f"step_{step:08d}.png")
        (samples / f"step_{step:08d}.txt").write_text(f"[0] generated: REPORT-OF-STEP-{step}\n")
        return {"mse": 1.0 / step}

    return validate


def events(folder):
    acc = event_accumulator.EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_scalars_sample_sheets_and_reports_reach_tensorboard(tmp_path):
    trainer = _trainer(tmp_path, nn.Linear(4, 1), Regression(), val_every=3)
    trainer.validate = validate_writing_samples(tmp_path)
    trainer.fit(Regression().stream(0, 6, 2))
    acc = events(tmp_path)
    train_loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    logged = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r and
              r.get("split") != "val"]
    assert [s for s, _ in train_loss] == [s for s, _ in logged] == [2, 4, 6]
    assert np.allclose([v for _, v in train_loss], [v for _, v in logged])
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val/mse")] == [(3, round(1 / 3, 6)), (6, round(1 / 6, 6))]
    images = acc.Images("val/samples")
    assert [e.step for e in images] == [3, 6]
    import io

    sheet = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)).convert("L"))
    assert sheet.shape == (8, 12) and (sheet[0] == 255).sum() == 6  # step 6's own sheet
    texts = acc.Tensors("val/reports/text_summary")
    assert [e.step for e in texts] == [3, 6] and b"REPORT-OF-STEP-6" in texts[-1].tensor_proto.string_val[0]


def test_the_recipe_turns_tensorboard_off(tmp_path):
    trainer = _trainer(tmp_path, nn.Linear(4, 1), Regression(), tensorboard=False)
    trainer.fit(Regression().stream(0, 6, 2))
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "metrics.jsonl").is_file()
    assert RuntimeRecipe().tensorboard is True and RuntimeRecipe().wandb is False


def test_wandb_is_used_only_when_asked(monkeypatch):
    monkeypatch.delenv(WANDB_ENV, raising=False)
    assert not wandb_requested(False) and wandb_requested(True)
    monkeypatch.setenv(WANDB_ENV, "offline")
    assert wandb_requested(False)


def test_an_offline_wandb_run_is_written_locally_and_never_synced(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="pip install wandb to check the offline W&B run")
    from unixcxr.train.distributed import DistEnv

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were anything sent, it would fail here
    log = MetricsLog(tmp_path / "metrics.jsonl", DistEnv(), tensorboard=False, wandb=True, name="und_sft")
    log.write({"step": 1, "loss": 0.5})
    log.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb")) and os.environ["WANDB_MODE"] == "offline"
