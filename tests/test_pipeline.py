"""UniXPipeline and the report / generate commands: any image a user has becomes a report, any
report an image, with the model's own preprocessing, special ids and the released settings.
A tiny random model: the outputs are noise, the wiring is checked exactly."""

import json
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import unixcxr.pipeline as pipeline_module
from test_data_images import write_dicom
from unixcxr.cli import main
from unixcxr.data.images import letterbox
from unixcxr.data.prompts import DEFAULT_REPORT_PROMPT
from unixcxr.inference.report import DecodingSettings, generate_reports
from unixcxr.model.io import ModelFolderError
from unixcxr.pipeline import UniXPipeline
from unixcxr.serve.demo_model import write_demo_model_folder
from unixcxr.validation import InvalidValue

TOKENS = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_demo_model_folder(tmp_path_factory.mktemp("run") / "model")


@pytest.fixture(scope="module")
def pipe(folder):
    return UniXPipeline.from_pretrained(folder.parent)  # a run folder (RUN_DIR/model) is accepted


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    """A 60x40 uint8 'chest': bright border, darker lungs, so the letterbox matters."""
    rng = np.random.default_rng(0)
    img = np.full((60, 40), 200, np.uint8)
    img[10:50, 5:18] = img[10:50, 22:35] = 60
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


def test_report_equals_the_decoder_on_released_preprocessing_and_prompt(pipe, radiograph):
    size = pipe.config.vision.image_size
    square = torch.from_numpy(letterbox(radiograph / 255.0, size)).float()
    pixels = ((square - 0.555895) / 0.336385).expand(1, 3, size, size)  # released mean/std, all channels
    prompt = pipe.tokenizer.encode(DEFAULT_REPORT_PROMPT)
    ids = generate_reports(pipe.model, pixels, [prompt], DecodingSettings(max_new_tokens=TOKENS))
    assert pipe.report(radiograph, max_new_tokens=TOKENS) == [pipe.tokenizer.decode(ids[0])]


def test_png_jpeg_dicom_pil_and_arrays_are_all_accepted(pipe, radiograph, tmp_path):
    Image.fromarray(radiograph).save(tmp_path / "a.png")
    Image.fromarray(radiograph).save(tmp_path / "a.jpg", quality=95)
    dicom = write_dicom(tmp_path / "a.dcm", radiograph.astype(np.uint16) * 16)
    inputs = [tmp_path / "a.png", str(tmp_path / "a.jpg"), dicom, Image.fromarray(radiograph),
              radiograph, radiograph / 255.0, np.stack([radiograph] * 3, -1), torch.from_numpy(radiograph)]
    reports = pipe.report(inputs, max_new_tokens=TOKENS)
    lossless = reports[0]
    assert len(reports) == len(inputs)
    assert [reports[i] for i in (3, 4, 5, 6, 7)] == [lossless] * 5  # same pixels -> same report


def test_batches_give_the_reports_of_single_images(pipe, radiograph):
    images = [radiograph, radiograph[::-1].copy(), radiograph[:, ::-1].copy()]
    alone = [pipe.report(img, max_new_tokens=TOKENS)[0] for img in images]
    assert pipe.report(images, max_new_tokens=TOKENS, batch_size=2) == alone


def test_streamed_pieces_join_to_the_report(pipe, radiograph):
    pieces = list(pipe.stream_report(radiograph, max_new_tokens=TOKENS))
    assert "".join(pieces) == pipe.report(radiograph, max_new_tokens=TOKENS)[0]
    assert len(pieces) > 1


def test_a_stream_closed_early_stops_decoding(pipe, radiograph, monkeypatch):
    """The decoder is held to the reader's pace (one token ahead at most), so a reader that closes
    after the first piece leaves the decoding a step or two from the start: it must end there, by the
    stop, not run on to max_new_tokens."""
    real, consumed = pipeline_module.generate_reports, threading.Semaphore(0)
    steps, finished = [], []

    def paced(*args, on_token, **kwargs):
        def gated(token):
            on_token(token)  # raises once the reader has gone: that is the stop under test
            steps.append(int(token[0]))
            consumed.acquire(timeout=0.25)  # no reader: a stop that fails still ends, slowly
        out = real(*args, on_token=gated, **kwargs)
        finished.append(True)
        return out

    decode = pipe.tokenizer.decode
    monkeypatch.setattr(pipeline_module, "generate_reports", paced)
    monkeypatch.setattr(pipe.tokenizer, "decode", lambda ids: consumed.release() or decode(ids))
    assert len(list(pipe.stream_report(radiograph, max_new_tokens=TOKENS))) > 1 and finished == [True]
    assert len(steps) > 4  # read to the end, the decoding runs well past where the stop will act
    steps.clear(), finished.clear()
    stream = pipe.stream_report(radiograph, max_new_tokens=TOKENS)
    next(stream)
    stream.close()  # joins the decoding thread
    assert not finished and len(steps) <= 3


def test_an_empty_instruction_is_refused(pipe, radiograph):
    with pytest.raises(ValueError, match="instruction is empty"):
        pipe.report(radiograph, prompt="")


def test_generated_images_are_reproducible_and_independent_of_batching(pipe):
    reports = ["FINDINGS: Small left pleural effusion.", "FINDINGS: The lungs are clear."]
    batch = pipe.generate(reports, steps=4, seed=3)
    alone = pipe.generate(reports[1], steps=4, seed=4)  # image i uses seed + i
    assert batch[0].size == (pipe.config.gen.image_size,) * 2 and batch[0].mode == "RGB"
    assert np.array_equal(np.asarray(batch[1]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(batch[0]), np.asarray(batch[1]))


def test_sampler_presets_and_overrides(pipe):
    assert pipe.sampler_settings("released").cfg_text == 2.0
    demo = pipe.sampler_settings("demo", steps=10)
    assert (demo.cfg_text, demo.shift, demo.num_points) == (3.0, 3.0, 10)
    a, b = (pipe.generate("FINDINGS: Clear.", steps=4, seed=0, settings=s)[0] for s in ("released", "demo"))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="unknown sampler settings"):
        pipe.sampler_settings("fast")


def test_bad_generation_requests_are_refused_clearly(pipe):
    with pytest.raises(ValueError, match="report 1 is empty"):
        pipe.generate(["FINDINGS: Clear.", "  "], steps=2)
    with pytest.raises(ValueError, match="multiple of"):
        pipe.generate("FINDINGS: Clear.", steps=2, size=13)


@pytest.mark.parametrize("kwargs, message", [(dict(cfg_text=float("nan")), "cfg_text must be a finite number"),
                                             (dict(cfg_interval=(0.9, 0.1)), "cfg_interval must be"),
                                             (dict(seed=2**70), "seed must be an integer"),
                                             (dict(seed=[0, -1]), "seed must be an integer"),
                                             (dict(batch_size=0), "batch_size must be")])
def test_generation_numbers_are_refused_before_sampling(pipe, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        pipe.generate(["FINDINGS: Clear.", "FINDINGS: Effusion."], steps=2, **kwargs)


@pytest.mark.parametrize("kwargs, message", [(dict(max_new_tokens=-5), "max_new_tokens must be an integer from 1 to"),
                                             (dict(max_new_tokens=10**6), "max_new_tokens must be an integer from 1"),
                                             (dict(seed=2**70, temperature=1.0), "seed must be an integer"),
                                             (dict(top_p=0.0), "top_p must be"), (dict(batch_size=0), "batch_size")])
def test_report_numbers_are_refused_before_decoding(pipe, radiograph, kwargs, message):
    with pytest.raises(InvalidValue, match=message):
        pipe.report(radiograph, **kwargs)


def test_reconstruct_is_the_vae_round_trip_of_the_letterboxed_image(pipe, radiograph):
    from unixcxr.data.images import to_vae_tensor
    from unixcxr.model.vae import to_uint8

    size = pipe.config.gen.image_size
    got = pipe.reconstruct([radiograph, Image.fromarray(radiograph)], batch_size=1)
    x = to_vae_tensor(radiograph.astype(np.float32) / 255, size)[None]
    with torch.no_grad():
        want = to_uint8(pipe.vae.decode(pipe.vae.encode(x)))[0].permute(1, 2, 0).numpy()
    assert [im.size for im in got] == [(size, size)] * 2
    assert np.array_equal(np.asarray(got[0]), want) and np.array_equal(np.asarray(got[1]), want)
    alone = pipe.reconstruct(radiograph)  # one array is one image, not a list of rows
    assert len(alone) == 1 and np.array_equal(np.asarray(alone[0]), want)
    with pytest.raises(ValueError, match="multiple of"):
        pipe.reconstruct(radiograph, size=13)


def test_bf16_pipeline_writes_reports_and_draws_images(folder, radiograph):
    pipe = UniXPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and pipe.vae.autoencoder.dtype == torch.bfloat16
    assert isinstance(pipe.report(radiograph, max_new_tokens=4)[0], str)
    assert pipe.generate("FINDINGS: Clear.", steps=2, seed=0)[0].size == (pipe.config.gen.image_size,) * 2


def test_a_folder_without_tokenizer_or_vae_says_what_is_missing(folder, tmp_path, radiograph):
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / "vae")
    pipe = UniXPipeline.from_pretrained(bare)
    with pytest.raises(ModelFolderError, match="no VAE weights"):
        pipe.generate("FINDINGS: Clear.")
    with pytest.raises(ModelFolderError, match="no VAE weights"):
        pipe.reconstruct(radiograph)
    (bare / "tokenizer.json").unlink()
    with pytest.raises(ModelFolderError, match="no tokenizer.json"):
        UniXPipeline.from_pretrained(bare)


# --- the commands ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_command_writes_jsonl_and_resumes(pipe, folder, radiograph, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(radiograph).save(images / "a.png")
    write_dicom(images / "b.dcm", radiograph.astype(np.uint16))
    out = tmp_path / "reports.jsonl"
    assert main(["report", "--model", str(folder), str(images), "--max-new-tokens", str(TOKENS), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(images / "a.png"), str(images / "b.dcm")]
    assert rows[0]["report"] == pipe.report(images / "a.png", max_new_tokens=TOKENS)[0]
    # a crash left half a line: it is dropped and only the missing image is redone
    out.write_text(out.read_text().splitlines(keepends=True)[0] + '{"image": "cut')
    assert main(["report", "--model", str(folder), str(images), "--max-new-tokens", str(TOKENS), "-o", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    assert "1 of 2 images already" in capsys.readouterr().err


def test_report_command_prints_and_skips_unreadable_files(folder, radiograph, tmp_path, capsys):
    Image.fromarray(radiograph).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image" * 10)
    code = main(["report", "--model", str(folder), str(tmp_path / "ok.png"), str(tmp_path / "bad.png"),
                 "--max-new-tokens", "3"])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith(f"{tmp_path / 'ok.png'}\t") and "bad.png" in err


def test_generate_command_writes_one_png(pipe, folder, tmp_path):
    out = tmp_path / "x.png"
    assert main(["generate", "--model", str(folder), "FINDINGS: Clear.", "-o", str(out), "--steps", "3",
                 "--seed", "5"]) == 0
    expected = pipe.generate("FINDINGS: Clear.", steps=3, seed=5)[0]
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))


def test_generate_command_writes_jpeg_for_a_jpg_name(pipe, folder, tmp_path):
    out = tmp_path / "x.jpg"
    assert main(["generate", "--model", str(folder), "FINDINGS: Clear.", "-o", str(out), "--steps", "3"]) == 0
    with Image.open(out) as image:
        assert image.format == "JPEG"


def test_generate_command_runs_a_csv_in_bounded_batches_and_resumes(pipe, folder, tmp_path, capsys):
    csv = tmp_path / "test.csv"
    csv.write_text("path,annotated_prompt\nfiles/p1/s1/a.jpg,Small effusion.\nfiles/p2/s2/b.jpg,Clear lungs.\n"
                   "files/p3/s3/c.jpg,Cardiomegaly.\n")
    args = ["generate", "--model", str(folder), "--prompts", str(csv), "--out-dir", str(tmp_path / "out"),
            "--steps", "3", "--batch-size", "2"]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]
    expected = pipe.generate("Cardiomegaly.", steps=3, seed=2)[0]  # row 2: seed 0 + 2
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "c.png")), np.asarray(expected))
    (tmp_path / "out" / "b.png").unlink()
    assert main(args) == 0
    assert "2 of 3 images already" in capsys.readouterr().err
    assert (tmp_path / "out" / "b.png").is_file()


def test_generate_command_explains_bad_input(folder, tmp_path, capsys):
    csv = tmp_path / "t.csv"
    csv.write_text("id,text\n1,hello\n")
    assert main(["generate", "--model", str(folder), "--prompts", str(csv), "--out-dir", str(tmp_path)]) == 2
    assert "no report or annotated_prompt column" in capsys.readouterr().err
    assert main(["generate", "--model", str(folder), "FINDINGS: x"]) == 2
    assert "-o OUT.png" in capsys.readouterr().err


def test_generate_help_quotes_the_released_preset(capsys):
    """The help's "released: ..." numbers are the sampler's own released preset (flow/presets.py)."""
    from unixcxr.flow.sampler import PRESETS

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    shown, r = " ".join(capsys.readouterr().out.split()), PRESETS["released"]
    for text in (f"(released: {r.num_points} = {r.num_points - 1} Euler steps)", f"released: {r.num_points - 1})",
                 f"(released: {r.cfg_text})", f"(released: {r.cfg_img})", f"(released: {r.shift})",
                 "(released: {} {})".format(*r.cfg_interval)):
        assert text in shown, text
