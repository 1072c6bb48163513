"""The field's argument names beside ours, typed outputs, progress bars and --version: a diffusers or
transformers user calls the pipeline and the CLI with the names they know and gets the same
images and reports as with ours, plus the settings that made them."""

import importlib.metadata
import re

import numpy as np
import pytest
import torch

import unixcxr
from test_official import write_official_folder
from unixcxr.cli import main
from unixcxr.inference.outputs import ImagePipelineOutput, ReportPipelineOutput
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.validation import InvalidValue

REPORT = "FINDINGS: Small left pleural effusion."


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_demo_model_folder(tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def pipe(folder):
    return UniXPipeline.from_pretrained(folder)


def pixels(images) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def test_num_inference_steps_counts_euler_steps_one_fewer_than_grid_points(pipe):
    ours = pipe.generate(REPORT, steps=5, seed=0)
    theirs = pipe.generate(REPORT, num_inference_steps=4, seed=0)
    assert np.array_equal(pixels(ours)[0], pixels(theirs)[0])
    assert (theirs.num_inference_steps, theirs.sampler.num_points) == (4, 5)
    assert not np.array_equal(pixels(pipe.generate(REPORT, num_inference_steps=5, seed=0))[0], pixels(ours)[0])
    with pytest.raises(InvalidValue, match="num_inference_steps must be steps - 1 = 4"):
        pipe.generate(REPORT, steps=5, num_inference_steps=5)
    with pytest.raises(InvalidValue, match="num_inference_steps must be an integer from 1"):
        pipe.generate(REPORT, num_inference_steps=0)


def test_guidance_scale_is_cfg_text(pipe):
    a = pipe.generate(REPORT, steps=3, cfg_text=4.0, seed=1)
    b = pipe.generate(REPORT, steps=3, guidance_scale=4.0, seed=1)
    assert np.array_equal(pixels(a)[0], pixels(b)[0]) and b.guidance_scale == 4.0
    with pytest.raises(InvalidValue, match="guidance_scale must be equal to cfg_text"):
        pipe.generate(REPORT, cfg_text=2.0, guidance_scale=3.0)


def test_a_generator_seeded_s_draws_the_image_of_seed_s(pipe):
    reports = [REPORT, "FINDINGS: Clear lungs."]
    by_seed = pipe.generate(reports, steps=3, seed=[7, 9])
    by_generators = pipe.generate(reports, steps=3, generator=[torch.Generator().manual_seed(s) for s in (7, 9)])
    alone = pipe.generate(reports[0], steps=3, generator=torch.Generator().manual_seed(7))
    assert all(np.array_equal(a, b) for a, b in zip(pixels(by_seed), pixels(by_generators)))
    assert np.array_equal(pixels(alone)[0], pixels(by_seed)[0])
    assert by_seed.seeds == [7, 9] and by_generators.seeds is None
    one = torch.Generator().manual_seed(3)  # one generator draws the whole batch, as in diffusers
    batch = pipe.generate(reports, steps=3, generator=one)
    assert not np.array_equal(pixels(batch)[0], pixels(batch)[1])
    with pytest.raises(ValueError, match="give seed or generator, not both"):
        pipe.generate(REPORT, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="a list of 2"):
        pipe.generate(reports, generator=[torch.Generator()])


def test_the_image_output_is_the_list_it_was_and_carries_its_settings(pipe):
    out = pipe.generate([REPORT, REPORT], steps=4, seed=5, settings="released")
    assert isinstance(out, ImagePipelineOutput) and isinstance(out, list) and len(out) == 2
    assert out[1] is out.images[1] and [im.size for im in out] == [(16, 16)] * 2
    used = out.settings_used()
    assert used == {"settings": "released", "num_inference_steps": 3, "steps": 4, "guidance_scale": 2.0,
                    "cfg_img": 1.0, "cfg_interval": [0.4, 1.0], "shift": 3.0, "renorm": True,
                    "guidance": "unixcxr", "size": 16, "seeds": [5, 6]}


def test_the_report_output_is_the_list_it_was_and_carries_its_settings(pipe):
    image = np.full((24, 24), 90, np.uint8)
    greedy = pipe.report(image, max_new_tokens=6)
    assert isinstance(greedy, ReportPipelineOutput) and greedy == greedy.reports and len(greedy) == 1
    assert (greedy.max_new_tokens, greedy.decoding.temperature, greedy.seed) == (6, 0.0, None)
    sampled = pipe.report(image, max_new_tokens=6, temperature=1.0, seed=4)
    assert sampled.seed == 4 and sampled.settings_used()["temperature"] == 1.0
    same = pipe.report(image, max_new_tokens=6, temperature=1.0, generator=torch.Generator().manual_seed(4))
    assert same == sampled  # transformers' way to seed sampling


def test_torch_dtype_is_dtype(folder):
    assert UniXPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    assert UniXPipeline.from_pretrained(folder, torch_dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="disagree"):
        UniXPipeline.from_pretrained(folder, dtype=torch.float32, torch_dtype=torch.bfloat16)


# --- the CLI ---------------------------------------------------------------------------------------------
def test_generate_takes_the_field_names_and_shows_a_bar_of_steps_for_one_image(folder, pipe, tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main(["generate", "--model", str(folder), REPORT, "-o", str(out), "--num-inference-steps", "3",
                 "--guidance-scale", "3.5", "--seed", "2"]) == 0
    from PIL import Image

    expected = pipe.generate(REPORT, steps=4, cfg_text=3.5, seed=2)[0]
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), np.asarray(expected))
    err = capsys.readouterr().err
    assert re.search(r"sampling: +\d+%.*\d/3 \[.*step/s", err) and "images:" not in err


def test_report_without_output_file_shows_a_bar_of_tokens(folder, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((24, 24), 90, np.uint8)).save(tmp_path / "x.png")
    assert main(["report", "--model", str(folder), str(tmp_path / "x.png"), "--max-new-tokens", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{tmp_path / 'x.png'}\t")
    assert re.search(r"report: .*\d/5 \[.*token/s", captured.err)


def test_smoke_and_convert_official_show_progress(tmp_path, capsys):
    assert main(["smoke", "--out", str(tmp_path / "s.png")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"report: .*/16 \[.*token/s", err) and re.search(r"image: .*/9 \[.*step/s", err)
    release = write_official_folder(tmp_path / "UniX")
    assert main(["convert-official", str(release), str(tmp_path / "ours")]) == 0
    err = capsys.readouterr().err
    assert re.search(r"reading model.safetensors: .*\d+/\d+ \[.*tensor", err)


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"unixcxr {unixcxr.__version__}"
    assert importlib.metadata.version("unixcxr") == unixcxr.__version__
