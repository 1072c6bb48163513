"""Training recipes: strict YAML dataclasses, and the paper's Table 1 written down exactly."""

from pathlib import Path

import pytest

from unixcxr.strict import diff
from unixcxr.train.recipe import STAGE_ORDER, Recipe, RecipeError
from unixcxr.train.runner import RunFolder, TrainError, derive_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MINIMAL = {"preset": "tiny", "stages": {"tokenizer": {"vocab_size": 300},
                                        "und_sft": {"steps": 2, "lr": 1e-3, "warmup": 0, "batch_size": 4,
                                                    "micro_batch_size": 2, "resolution": 32}}}


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_every_shipped_recipe_loads_and_runs_every_stage_in_order(name):
    recipe = Recipe.load(CONFIGS / f"{name}.yaml")
    assert recipe.stage_names() == list(STAGE_ORDER)


def test_paper_recipe_is_table_1_exactly():
    r = Recipe.load(CONFIGS / "paper.yaml")
    assert r.preset == "unix"
    assert r.optimizer.betas == (0.9, 0.95) and r.optimizer.eps == 1e-15
    assert r.optimizer.weight_decay == 0.0 and r.optimizer.clip_grad == 1.0
    table = {"und_sft": (1e-4, 80, 3840, 384, False), "gen_pretrain": (2e-4, 2000, 75000, 256, True),
             "gen_finetune": (1e-4, 0, 5000, 512, False)}
    for name, (lr, warmup, steps, resolution, repa) in table.items():
        s = r.stage(name)
        assert (s.lr, s.warmup, s.steps, s.resolution, s.repa) == (lr, warmup, steps, resolution, repa), name
        assert s.batch_size == 256 and s.ema == 0.9999 and not s.ema_warmup
    assert r.stage("gen_pretrain").text_dropout == r.stage("gen_finetune").text_dropout == 0.1
    config = derive_config(r, RunFolder(Path("/nonexistent")))
    assert config.gen.repa_weight == 0.5


def test_unknown_and_misspelt_keys_are_errors_naming_the_field(tmp_path):
    bad = {**MINIMAL, "stages": {**MINIMAL["stages"], "und_sft": {**MINIMAL["stages"]["und_sft"], "lrr": 1}}}
    with pytest.raises(RecipeError, match=r"unknown field\(s\) stages\.und_sft\.lrr"):
        Recipe.from_dict(bad, source="r.yaml")
    with pytest.raises(RecipeError, match="unknown field.*stages.decoder_sft"):
        Recipe.from_dict({**MINIMAL, "stages": {"decoder_sft": {}}})
    with pytest.raises(RecipeError, match="missing field.*stages.und_sft.resolution"):
        Recipe.from_dict({**MINIMAL, "stages": {"und_sft": {"steps": 1, "lr": 1.0, "warmup": 0, "batch_size": 1,
                                                            "micro_batch_size": 1}}, "init": "x"})


def test_values_are_type_checked_and_yaml_style_exponents_are_numbers(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("preset: tiny\nstages:\n  tokenizer: {vocab_size: 300}\n  und_sft: {steps: 2, lr: 1e-4, "
                    "warmup: 0, batch_size: 4, micro_batch_size: 2, resolution: 32}\n")
    assert Recipe.load(path).stage("und_sft").lr == 1e-4  # YAML 1.1 reads "1e-4" as a string
    with pytest.raises(RecipeError, match="stages.und_sft.steps must be an integer"):
        Recipe.from_dict({**MINIMAL, "stages": {"und_sft": {**MINIMAL["stages"]["und_sft"], "steps": "ten"}}})
    with pytest.raises(RecipeError, match="optimizer.betas must be a list of 2"):
        Recipe.from_dict({**MINIMAL, "optimizer": {"betas": [0.9]}})


def test_global_batch_must_split_into_micro_batches():
    bad = {**MINIMAL, "stages": {**MINIMAL["stages"],
                                 "und_sft": {**MINIMAL["stages"]["und_sft"], "batch_size": 5}}}
    with pytest.raises(RecipeError, match="batch_size 5 is not a multiple of micro_batch_size 2"):
        Recipe.from_dict(bad)


def test_training_from_scratch_needs_a_tokenizer_stage():
    with pytest.raises(RecipeError, match="needs stages.tokenizer"):
        Recipe.from_dict({**MINIMAL, "stages": {"und_sft": MINIMAL["stages"]["und_sft"]}})


def test_model_overrides_reach_the_config_and_unknown_fields_are_refused(tmp_path):
    recipe = Recipe.from_dict({**MINIMAL, "model": {"llm": {"num_layers": 3}}})
    assert derive_config(recipe, RunFolder(tmp_path)).llm.num_layers == 3
    with pytest.raises(TrainError, match="model.llm.depth is not a config field"):
        derive_config(Recipe.from_dict({**MINIMAL, "model": {"llm": {"depth": 3}}}), RunFolder(tmp_path))


def test_recipe_round_trips_through_yaml_and_diff_names_changed_fields(tmp_path):
    recipe = Recipe.load(CONFIGS / "small.yaml")
    recipe.save(tmp_path / "r.yaml")
    again = Recipe.load(tmp_path / "r.yaml")
    assert diff(recipe.to_dict(), again.to_dict()) == []
    again.stages.und_sft.lr *= 2
    again.optimizer.betas = (0.8, 0.95)
    assert diff(recipe.to_dict(), again.to_dict()) == ["optimizer.betas", "stages.und_sft.lr"]


def test_a_stage_may_set_its_own_gradient_clip_and_otherwise_takes_the_optimizers(tmp_path):
    from unixcxr.train.distributed import DistEnv
    from unixcxr.train.runner import RunContext

    data = {**MINIMAL, "optimizer": {"clip_grad": 1.0},
            "stages": {**MINIMAL["stages"], "vae": {"steps": 2, "lr": 1e-3, "batch_size": 2, "micro_batch_size": 2,
                                                    "resolution": 16, "clip_grad": 0.0}}}
    recipe = Recipe.from_dict(data)
    ctx = RunContext(recipe, tmp_path, RunFolder(tmp_path / "run"), DistEnv())
    assert ctx.loop_settings("vae", 1).clip_grad == 0.0  # 0 = no clipping, for this stage alone
    assert ctx.loop_settings("und_sft", 1).clip_grad == 1.0
    with pytest.raises(RecipeError, match="stages.vae.clip_grad must be a number"):
        Recipe.from_dict({**data, "stages": {**data["stages"], "vae": {**data["stages"]["vae"], "clip_grad": "x"}}})


@pytest.mark.parametrize("edit, field", [
    (("stages", "und_sft", "lr", -1e-4), "stages.und_sft.lr"), (("stages", "und_sft", "warmup", -1), "warmup"),
    (("stages", "und_sft", "ema", 1.0), "stages.und_sft.ema"), (("stages", "und_sft", "clip_grad", -1.0), "clip_grad"),
    (("stages", "und_sft", "text_dropout", 1.5), "text_dropout"), (("optimizer", None, "betas", [0.9, 1.2]), "betas"),
    (("optimizer", None, "weight_decay", float("nan")), "weight_decay"), (("optimizer", None, "eps", 0.0), "eps"),
    (("runtime", None, "val_every", -1), "runtime.val_every"), (("runtime", None, "sample_points", 1), "sample_points"),
    (("runtime", None, "checkpoint_every", 0), "checkpoint_every"), (("seed", None, None, -3), "seed"),
])
def test_recipe_numbers_out_of_range_are_refused_when_read_naming_the_field(edit, field):
    """Before any stage runs: a negative learning rate used to surface only after the tokenizer stage."""
    import copy

    data = copy.deepcopy(MINIMAL)
    section, stage, key, value = edit
    if key is None:
        data[section] = value
    else:
        target = data.setdefault(section, {})
        target = target[stage] if stage else target
        target[key] = value
    with pytest.raises(RecipeError, match=f"x.yaml: .*{field.replace('.', '[.]')} must be a finite number in"):
        Recipe.from_dict(data, source="x.yaml")


def test_the_long_cpu_recipe_is_the_demo_recipe_with_five_times_its_generation_steps():
    """configs/small-long.yaml is a copy, so that it reads on its own; this keeps the copy honest."""
    from unixcxr.train.recipe import GENERATION_STAGES

    small, long = Recipe.load(CONFIGS / "small.yaml"), Recipe.load(CONFIGS / "small-long.yaml")
    assert diff(small.to_dict(), long.to_dict()) == [f"stages.{name}.steps" for name in sorted(GENERATION_STAGES)]
    assert all(long.stage(name).steps == 5 * small.stage(name).steps for name in GENERATION_STAGES)
