"""Decoding odd images to RGB and the joint resize/crop that keeps pairs aligned."""

import io

import numpy as np
import pytest
from PIL import Image

from data_pipelines.fake_crispedit import photo
from data_pipelines.transforms import (
    DecodeError,
    decode_image,
    decode_mask,
    joint_resize_crop,
)
from tests.resize_reference import bicubic_resize, structured


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rgb():
    return photo(np.random.default_rng(0), 48, 64)


def test_modes_decode_to_rgb_uint8(rgb):
    gray = rgb[..., 0]
    cases = {
        "png": (_encode(Image.fromarray(rgb), "PNG"), rgb, 0),
        "gray": (_encode(Image.fromarray(gray), "PNG"), np.stack([gray] * 3, -1), 0),
        "png16": (
            _encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
            np.stack([gray] * 3, -1),
            0,
        ),  # fmt: skip
        "cmyk": (_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95), rgb, 12),
        "palette": (_encode(Image.fromarray(rgb).convert("P"), "PNG"), rgb, 40),
    }
    for name, (data, expected, tolerance) in cases.items():
        out = decode_image(data)
        assert out.dtype == np.uint8 and out.shape == (48, 64, 3), name
        assert np.abs(out.astype(int) - expected).mean() <= tolerance, name


def test_rgba_is_composited_over_white(rgb):
    rgba = np.concatenate([rgb, np.zeros((48, 64, 1), np.uint8)], -1)
    rgba[:, :32, 3] = 255
    out = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[:, :32], rgb[:, :32])
    assert (out[:, 32:] == 255).all()


def test_exif_orientation_is_applied(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode_image(_encode(Image.fromarray(rgb), "JPEG", exif=exif))
    assert out.shape == (64, 48, 3)


@pytest.mark.parametrize(
    "data, reason",
    [(b"", "empty_bytes"), (b"not an image" * 9, "undecodable"), (None, "truncated")],
)
def test_bad_bytes_raise_with_reason(rgb, data, reason):
    if data is None:
        full = _encode(Image.fromarray(rgb), "PNG")
        data = full[: len(full) // 2]
    with pytest.raises(DecodeError) as info:
        decode_image(data)
    assert info.value.reason == reason


def test_absurd_size_is_refused_before_decoding():
    with pytest.raises(DecodeError) as info:
        decode_image(_encode(Image.new("RGB", (4, 300)), "PNG"))
    assert info.value.reason == "absurd_size"


def test_joint_crop_keeps_pairs_of_different_sizes_aligned(rgb):
    big = np.asarray(Image.fromarray(rgb).resize((128, 96), Image.Resampling.LANCZOS))
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 30:40] = 255
    for offset in [(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]:
        src, tgt, m = joint_resize_crop(rgb, big, mask, (32, 32), offset)
        assert src.shape == tgt.shape == (32, 32, 3) and m.shape == (32, 32)
        # Same content at the same place: only resampling differences remain.
        assert np.abs(src.astype(int) - tgt.astype(int)).mean() < 6, offset
        expected_mask = joint_resize_crop(rgb, rgb, mask, (32, 32), offset)[2]
        np.testing.assert_array_equal(m, expected_mask)
    left = joint_resize_crop(rgb, big, mask, (32, 32), (0.5, 0.0))[0]
    right = joint_resize_crop(rgb, big, mask, (32, 32), (0.5, 1.0))[0]
    assert not np.array_equal(left, right)


def test_the_joint_crop_resamples_with_an_antialiased_bicubic():
    # A 48 x 64 source, its target at twice the size; the square crop is 48 px wide on the source
    # (96 on the target), placed by the offset: left edge 0, 8 or 16 (0, 16, 32 on the target).
    source, target = structured(48, 64), structured(96, 128, cell=5)
    for ox, left in ((0.0, 0), (0.5, 8), (1.0, 16)):
        src, tgt, _ = joint_resize_crop(source, target, None, (20, 20), (0.5, ox))
        expected = bicubic_resize(source, (20, 20), box=(left, 0, left + 48, 48))
        np.testing.assert_allclose(src, expected, atol=2, err_msg=str(ox))
        expected = bicubic_resize(target, (20, 20), box=(2 * left, 0, 2 * left + 96, 96))
        np.testing.assert_allclose(tgt, expected, atol=2, err_msg=str(ox))
    # Upsampling too (the crop smaller than the output), and at scale 1 a plain crop.
    up = joint_resize_crop(source[:20, :20], source[:20, :20], None, (36, 36))[0]
    np.testing.assert_allclose(up, bicubic_resize(source[:20, :20], (36, 36)), atol=2)
    same = joint_resize_crop(source, source, None, (48, 48), (0.0, 1.0))[0]
    np.testing.assert_array_equal(same, source[:, 16:])


def test_mask_never_shrinks_when_downscaled():
    mask = np.zeros((64, 64), np.uint8)
    mask[5, 7] = 255  # a single edited pixel
    out = joint_resize_crop(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8),
                            mask, (16, 16))[2]  # fmt: skip
    assert out.sum() == 255 and out[1, 1] == 255
    assert decode_mask(_encode(Image.fromarray(mask), "PNG")).max() == 255
