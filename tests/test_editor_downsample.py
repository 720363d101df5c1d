"""The Editor with a downsampling transformer (token stride 2) and a query phrase."""

from __future__ import annotations

import numpy as np
import pytest

from configs import smoke
from editmgt_jax.editor import Editor
from launch import init_checkpoint


@pytest.fixture(scope="module")
def editor():
    config = smoke.get_config()
    config.model.downsample = True
    config.model.upsample = True
    return Editor(init_checkpoint.random_bundle(config))


def test_query_localizes_on_the_half_grid(editor):
    assert editor.token_stride == 8 and editor.bucket(40, 30) == (32, 24)
    picture = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    run = dict(steps=3, batch_size=2, hold_threshold=0.5, seeds=[4, 4])
    with_query = editor.edit(
        [picture, picture],
        ["make the red ball blue", "make the red ball blue"],
        queries=["red ball", None],
        **run,
    )
    for result in with_query:
        assert result.image.shape == (40, 30, 3)
        assert result.tokens.shape == result.heatmap.shape == (8, 6)
        held = result.hold_mask
        np.testing.assert_array_equal(result.tokens[held], result.source_tokens[held])
    # The query's tokens give another localization map than all text tokens.
    assert not np.allclose(with_query[0].heatmap, with_query[1].heatmap)
    # Without any query in the batch (the reduced-score model_fn) sample 1 is unchanged.
    plain = editor.edit([picture], ["make the red ball blue"], **{**run, "seeds": [4]})
    np.testing.assert_allclose(plain[0].heatmap, with_query[1].heatmap, atol=1e-5)
