"""The Editor on a random smoke bundle: batches, paste-back, sizes, per-sample seeds, bad inputs.

All edits use 40x30 inputs (bucket 32x24, token grid 8x6) and batch_size 2, so the module compiles
the sampler once.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from editmgt_jax.editing import images as imio
from editmgt_jax.editor import Editor

STEPS = 4
RUN = dict(steps=STEPS, batch_size=2)


@pytest.fixture(scope="module")
def editor(smoke_bundle):
    return Editor.from_bundle(smoke_bundle)  # the session's random configs/smoke.py bundle


@pytest.fixture(scope="module")
def pictures():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(3)]


@pytest.fixture(scope="module")
def batch(editor, pictures):
    return editor.edit(
        pictures, ["make it blue", "add a cat", "remove the dog"], seeds=[1, 2, 3], **RUN
    )


def test_batch_results_have_the_input_sizes_and_valid_maps(editor, batch, pictures):
    assert editor.random_init and editor.token_stride == 4
    for result, picture in zip(batch, pictures, strict=True):
        assert result.image.shape == picture.shape and result.image.dtype == np.uint8
        assert result.bucket == (32, 24)
        assert result.tokens.shape == result.hold_mask.shape == result.heatmap.shape == (8, 6)
        assert 0 <= result.tokens.min() and result.tokens.max() < 64
        np.testing.assert_array_equal(result.source, picture)
        # Held tokens are the source tokens (smoke pipeline: lambda 0.3).
        held = result.hold_mask
        np.testing.assert_array_equal(result.tokens[held], result.source_tokens[held])
        assert result.heatmap_image().shape == picture.shape
        assert result.hold_image().shape == picture.shape[:2]
    assert any(r.hold_mask.any() for r in batch)


def test_result_does_not_depend_on_the_batch(editor, batch, pictures):
    # Same compiled shape (batch 2), other batch-mate and position: the same edit.
    again = editor.edit(
        [pictures[2], pictures[0]], ["remove the dog", "something else"], seeds=[3, 9], **RUN
    )
    np.testing.assert_array_equal(again[0].tokens, batch[2].tokens)
    np.testing.assert_array_equal(again[0].image, batch[2].image)
    assert not np.array_equal(again[1].tokens, batch[0].tokens)


def test_paste_back_keeps_every_pixel_outside_the_mask(editor, pictures, caplog):
    mask = np.zeros((40, 30), bool)
    mask[7:23, 4:17] = True
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((15, 20), Image.NEAREST)
    with caplog.at_level(logging.WARNING):
        results = editor.edit(
            pictures[:2],
            ["make it blue", "make it red"],
            masks=[mask, small],
            paste_back=True,
            **RUN,
        )
    assert any("resized" in r.message for r in caplog.records)
    assert "resized" in results[1].warnings[0]
    resized = np.asarray(small.resize((30, 40), Image.NEAREST)) >= 128
    for result, picture, allowed in zip(results, pictures[:2], (mask, resized), strict=True):
        outside = ~allowed
        np.testing.assert_array_equal(result.image[outside], picture[outside])
        # Token-level: nothing outside the token cover of the mask was ever masked.
        cover = imio.token_mask(allowed, (8, 6))
        np.testing.assert_array_equal(result.tokens[~cover], result.source_tokens[~cover])
        np.testing.assert_array_equal(result.edit_mask, cover)
    assert any(
        (r.image[m] != p[m]).any()
        for r, p, m in zip(results, pictures[:2], (mask, resized), strict=True)
    )


def test_paste_back_tolerance_keeps_pixels_the_edit_left_looking_the_same(editor, batch, pictures):
    instructions = ["make it blue", "add a cat"]
    common = dict(seeds=[1, 2], **RUN)
    plain = editor.edit(pictures[:2], instructions, paste_back=False, **common)
    tolerance = 40
    pasted = editor.edit(
        pictures[:2], instructions, paste_back=True, paste_back_tolerance=tolerance, **common
    )
    for raw, result, picture in zip(plain, pasted, pictures[:2], strict=True):
        np.testing.assert_array_equal(result.tokens, raw.tokens)  # the sampling is the same
        # An independent recomputation of the kept pixels at the original size (40 x 30).
        close = np.abs(raw.image.astype(int) - picture.astype(int)).max(-1) <= tolerance
        unchanged = raw.hold_mask | (raw.tokens == raw.source_tokens)
        kept_tokens = imio.upsample_nearest(unchanged, (40, 30))
        keep = kept_tokens | close
        assert (close & ~kept_tokens).any() and not keep.all()  # both rules matter here
        np.testing.assert_array_equal(result.image, np.where(keep[..., None], picture, raw.image))
    # Everything within 255 levels: the source comes back whole.
    whole = editor.edit(pictures[:1], instructions[:1], paste_back=True, paste_back_tolerance=255,
                        seeds=[1], **RUN)  # fmt: skip
    np.testing.assert_array_equal(whole[0].image, pictures[0])
    with pytest.raises(ValueError, match="paste_back_tolerance"):
        editor.edit(pictures[:1], instructions[:1], paste_back=True, paste_back_tolerance=-1, **RUN)


def test_exif_grey_rgba_16bit_and_cmyk_inputs(editor, tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "exif.jpg", exif=exif.tobytes())
    Image.fromarray(rgb[..., 0]).rotate(90, expand=True).save(tmp_path / "grey.png")
    grey16 = (rng.integers(0, 65536, (40, 30))).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    rgba = np.concatenate([rgb.transpose(1, 0, 2), np.zeros((40, 30, 1), np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb.transpose(1, 0, 2)).convert("CMYK").save(tmp_path / "cmyk.jpg")

    loaded = {
        n: imio.load_image(str(tmp_path / n))[0]
        for n in ("exif.jpg", "grey.png", "grey16.png", "rgba.png", "cmyk.jpg")
    }
    for name, pixels in loaded.items():
        assert pixels.shape == (40, 30, 3) and pixels.dtype == np.uint8, name
    assert np.all(loaded["rgba.png"] == 255)  # fully transparent: white
    g = loaded["grey16.png"]
    np.testing.assert_array_equal(g[..., 0], np.round(grey16 / 65535 * 255).astype(np.uint8))
    assert np.all(g[..., 0] == g[..., 2])

    results = editor.edit(
        [str(tmp_path / "exif.jpg"), str(tmp_path / "grey16.png")], ["make it blue"] * 2, **RUN
    )
    assert [r.image.shape for r in results] == [(40, 30, 3), (40, 30, 3)]


def test_bad_inputs_are_named(editor, pictures, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(imio.ImageInputError, match="notes.png.*not a readable image"):
        editor.prepare(str(bad), "make it blue")
    with pytest.raises(imio.ImageInputError, match="does not exist"):
        editor.prepare(str(tmp_path / "missing.png"), "make it blue")
    with pytest.raises(ValueError, match="instruction is empty"):
        editor.prepare(pictures[0], "   ")
    with pytest.raises(ValueError, match=r"lambda\) must be in \[0, 1\], got 1.5"):
        editor.prepare(pictures[0], "make it blue", hold_threshold=1.5)
    with pytest.raises(imio.ImageInputError, match="Mask file .*missing_mask.png"):
        editor.prepare(pictures[0], "make it blue", mask=str(tmp_path / "missing_mask.png"))
    with pytest.raises(imio.ImageInputError, match="over the limit of 100"):
        imio.load_image(pictures[0], max_pixels=100)
    for method in (editor.reconstruct, editor.tokenize):
        with pytest.raises(ValueError, match=r"tokenizing needs .* got shape \(1, 30, 32, 3\)"):
            method(np.zeros((1, 30, 32, 3), np.uint8))


def test_tokenize_gives_the_ids_the_edit_starts_from(editor, batch, pictures):
    # Bucket 32 x 24 is the pictures' own size after resizing: the same ids as the edit's source.
    resized = np.stack([imio.resize(p, (32, 24)) for p in pictures])
    ids = editor.tokenize(resized)
    assert ids.dtype == np.int32 and ids.shape == (3, 8, 6)
    for got, result in zip(ids, batch, strict=True):
        np.testing.assert_array_equal(got, result.source_tokens)


def test_buckets_keep_the_aspect_ratio_on_token_multiples(editor):
    assert editor.bucket(40, 30) == (32, 24)
    assert editor.bucket(30, 400) == (4, 32)
    assert imio.bucket_size(1000, 750, 1024, 32) == (1024, 768)
    assert imio.bucket_size(1080, 1920, 1024, 32) == (576, 1024)
