"""The generic training loop: schedule, EMA, accumulation, non-finite losses, checkpoints that
continue exactly, stage freezing on the real network, metrics and plots."""

import json
import random
import time

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from unixcxr.data.batches import GenerationExample, UnderstandingExample, make_batch
from unixcxr.model.config import tiny
from unixcxr.model.unix import UniX, is_gen_parameter
from unixcxr.train.checkpoint import CheckpointError, check_compatible, latest_checkpoint, list_checkpoints, read_meta
from unixcxr.train.distributed import DistEnv
from unixcxr.train.ema import EMA
from unixcxr.train.loop import LoopSettings, MicroBatch, NonFiniteLoss, Trainer
from unixcxr.train.plots import plot_metrics
from unixcxr.train.recipe import ModelStage
from unixcxr.train.stages import SPECS, ModelInputs, ModelLoss, set_trainable

CONFIG = tiny()
STAGE = ModelStage(steps=6, lr=0.05, warmup=2, batch_size=4, micro_batch_size=2, resolution=32)


class Regression:
    """A least-squares problem whose micro-batches are fixed by (step, chunk)."""

    def __init__(self, nan_at: tuple[int, int] | None = None):
        self.nan_at = nan_at

    def micro(self, step: int, chunk: int) -> MicroBatch:
        g = torch.Generator().manual_seed(step * 100 + chunk)
        x = torch.randn(2, 4, generator=g)
        ids = [f"s{step}c{chunk}a", f"s{step}c{chunk}b"]
        return MicroBatch((x, x.sum(1, keepdim=True), (step, chunk)), ids, num_tokens=8, flops=64.0)

    def stream(self, start: int, steps: int, accumulation: int):
        return (self.micro(s, c) for s in range(start, steps) for c in range(accumulation))

    def loss_fn(self, model: nn.Module):
        def loss(micro: MicroBatch) -> dict[str, torch.Tensor]:
            x, y, where = micro.data
            value = (model(x) - y).pow(2).mean()
            return {"loss": value * float("nan") if where == self.nan_at else value}

        return loss


def _trainer(tmp_path, model, problem, steps=6, strategy="single", **overrides) -> Trainer:
    torch.manual_seed(0)
    settings = LoopSettings(steps=steps, lr=0.05, warmup=2, accumulation=2, ema=0.5, log_every=2, checkpoint_every=3,
                            keep_checkpoints=2, progress=False, **overrides)
    params = dict(model.named_parameters())
    meta = {"stage": "und_sft", "config": CONFIG.to_dict(), "recipe": vars(STAGE)}
    return Trainer(model, params, problem.loss_fn(model), settings, DistEnv(), tmp_path, meta, peak_flops=1e9,
                   strategy=strategy)


def test_learning_rate_warms_up_linearly_then_stays_constant(tmp_path):
    t = _trainer(tmp_path, nn.Linear(4, 1), Regression())
    t.settings.warmup = 4
    assert [t.lr_at(s) for s in range(6)] == pytest.approx([0.0125, 0.025, 0.0375, 0.05, 0.05, 0.05])


def test_ema_follows_the_weights_with_the_configured_decay():
    p = nn.Parameter(torch.zeros(3))
    ema = EMA({"p": p}, decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update(step=100)
    assert torch.allclose(ema.shadow["p"], torch.full((3,), 0.1))
    with ema.applied():
        assert torch.allclose(p, torch.full((3,), 0.1))
    assert torch.equal(p.detach(), torch.ones(3))
    warm = EMA({"p": p}, decay=0.9999, warmup=True)
    assert warm.decay_at(0) == pytest.approx(0.1) and warm.decay_at(10**6) == 0.9999


def test_a_non_finite_loss_stops_training_naming_the_step_and_the_samples(tmp_path):
    problem = Regression(nan_at=(3, 1))
    trainer = _trainer(tmp_path, nn.Linear(4, 1), problem)
    with pytest.raises(NonFiniteLoss, match=r"step 3 \(batch ids \['s3c1a', 's3c1b'\]\)"):
        trainer.fit(problem.stream(0, 6, 2))
    assert trainer.step == 3


@pytest.mark.parametrize("strategy", ["single", "fsdp"])
def test_checkpoints_continue_exactly_as_if_never_interrupted(tmp_path, strategy):
    problem = Regression()
    straight = _trainer(tmp_path / "a", nn.Linear(4, 1), problem, strategy=strategy)
    straight.fit(problem.stream(0, 6, 2))
    first = _trainer(tmp_path / "b", nn.Linear(4, 1), problem, steps=3, strategy=strategy)
    first.fit(problem.stream(0, 3, 2))  # saves at step 3
    resumed = _trainer(tmp_path / "b", nn.Linear(4, 1), problem, strategy=strategy)  # as a fresh process would
    assert resumed.resume(CONFIG, "und_sft", STAGE) and resumed.step == 3
    resumed.fit(problem.stream(3, 6, 2))
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name
        assert torch.equal(straight.ema.shadow[name], resumed.ema.shadow[name])
        for key, value in straight.optimizer.state[p].items():
            assert torch.equal(value, resumed.optimizer.state[resumed.params[name]][key]), key


def test_only_the_newest_checkpoints_are_kept_and_no_temporary_file_is_left(tmp_path):
    problem = Regression()
    trainer = _trainer(tmp_path, nn.Linear(4, 1), problem, steps=12)
    trainer.fit(problem.stream(0, 12, 2))
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_00000009.safetensors", "step_00000012.safetensors"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names
    stored = load_file(tmp_path / "checkpoints" / names[-1])
    assert {"param.weight", "ema.weight", "optim.weight.exp_avg", "optim.weight.exp_avg_sq"} <= set(stored)
    meta = read_meta(tmp_path / "checkpoints" / names[-1])
    assert meta["step"] == 12 and meta["world_size"] == 1 and {"torch", "python", "numpy"} <= set(meta["rng"])


def test_sharded_checkpoints_are_folders_each_rank_writes_into_and_stale_temporaries_go(tmp_path):
    problem = Regression()
    trainer = _trainer(tmp_path, nn.Linear(4, 1), problem, steps=12, strategy="fsdp")
    trainer.fit(problem.stream(0, 12, 2))
    folder = tmp_path / "checkpoints"
    names = [p.name for p in list_checkpoints(folder)]
    assert names == ["step_00000009", "step_00000012"]
    files = sorted(p.name for p in (folder / names[-1]).iterdir())
    assert ".metadata" in files and "meta.json" in files and any(f.endswith(".distcp") for f in files)
    (folder / ".step_00000015.tmp").mkdir()  # a write killed half-way: not listed, removed at the next start
    (folder / ".step_00000015.tmp" / "__0_0.distcp").write_bytes(b"partial")
    assert latest_checkpoint(folder).name == "step_00000012"
    _trainer(tmp_path, nn.Linear(4, 1), problem, steps=12, strategy="fsdp")
    assert sorted(p.name for p in folder.iterdir()) == names


KILLED_MID_WRITE = """
import os, signal, sys
import safetensors.torch
real_save, calls = safetensors.torch.save_file, []

def save_then_die(tensors, path, metadata=None):  # the second checkpoint: half its bytes, then SIGKILL
    calls.append(path)
    if len(calls) < 2:
        return real_save(tensors, path, metadata=metadata)
    real_save(tensors, path + ".whole", metadata=metadata)
    data = open(path + ".whole", "rb").read()
    os.remove(path + ".whole")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

safetensors.torch.save_file = save_then_die  # before unixcxr imports it
sys.path.insert(0, {tests!r})
from pathlib import Path
import torch
from torch import nn
from test_train_loop import Regression, _trainer
problem = Regression()
torch.manual_seed(0)
_trainer(Path({run!r}), nn.Linear(4, 1), problem).fit(problem.stream(0, 6, 2))
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_earlier_one_to_resume_from(tmp_path):
    """A real SIGKILL in the middle of writing step 6's checkpoint (step 3's is on disk): the next start
    removes the half-written temporary, resumes from step 3 and ends where an uninterrupted run ends."""
    import subprocess
    import sys
    from pathlib import Path

    script = KILLED_MID_WRITE.format(tests=str(Path(__file__).parent), run=str(tmp_path / "run"))
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    folder = tmp_path / "run" / "checkpoints"
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and left[1] == "step_00000003.safetensors"
    assert left[0].startswith(".step_00000006.safetensors.") and left[0].endswith(".tmp")  # the half-written one
    assert latest_checkpoint(folder).name == "step_00000003.safetensors"
    problem = Regression()
    resumed = _trainer(tmp_path / "run", nn.Linear(4, 1), problem)  # the next start
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000003.safetensors"]  # the temporary is gone
    assert resumed.resume(CONFIG, "und_sft", STAGE) and resumed.step == 3
    resumed.fit(problem.stream(3, 6, 2))
    torch.manual_seed(0)  # the killed run's initial weights
    straight = _trainer(tmp_path / "straight", nn.Linear(4, 1), problem)
    straight.fit(problem.stream(0, 6, 2))
    for name, p in straight.params.items():
        assert torch.equal(p, resumed.params[name]), name


def test_an_unsharded_checkpoint_refuses_another_world_size_naming_the_fix(tmp_path):
    problem = Regression()
    _trainer(tmp_path, nn.Linear(4, 1), problem, steps=3).fit(problem.stream(0, 3, 2))
    path = latest_checkpoint(tmp_path / "checkpoints")
    check_compatible(path, read_meta(path), CONFIG, "und_sft", STAGE, DistEnv())
    with pytest.raises(CheckpointError, match="written by 1 process.*--nproc-per-node 1.*strategy: fsdp"):
        check_compatible(path, read_meta(path), CONFIG, "und_sft", STAGE, DistEnv(rank=0, world_size=2))


def test_a_checkpoint_from_another_config_or_recipe_is_refused_naming_the_fields(tmp_path):
    problem = Regression()
    _trainer(tmp_path, nn.Linear(4, 1), problem, steps=3).fit(problem.stream(0, 3, 2))
    other = tiny()
    other.llm.num_layers, other.vision.depth = 3, 2
    with pytest.raises(CheckpointError, match="differing fields: llm.num_layers, vision.depth"):
        _trainer(tmp_path, nn.Linear(4, 1), problem).resume(other, "und_sft", STAGE)
    faster = ModelStage(**{**vars(STAGE), "lr": 0.1})
    with pytest.raises(CheckpointError, match=r"stages.und_sft recipe; differing fields: lr\."):
        _trainer(tmp_path, nn.Linear(4, 1), problem).resume(CONFIG, "und_sft", faster)
    longer = ModelStage(**{**vars(STAGE), "steps": 60})  # extending a run is allowed
    assert _trainer(tmp_path, nn.Linear(4, 1), problem).resume(CONFIG, "und_sft", longer)


def test_metrics_record_losses_throughput_and_mfu_and_plot_as_a_png(tmp_path):
    problem = Regression()
    _trainer(tmp_path, nn.Linear(4, 1), problem).fit(problem.stream(0, 6, 2))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] and r["loss"] >= 0 for r in records)
    png = plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "loss.png", title="test")
    with Image.open(png) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_the_loaders_share_of_the_step_time_is_recorded(tmp_path):
    problem = Regression()

    def slow(stream):  # a loader that takes 50 ms a micro-batch: it, not the step, dominates
        for micro in stream:
            time.sleep(0.05)
            yield micro

    _trainer(tmp_path, nn.Linear(4, 1), problem, steps=4).fit(slow(problem.stream(0, 4, 2)))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(0.5 < r["data_fraction"] <= 1.0 for r in records)


def _tiny_batches(config, task: str, n: int = 2):
    rng = random.Random(0)
    out = []
    for k in range(n):
        g = torch.Generator().manual_seed(k)
        if task == "und":
            ex = [UnderstandingExample(torch.randn(3, 32, 32, generator=g), [10, 11], [20 + k, 21, 22], f"u{k}{j}")
                  for j in range(2)]
            batch = make_batch(config, understanding=ex)
            out.append(MicroBatch(ModelInputs(batch), batch.ids, batch.num_tokens))
        else:
            ex = [GenerationExample(torch.randn(4, 4, 4, generator=g), [30 + k, 31], f"g{k}{j}") for j in range(2)]
            batch = make_batch(config, generation=ex, rng=rng)
            films = torch.rand(2, 32, 32, generator=g)
            out.append(MicroBatch(ModelInputs(batch, noise_seed=k, repa_images=films), batch.ids, batch.num_tokens))
    return out


@pytest.mark.parametrize("stage", ["und_sft", "gen_pretrain"])
def test_a_stage_step_changes_its_own_parameters_and_no_others(tmp_path, stage):
    from unixcxr.train.stages import VitRepaEncoder

    torch.manual_seed(0)
    config = tiny()
    config.gen.repa_dim = config.vision.width  # the stage-1 ViT is the REPA target
    model = UniX(config)
    spec = SPECS[stage]
    repa = stage == "gen_pretrain"
    params = set_trainable(model, spec, repa)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = ModelLoss(model, spec, torch.device("cpu"), VitRepaEncoder(model) if repa else None)
    settings = LoopSettings(steps=2, lr=1e-2, accumulation=2, progress=False, log_every=1)
    trainer = Trainer(model, params, loss, settings, DistEnv(), tmp_path, {"config": CONFIG.to_dict()})
    trainer.fit(_tiny_batches(model.config, "und" if stage == "und_sft" else "gen", n=4))
    for name, p in model.named_parameters():
        changed = not torch.equal(before[name], p)
        expected = (not is_gen_parameter(name)) if stage == "und_sft" else is_gen_parameter(name)
        assert changed == expected, name


def _no_zero_parameters(model) -> None:
    """The velocity head starts at zero, where the MSE does not depend on t: give it (and every other
    all-zero tensor) small random values."""
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)


def test_a_stages_timestep_shift_moves_training_t_and_leaves_validation_t_alone():
    """recipe stages.<gen>.timestep_shift: while training, t is drawn at the stage's shift from the
    micro-batch's seeded generator (then the noise, as the network draws them); in eval mode at the
    config's, so the validation MSE of recipes with different shifts compares."""
    from unixcxr.flow import matching

    torch.manual_seed(0)
    model = UniX(tiny())
    _no_zero_parameters(model)
    micro = _tiny_batches(model.config, "gen", n=1)[0]
    batch = micro.data.batch

    def explicit(shift):
        g = torch.Generator().manual_seed(micro.data.noise_seed)
        t = matching.sample_timesteps(batch.latents.shape[0], shift, g)
        return model(batch.sequence, latents=batch.latents, t=t, freeze_und=True, generator=g)["mse"]

    shifted = ModelLoss(model, SPECS["gen_pretrain"], torch.device("cpu"), timestep_shift=3.0)
    plain = ModelLoss(model, SPECS["gen_pretrain"], torch.device("cpu"))
    model.train()
    assert torch.equal(shifted(micro)["mse"], explicit(3.0))
    assert torch.equal(plain(micro)["mse"], explicit(model.config.gen.timestep_shift))
    assert not torch.equal(shifted(micro)["mse"], plain(micro)["mse"])
    model.eval()
    assert torch.equal(shifted(micro)["mse"], plain(micro)["mse"])


def test_validation_of_a_ddp_wrapped_network_keeps_the_configs_t(tmp_path):
    """Under torchrun the loss holds the DDP wrapper while the Validator switches the raw network to
    eval mode: validation must still draw t at the config's shift."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = UniX(tiny())
    _no_zero_parameters(model)
    micro = _tiny_batches(model.config, "gen", n=1)[0]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(model)
        shifted = ModelLoss(wrapped, SPECS["gen_pretrain"], torch.device("cpu"), timestep_shift=3.0)
        plain = ModelLoss(wrapped, SPECS["gen_pretrain"], torch.device("cpu"))
        with torch.no_grad():
            assert not torch.equal(shifted(micro)["mse"], plain(micro)["mse"])
            model.eval()  # what the Validator does
            assert torch.equal(shifted(micro)["mse"], plain(micro)["mse"])
    finally:
        dist.destroy_process_group()


def test_a_stages_repa_weight_weighs_repa_in_the_loss_it_trains_on():
    from unixcxr.train.stages import VitRepaEncoder

    torch.manual_seed(0)
    config = tiny()
    config.gen.repa_dim = config.vision.width
    model = UniX(config)
    micro = _tiny_batches(model.config, "gen", n=1)[0]
    for weight in (None, 2.0):
        parts = ModelLoss(model, SPECS["gen_pretrain"], torch.device("cpu"), VitRepaEncoder(model),
                          repa_weight=weight)(micro)
        expected = parts["mse"] + (config.gen.repa_weight if weight is None else weight) * parts["repa"]
        assert parts["repa"].abs() > 0 and torch.allclose(parts["loss"], expected)


def test_a_learning_rate_scale_slows_only_the_parameters_it_names(tmp_path):
    problem = Regression()
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 1))
    before = [p.detach().clone() for p in model.parameters()]
    _trainer(tmp_path, model, problem, lr_scales=(("0.", 0.0),)).fit(problem.stream(0, 6, 2))
    after = list(model.parameters())
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # "0." frozen by a zero scale
    assert not torch.equal(before[2], after[2])


@pytest.mark.parametrize("stage", ["und_sft", "gen_pretrain"])
def test_a_steps_flop_estimate_is_what_torch_counts_it_does(stage):
    """MFU's numerator: the network's own FLOP count of a micro-batch (with_flops) against torch's
    FlopCounterMode over the real loss and backward, REPA target encoder included."""
    from unixcxr.train.mfu import count_training_flops
    from unixcxr.train.stages import VitRepaEncoder, with_flops

    torch.manual_seed(0)
    config = tiny()
    config.gen.repa_dim = config.vision.width
    model = UniX(config)
    spec, repa = SPECS[stage], stage == "gen_pretrain"
    set_trainable(model, spec, repa)
    encoder = VitRepaEncoder(model) if repa else None
    loss = ModelLoss(model, spec, torch.device("cpu"), encoder)
    micro = _tiny_batches(model.config, "und" if stage == "und_sft" else "gen", n=1)[0]
    estimate = next(with_flops([micro], model, spec.freeze_und, encoder)).flops
    counted = count_training_flops(lambda: loss(micro)["loss"].backward())
    without_encoder = next(with_flops([micro], model, spec.freeze_und)).flops
    assert 0.85 < estimate / counted < 1.2  # measured 1.11 / 0.97
    if repa:
        assert estimate - without_encoder == encoder.flops_per_image() * micro.data.repa_images.shape[0]


def test_a_dino_repa_encoders_flops_per_film_times_films_is_what_torch_counts_for_a_batch(tmp_path):
    pytest.importorskip("transformers")
    from test_image_metrics import save_tiny_rad_dino
    from unixcxr.train.mfu import count_training_flops
    from unixcxr.train.stages import DinoRepaEncoder

    save_tiny_rad_dino(tmp_path / "rad-dino")
    encoder = DinoRepaEncoder(tmp_path / "rad-dino")
    counted = count_training_flops(lambda: encoder(torch.rand(3, 64, 64)))  # forward only (no_grad)
    assert encoder.flops_per_image() * 3 == pytest.approx(counted, rel=1e-6) and counted > 0
