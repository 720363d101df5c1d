"""Our transformer reproduces the official PyTorch model on the official_tiny fixture (fp32)."""

import jax
import numpy as np
import pytest

from editmgt_jax.checkpoint.convert.from_torch import load_transformer
from editmgt_jax.models.transformer import Transformer
from editmgt_jax.nn.attention import reduce_text_to_image
from editmgt_jax.nn.rope import grid_position_ids
from tests.conftest import nchw_to_nhwc
from tests.fixtures_path import fixtures_dir

TOL = 1e-4


def max_err(a, b):
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


@pytest.fixture(scope="module")
def forward():
    """forward(cfg, params, inputs, **options): Transformer(cfg).apply jitted, one compile per
    (cfg, options), and each distinct call computed once for the whole module (several tests
    compare against the same float32 reference)."""
    compiled, results = {}, {}

    def run(cfg, params, inputs, **options):
        key = (cfg, tuple(sorted(options.items())))
        if key not in compiled:
            compiled[key] = jax.jit(
                lambda p, x: Transformer(cfg).apply({"params": p}, **x, **options)
            )
        call = (key, id(params), id(inputs))
        if call not in results:
            results[call] = (compiled[key](params, inputs), params, inputs)  # keep ids alive
        return results[call][0]

    return run


def test_logits_and_capture_with_source_strength_1_1(tiny_checkpoint, tiny_io, forward):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io
    logits, captures = forward(
        cfg,
        params,
        inputs,
        reference_strength=float(data["reference_strength"]),
        capture_blocks=(3,),
    )
    assert logits.shape == (2, 16, 16, 64)
    assert max_err(logits, nchw_to_nhwc(data["logits"])) <= TOL
    assert max_err(captures[3], data["attn_text_to_image_block3"]) <= TOL


def test_logits_and_double_block_capture_strength_1(tiny_checkpoint, tiny_io, forward):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io
    logits, captures = forward(cfg, params, inputs, reference_strength=1.0, capture_blocks=(1,))
    assert max_err(logits, nchw_to_nhwc(data["logits_s1"])) <= TOL
    assert max_err(captures[1], data["attn_text_to_image_block1_s1"]) <= TOL
    # Strength matters: 1.1 and 1.0 give different logits in the fixture, and in ours.
    assert max_err(data["logits"], data["logits_s1"]) > 10 * TOL


def test_text_to_image_without_source(tiny_checkpoint, tiny_io_noref, forward):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io_noref
    logits, captures = forward(cfg, params, inputs, capture_blocks=(1, 3))
    assert max_err(logits, nchw_to_nhwc(data["logits"])) <= TOL
    for block in (1, 3):
        assert max_err(captures[block], data[f"attn_text_to_image_block{block}"]) <= TOL


def test_reduced_capture_matches_official_local_scores(tiny_checkpoint, tiny_io):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io
    blocks = tuple(int(b) for b in data["local_scores_blocks"])
    _, scores = jax.jit(
        lambda p, x: Transformer(cfg).apply(
            {"params": p},
            **x,
            reference_strength=float(data["reference_strength"]),
            capture_blocks=blocks,
            capture_reduce=True,
        )
    )(params, inputs)
    assert scores.shape == (2, 64)
    # The fixture's scores are those of the second (conditional) half of a CFG batch.
    assert max_err(scores[1:2], data["local_scores_raw"]) <= TOL
    assert (
        max_err(reduce_text_to_image(data["attn_text_to_image_block3"])[1:2], scores[1:2]) <= 1e-6
    )


def test_scanned_layers_give_the_same_logits(tiny_checkpoint, tiny_io, forward):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io
    scan_cfg, scan_params = load_transformer(fixtures_dir("official_tiny"), scan_layers=True)
    assert "transformer_blocks" in scan_params and "transformer_blocks_0" not in scan_params
    assert scan_params["transformer_blocks"]["attn"]["to_q"]["kernel"].shape == (2, 64, 64)
    logits, captures = forward(
        scan_cfg, scan_params, inputs, reference_strength=1.1, capture_blocks=(1, 3)
    )
    ref, ref_captures = forward(cfg, params, inputs, reference_strength=1.1, capture_blocks=(1, 3))
    assert max_err(logits, ref) <= 1e-5
    assert max_err(logits, nchw_to_nhwc(data["logits"])) <= TOL
    assert max_err(captures[3], ref_captures[3]) <= 1e-6
    assert max_err(captures[1], ref_captures[1]) <= 1e-6


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_does_not_change_logits(tiny_checkpoint, tiny_io, policy, forward):
    cfg, params = tiny_checkpoint
    inputs, _ = tiny_io
    ref = forward(cfg, params, inputs)
    out = forward(cfg.replace(remat_policy=policy), params, inputs)
    assert max_err(out, ref) <= 1e-5


def test_bf16_agrees_with_fp32_on_argmax(tiny_checkpoint, tiny_io, forward):
    cfg, params = tiny_checkpoint
    inputs, _ = tiny_io
    fp32 = forward(cfg, params, inputs, reference_strength=1.1)
    bf16 = forward(cfg.replace(dtype="bfloat16"), params, inputs, reference_strength=1.1)
    assert bf16.dtype == np.float32  # logits stay float32
    agree = float(np.mean(np.argmax(fp32, -1) == np.argmax(bf16, -1)))
    assert agree >= 0.95, agree


def test_grid_ids_equal_official_pipeline_ids_at_1024px(tiny_io):
    _, data = tiny_io
    # 1024 px -> 64 x 64 tokens -> 32 x 32 after the downsample.
    np.testing.assert_array_equal(grid_position_ids(32, 32), data["pipeline_img_ids_h1024"])
    np.testing.assert_array_equal(grid_position_ids(8, 8), data["img_ids"])


@pytest.mark.parametrize(
    "strength, key, capture",
    [(1.1, "logits", (3, "attn_text_to_image_block3")), (1.0, "logits_s1", None)],
)
def test_splash_kernel_reproduces_the_official_model(
    tiny_checkpoint, tiny_io, forward, strength, key, capture
):
    """The TPU splash kernel (in the Pallas interpreter) against the official PyTorch logits:
    s = 1.1 goes through its rank-one bias column, s = 1 through the unbiased kernel."""
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io
    blocks = (capture[0],) if capture else ()
    out = forward(
        cfg.replace(attention_impl="splash_interpret"),
        params,
        inputs,
        reference_strength=strength,
        capture_blocks=blocks,
    )
    logits = out[0] if blocks else out
    assert max_err(logits, nchw_to_nhwc(data[key])) <= TOL
    if capture:
        assert max_err(out[1][capture[0]], data[capture[1]]) <= TOL


def test_splash_kernel_without_source(tiny_checkpoint, tiny_io_noref, forward):
    cfg, params = tiny_checkpoint
    inputs, data = tiny_io_noref
    logits = forward(cfg.replace(attention_impl="splash_interpret"), params, inputs)
    assert max_err(logits, nchw_to_nhwc(data["logits"])) <= TOL
