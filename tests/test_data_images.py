"""Image I/O: every source format ends as [0, 1] grayscale with air dark and bone bright."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from unixcxr.data.images import (
    UNDERSTANDING_NORM,
    ImageLoadError,
    letterbox,
    load_image,
    to_uint8,
    to_understanding_tensor,
    to_vae_tensor,
)


def write_dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", **elements):
    """A minimal uncompressed 16-bit grayscale DICOM file, written with pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for name, value in elements.items():
        setattr(ds, name, value)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 4095, 64), (32, 1)).astype(np.uint16)  # 12-bit ramp, left dark


def test_real_monochrome1_radiograph_shows_dark_lungs_and_bright_mediastinum():
    path = get_testdata_file("RG1_UNCR.dcm", download=False)  # from pydicom-data, never downloaded
    if path is None:
        pytest.skip("pydicom-data is not installed")
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    img = load_image(path)
    h, w = img.shape
    assert img.dtype == np.float32 and 0.0 <= img.min() < img.max() <= 1.0
    band = slice(int(0.3 * h), int(0.45 * h))
    right_lung, left_lung = img[band, int(0.22 * w) : int(0.32 * w)], img[band, int(0.68 * w) : int(0.78 * w)]
    mediastinum = img[band, int(0.47 * w) : int(0.53 * w)]
    assert right_lung.mean() < mediastinum.mean() - 0.1
    assert left_lung.mean() < mediastinum.mean() - 0.1
    assert to_understanding_tensor(img).shape == (3, 384, 384)


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path, gradient):
    m2 = load_image(write_dicom(tmp_path / "m2.dcm", gradient, "MONOCHROME2"))
    m1 = load_image(write_dicom(tmp_path / "m1.dcm", gradient, "MONOCHROME1"))
    assert m2[:, 0].max() == 0.0 and m2[:, -1].min() == 1.0  # high stored value is white
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_rescale_and_window_map_the_window_onto_zero_to_one(tmp_path, gradient):
    # modality value = 2 * stored - 1000, so the ramp spans -1000 .. 7190; window [1000, 3000]
    path = write_dicom(tmp_path / "w.dcm", gradient, RescaleSlope=2, RescaleIntercept=-1000,
                       WindowCenter=2000, WindowWidth=2000)
    img = load_image(path)
    modality = gradient[0].astype(float) * 2 - 1000
    assert np.all(img[0, modality < 1000] == 0.0)
    assert np.all(img[0, modality > 3000] == 1.0)
    inside = (modality > 1100) & (modality < 2900)
    np.testing.assert_allclose(img[0, inside], (modality[inside] - 1000) / 2000, atol=2e-3)


def test_voi_lut_sequence_is_applied_over_its_output_range(tmp_path, gradient):
    lut = pydicom.Dataset()  # a square-root display curve with 16-bit output
    lut.LUTDescriptor = [4096, 0, 16]
    lut.LUTData = np.round(65535 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16).tobytes()
    img = load_image(write_dicom(tmp_path / "lut.dcm", gradient, VOILUTSequence=[lut]))
    np.testing.assert_allclose(img[0], np.sqrt(gradient[0] / 4095), atol=1e-4)


def test_dicom_without_window_uses_its_own_value_range(tmp_path, gradient):
    img = load_image(write_dicom(tmp_path / "nowin.dcm", gradient // 2 + 100))
    assert img.min() == 0.0 and img.max() == 1.0


def test_sixteen_bit_png_keeps_its_depth(tmp_path):
    ramp = np.arange(0, 65536, 16, dtype=np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    img = load_image(tmp_path / "deep.png")
    np.testing.assert_allclose(img, ramp / 65535.0, atol=1e-6)
    assert len(np.unique(img)) == 4096  # more levels than 8 bits could hold


def test_eight_bit_files_scale_by_bit_depth_not_by_their_range(tmp_path):
    pixels = np.full((20, 30), 100, dtype=np.uint8)
    pixels[5:10, 5:10] = 200
    Image.fromarray(pixels).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img[0, 0] == pytest.approx(100 / 255) and img[6, 6] == pytest.approx(200 / 255)


def test_jpeg_draft_decoding_matches_full_decoding_after_resize(tmp_path):
    y, x = np.mgrid[0:1600, 0:1200]
    pixels = (127 + 100 * np.sin(x / 90.0) * np.cos(y / 130.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    fast = load_image(tmp_path / "big.jpg", min_size=256)
    full = load_image(tmp_path / "big.jpg")
    assert fast.shape[0] < full.shape[0] and min(fast.shape) >= 256
    assert np.abs(letterbox(fast, 256) - letterbox(full, 256)).mean() < 0.01


def test_letterbox_keeps_aspect_and_pads_with_the_image_black():
    img = np.full((100, 50), 0.8, dtype=np.float32)
    img[:, :5] = 0.2  # darkest value of the image
    square = letterbox(img, 64)
    assert square.shape == (64, 64)
    assert np.all(square[:, :16] == pytest.approx(0.2)) and np.all(square[:, -16:] == pytest.approx(0.2))
    assert square[32, 40] == pytest.approx(0.8, abs=1e-3)  # content spans the middle 32 columns
    assert letterbox(img, 64, pad_value=0.0)[:, 0].max() == 0.0


def test_model_tensors_use_the_released_normalisation():
    img = np.full((40, 40), UNDERSTANDING_NORM.mean, dtype=np.float32)
    und = to_understanding_tensor(img, size=32)
    assert und.shape == (3, 32, 32) and und.abs().max() < 1e-6
    ramp = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1))
    vae = to_vae_tensor(ramp, size=48)
    assert vae.shape == (3, 48, 48) and vae.min() == -1.0 and vae.max() == 1.0
    assert bool((vae[0] == vae[2]).all())
    und = to_understanding_tensor(ramp, size=48)
    assert float(und.max()) == pytest.approx((1 - UNDERSTANDING_NORM.mean) / UNDERSTANDING_NORM.std)


def test_uint8_conversion_rounds_and_clips():
    assert to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("name,content", [
    ("empty.png", b""),
    ("notes.png", b"FINDINGS: lungs clear. This is a text file, not an image." * 4),
    ("notes.dcm", b"not a dicom file at all" * 20),
])
def test_non_images_raise_a_clear_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=name):
        load_image(path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_images_raise_a_clear_error(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / f"full.{suffix}")
    data = (tmp_path / f"full.{suffix}").read_bytes()
    (tmp_path / f"cut.{suffix}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=rf"cut\.{suffix}.*(corrupt|truncated)"):
        load_image(tmp_path / f"cut.{suffix}")


def test_truncated_dicom_and_missing_file_raise_clear_errors(tmp_path, gradient):
    data = write_dicom(tmp_path / "ok.dcm", gradient).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImageLoadError, match="cut.dcm"):
        load_image(tmp_path / "cut.dcm")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.png")
    assert issubclass(ImageLoadError, ValueError)
