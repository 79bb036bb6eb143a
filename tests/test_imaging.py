"""Safe decoding: every kind of bad input is an ImageError with a stable reason, never a crash."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge import imaging
from edge.imaging import ImageError
from tests.conftest import CNMC_SAMPLE
from tests.util import png_header_only


def _encode(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def field() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (1944, 2592, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tif"])
def test_supported_formats_decode_to_bgr(ext: str) -> None:
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 2] = 200  # red in BGR
    out = imaging.decode(_encode(ext, img))
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    assert out[20, 30, 2] > 150 and out[20, 30, 0] < 50


def test_grayscale_becomes_three_channels() -> None:
    out = imaging.decode(_encode(".png", np.full((10, 12), 77, np.uint8)))
    assert out.shape == (10, 12, 3)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, I am a text file renamed to .png\n", "not_an_image"),
        (b"GIF89a" + b"\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 20, "not_an_image"),
    ],
)
def test_garbage_is_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as exc:
        imaging.decode(data)
    assert exc.value.reason in (reason, "unsupported_format")


def test_truncated_jpeg_is_rejected(field: np.ndarray) -> None:
    data = _encode(".jpg", field)
    with pytest.raises(ImageError) as exc:
        imaging.decode(data[: len(data) // 2])
    assert exc.value.reason == "truncated"


def test_pixel_bomb_rejected_from_header_alone() -> None:
    with pytest.raises(ImageError) as exc:
        imaging.decode(png_header_only(30000, 30000))
    assert exc.value.reason == "too_many_pixels"
    assert "30000x30000" in exc.value.message


def test_large_jpeg_decodes_reduced_when_target_allows(field: np.ndarray) -> None:
    data = _encode(".jpg", field)
    assert imaging.decode(data).shape[:2] == (1944, 2592)
    reduced = imaging.decode(data, target=(100, 100))
    assert reduced.shape[:2] == (243, 324)  # 1/8, still larger than the model input
    assert imaging.decode(data, target=(1000, 1000)).shape[:2] == (1944, 2592)


def test_read_directory_and_missing(tmp_path) -> None:
    with pytest.raises(ImageError) as exc:
        imaging.read(tmp_path)
    assert exc.value.reason == "not_a_file"
    with pytest.raises(ImageError) as exc:
        imaging.read(tmp_path / "nope.jpg")
    assert exc.value.reason == "unreadable"


def test_jpeg_end_is_found_after_the_last_scan_not_in_the_last_bytes() -> None:
    """Bytes after the end-of-image marker (sector padding, camera trailers) are not a
    truncation; a cut main image is one even when an EXIF thumbnail carries its own end."""
    rng = np.random.default_rng(1)
    main = _encode(".jpg", rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    padded = main + b"\x00" * 4096
    assert imaging.decode(padded).shape == (200, 300, 3)
    thumb = _encode(".jpg", np.full((8, 8, 3), 90, np.uint8))
    payload = b"Exif\x00\x00" + thumb
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    with_thumb = main[:2] + app1 + main[2:]
    assert imaging.decode(with_thumb).shape == (200, 300, 3)
    with pytest.raises(ImageError) as exc:
        imaging.decode(with_thumb[: len(app1) + len(main) // 2])
    assert exc.value.reason == "truncated"


def test_png_with_trailing_bytes_decodes_but_a_cut_png_does_not() -> None:
    rng = np.random.default_rng(2)
    png = _encode(".png", rng.integers(0, 255, (120, 90, 3), dtype=np.uint8))
    assert imaging.decode(png + b"\x00" * 512).shape == (120, 90, 3)
    with pytest.raises(ImageError) as exc:
        imaging.decode(png[: len(png) - 40])
    assert exc.value.reason in ("truncated", "undecodable")


def test_cut_bmp_is_truncated_and_trailing_bytes_are_not() -> None:
    bmp = (CNMC_SAMPLE / "fold_0" / "all" / "UID_11_1_1_all.bmp").read_bytes()  # C-NMC 2019, CC BY 3.0
    assert imaging.decode(bmp + b"\x00" * 64).shape[2] == 3
    with pytest.raises(ImageError) as exc:
        imaging.decode(bmp[: len(bmp) // 2])
    assert exc.value.reason == "truncated"


def test_fit_within_shrinks_never_enlarges() -> None:
    img = np.zeros((1944, 2592, 3), np.uint8)
    small, scale = imaging.fit_within(img, 160)
    assert small.shape == (120, 160, 3) and scale == pytest.approx(160 / 2592)
    tiny = np.zeros((10, 20, 3), np.uint8)
    same, scale = imaging.fit_within(tiny, 160)
    assert same is tiny and scale == 1.0


def _mpo(path) -> bytes:
    """A real C-NMC 2019 cell (Gupta & Gupta 2019, TCIA, CC BY 3.0) saved by Pillow as a
    two-picture MPO (a JPEG with multi-picture data, as stereo and some phone cameras write)."""
    import io

    from PIL import Image

    with Image.open(path) as im:
        first = im.convert("RGB")
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[first.rotate(90)])
    return buf.getvalue()


def test_mpo_is_a_jpeg_probed_decoded_reduced_and_checked_for_truncation() -> None:
    from tests.util import cnmc_files

    data = _mpo(cnmc_files()[0])
    info = imaging.probe(data)
    assert info.format == "JPEG" and (info.width, info.height) == (450, 450)
    assert imaging.decode(data).shape == (450, 450, 3)
    reduced = imaging.decode(data, target=(100, 100))
    assert 100 <= reduced.shape[0] < 450  # the JPEG DCT reduction applies to MPO too
    with pytest.raises(ImageError) as exc:
        imaging.decode(data[:-100])
    assert exc.value.reason == "truncated"


def test_probe_file_reads_the_header_of_a_file(tmp_path) -> None:
    path = tmp_path / "named.png"
    path.write_bytes(_encode(".bmp", np.zeros((7, 9, 3), np.uint8)))
    assert imaging.probe_file(path) == imaging.ImageInfo("BMP", 9, 7)
    assert imaging.FORMAT_SUFFIX["BMP"] == ".bmp"
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError) as exc:
        imaging.probe_file(tmp_path / "empty.jpg")
    assert exc.value.reason == "empty"


@pytest.mark.parametrize("bits", [16, 12, 10])
def test_16_bit_files_use_the_depth_their_samples_have(tmp_path, bits: int) -> None:
    """A 12-bit camera frame saved as 16-bit TIFF must not come out black."""
    rng = np.random.default_rng(bits)
    eight = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    eight[0, 0] = 255                                          # the sensor's full scale is used
    wide = eight.astype(np.uint16) << (bits - 8)
    for ext in (".tif", ".png"):
        ok, buf = cv2.imencode(ext, wide)
        assert ok
        assert np.array_equal(imaging.decode(buf.tobytes()), eight), ext
