"""Low-memory Adam states (`optim.moments`): updates, codes, bytes, sharding, checkpoints.

The sharded part runs this file as a module under 8 simulated CPU devices
(`python -m tests.test_optimizer_state` prints one JSON line).
"""

import json
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from editmgt_jax.training import low_memory_adam as lma
from editmgt_jax.training.optimizer import MOMENTS, make_optimizer

# The released recipe's Adam (betas 0.9 / 0.999, eps 1e-8, weight decay 0.01, clip 10).
RECIPE = dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01, grad_clip=10.0)


def optim(**overrides):
    return common.optim(**{**RECIPE, **overrides})


def _params(rng, shapes):
    return {k: jnp.asarray(rng.standard_normal(s) * 0.1, jnp.float32) for k, s in shapes.items()}


def _rel(a, b):
    """||a - b|| / ||b|| over a whole tree."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    num = sum(float(jnp.sum((x - y) ** 2)) for x, y in pairs)
    den = sum(float(jnp.sum(y**2)) for y in jax.tree.leaves(b))
    return (num / den) ** 0.5


def _updates(tx, params, grads):
    """The updates tx makes for the gradient sequence `grads` at fixed `params` (open loop: both
    optimizers see the same gradients, so differences do not compound through the parameters)."""
    state, out = tx.init(params), []
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update(g, state, params)
        out.append(u)
    return out


def test_unknown_moments_value_is_refused():
    with pytest.raises(ValueError, match=r"moments='fp8'.*'float32'.*'factored'"):
        make_optimizer(optim(moments="fp8"), 10)


def test_float32_default_is_optax_adamw():
    assert common.optim().moments == "float32"
    params = {"w": jnp.zeros((4, 3))}
    ours = make_optimizer(optim(), 10).init(params)
    # A section without the field (older configs) builds the same optimizer.
    old = ml_collections.ConfigDict({k: v for k, v in optim().items() if k != "moments"})
    assert jax.tree.structure(make_optimizer(old, 10).init(params)) == jax.tree.structure(ours)
    assert isinstance(ours[1][0], optax.ScaleByAdamState)


# Tolerances (relative RMS of the whole update tree, per step, vs float32 AdamW):
# - step 1 decodes all-zero moments exactly, so every choice but "factored" is float32 math: 1e-5.
# - bfloat16 keeps 8 significant bits: each stored moment is within 2^-8 (0.4%) relative, and so
#   is the update except where b1 m and the new gradient nearly cancel; measured 0.13-0.27% over
#   these steps, bound 1e-2.
# - int8: m's square-root code is within half a step of 127 (one step at the bottom of a block),
#   about 1% RMS of m for Gaussian entries; v's fourth-root code about 1% near the block's largest
#   values; measured 0.7-1.1%, bound 5e-2 (a wrong scale or code gives errors of order 1).
@pytest.mark.parametrize("moments,tol", [("bfloat16", 1e-2), ("int8", 5e-2)])
def test_updates_follow_float32_adamw(moments, tol):
    rng = np.random.default_rng(0)
    # w is quantized by int8 (>= 4096 entries, last axis not a multiple of the block), b is not.
    params = _params(rng, {"w": (48, 700), "b": (700,)})
    grads = [_params(rng, {"w": (48, 700), "b": (700,)}) for _ in range(6)]
    ref = _updates(make_optimizer(optim(), 10), params, grads)
    got = _updates(make_optimizer(optim(moments=moments), 10), params, grads)
    errors = [_rel(a, b) for a, b in zip(got, ref, strict=True)]
    assert errors[0] < 1e-5, errors
    assert max(errors) < tol, errors


def test_factored_equals_adam_when_squared_gradients_are_rank_one():
    # g_t = s_t a b^T: g^2 = s_t^2 (a^2)(b^2)^T is rank one, so the factored v is Adam's v (up to
    # the 1e-30 Adafactor epsilon); what remains is m's bfloat16 storage: <= 2^-8 relative, and
    # with s_t > 0 (no cancellation, no clipping at these norms) the update's error is as well:
    # 2^-8 = 3.9e-3 < 5e-3. The 1-D bias keeps a full float32 v (the same bound).
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(n) * 0.1 for n in (256, 384, 384))
    params = _params(rng, {"w": (256, 384), "bias": (384,)})
    grads = [
        {"w": jnp.asarray(s * np.outer(a, b), jnp.float32), "bias": jnp.asarray(s * c, jnp.float32)}
        for s in (1.0, 0.5, 2.0, 0.3, 1.2, 0.8)
    ]
    ref = _updates(make_optimizer(optim(), 10), params, grads)
    got = _updates(make_optimizer(optim(moments="factored"), 10), params, grads)
    errors = [_rel(x, y) for x, y in zip(got, ref, strict=True)]
    assert max(errors) < 5e-3, errors
    state = make_optimizer(optim(moments="factored"), 10).init(params)[1][0]
    assert state.nu_row["w"].shape == (256, 1) and state.nu_col["w"].shape == (1, 384)
    assert state.nu["bias"].shape == (384,) and state.nu["w"].shape == (1, 1)


@pytest.mark.parametrize("moments", ["bfloat16", "int8"])
def test_quadratic_converges_like_float32(moments):
    """Closed loop on an ill-conditioned quadratic: curvatures spanning 1e-6..1 inside every
    block of 256, so most second moments sit far below their block's largest (where a code that
    rounded them to 0 would blow their updates up to 1e8 x lr). ("factored" is not expected to
    follow Adam here: this g^2 is far from rank one; measured 7x float32's final loss.)"""
    rng = np.random.default_rng(2)
    curv = {"w": jnp.asarray(10.0 ** rng.uniform(-6, 0, (128, 512)), jnp.float32)}
    target = {"w": jnp.asarray(rng.standard_normal((128, 512)), jnp.float32)}
    loss = lambda p: 0.5 * jnp.sum(curv["w"] * (p["w"] - target["w"]) ** 2)

    def run(tx):
        def body(carry, _):
            p, s = carry
            value, g = jax.value_and_grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), (value, jnp.max(jnp.abs(u["w"])))

        p0 = {"w": jnp.zeros((128, 512))}
        return jax.lax.scan(body, (p0, tx.init(p0)), None, length=300)[1]

    cfg = optim(learning_rate=1e-2, weight_decay=0.0)
    ref_loss, ref_step = jax.jit(lambda: run(make_optimizer(cfg, 300)))()
    cfg.moments = moments
    got_loss, got_step = jax.jit(lambda: run(make_optimizer(cfg, 300)))()
    assert bool(jnp.all(jnp.isfinite(got_loss)))
    # Adam moves every coordinate by about lr per step, whatever its curvature; int8's largest
    # single-coordinate step measured 3.0x float32's (0.046 vs 0.015, from codes at the bottom
    # of a block's range), a blown-up one would be ~1e8 x lr.
    assert float(got_step.max()) < 5 * float(ref_step.max())
    ratio = float(got_loss[-1]) / float(ref_loss[-1])
    assert ref_loss[-1] < 0.2 * ref_loss[0] and 0.5 < ratio < 2.0, (ratio, ref_loss[-1])


def test_int8_codes_round_trip_within_their_bounds():
    rng = np.random.default_rng(3)
    # Per-column scales over 8 decades, a last axis of 1000 (padded blocks) and one of 100
    # (a single block shorter than 256), exact zeros.
    for n in (1000, 100):
        x = rng.standard_normal((16, n)) * 10.0 ** rng.uniform(-8, 0, (1, n))
        x[:, ::7] = 0.0
        x = jnp.asarray(x, jnp.float32)
        codes, scale = lma.quantize_signed(x)
        assert codes.dtype == jnp.int8 and codes.shape == x.shape
        assert scale.shape == lma.block_scale_shape(x.shape, 256)
        y = np.asarray(lma.dequantize_signed(codes, scale))
        s = np.repeat(np.asarray(scale), 256, axis=-1)[:, :n]
        xs = np.asarray(x)
        c, cy = 127 * np.sqrt(np.abs(xs) / s), 127 * np.sqrt(np.abs(y) / s)
        assert np.all((cy - c > -1 - 1e-4) & (cy - c <= 0.5 + 1e-4))  # nearest, or one down
        assert np.all(np.abs(y) <= 1.2 * np.abs(xs) * (1 + 1e-6))  # never enlarges m by > 20%
        assert np.all(np.sign(y) * np.sign(xs) >= 0)
        np.testing.assert_array_equal(y[:, ::7], 0.0)
        np.testing.assert_allclose(np.abs(y).max(-1), np.abs(xs).max(-1))

        v = x * x
        codes, scale = lma.quantize_nonnegative(v)
        assert codes.dtype == jnp.uint8
        w = np.asarray(lma.dequantize_nonnegative(codes, scale))
        s = np.repeat(np.asarray(scale), 256, axis=-1)[:, :n]
        v = np.asarray(v)
        c, cw = 255 * (v / s) ** 0.25, 255 * (w / s) ** 0.25
        assert np.all((cw - c >= -0.5 - 1e-4) & (cw - c < 1 + 1e-4))  # nearest, or one up
        # Never shrinks v by more than 20% (so the update m / sqrt(v) grows by < 12%), and
        # never to 0: a tiny v far below its block's max (1e-16 of it here) stays positive.
        assert np.all(w >= 0.8 * v * (1 - 1e-6))
        assert np.all((w > 0) == (v > 0))
        np.testing.assert_allclose(w.max(-1), v.max(-1), rtol=1e-6)


def _state_bytes(tx, params):
    shapes = jax.eval_shape(tx.init, params)
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def test_state_bytes_per_parameter():
    # One transformer-like matrix and a bias: only shapes, nothing is allocated.
    params = {
        "kernel": jax.ShapeDtypeStruct((1024, 4096), jnp.float32),
        "bias": jax.ShapeDtypeStruct((4096,), jnp.float32),
    }
    count = 1024 * 4096 + 4096
    per_param = {
        m: _state_bytes(make_optimizer(optim(moments=m), 10), params) / count for m in MOMENTS
    }
    assert per_param["float32"] == pytest.approx(8.0, abs=1e-4)
    assert per_param["bfloat16"] == pytest.approx(4.0, abs=1e-4)  # 2 + 2
    # int8: 1 + 1 byte of codes and 2 x 4 bytes of scale per 256 entries (the bias is quantized
    # too: 4096 entries).
    assert per_param["int8"] == pytest.approx(2.0 + 8.0 / 256, abs=1e-4)
    # factored: bfloat16 m; (1024 + 4096) float32 statistics for the matrix; a full bias v.
    expected = (2 * count + 4 * (1024 + 4096) + 4 * 4096) / count
    assert per_param["factored"] == pytest.approx(expected, abs=1e-3)
    assert per_param["float32"] / per_param["int8"] > 3.9
    assert per_param["float32"] / per_param["factored"] > 3.9


@pytest.mark.parametrize("moments", MOMENTS[1:])
def test_accumulation_applies_every_k_micro_steps(moments):
    """optax.MultiSteps: k micro-steps average their gradients into one update of the same
    optimizer (so 4 micro-steps with k = 2 equal 2 steps on the pairs' mean gradients)."""
    rng = np.random.default_rng(4)
    params = _params(rng, {"w": (32, 256), "b": (256,)})
    grads = [_params(rng, {"w": (32, 256), "b": (256,)}) for _ in range(4)]
    accumulated = make_optimizer(optim(moments=moments, accumulation_steps=2), 10)
    state, p, update = accumulated.init(params), params, jax.jit(accumulated.update)
    for i, g in enumerate(grads):
        u, state = update(g, state, p)
        if i % 2 == 0:
            assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(u))
        p = optax.apply_updates(p, u)
    plain = make_optimizer(optim(moments=moments), 10)
    state, q, update = plain.init(params), params, jax.jit(plain.update)
    for g0, g1 in zip(grads[::2], grads[1::2], strict=True):
        u, state = update(jax.tree.map(lambda a, b: (a + b) / 2, g0, g1), state, q)
        q = optax.apply_updates(q, u)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p, q)


# --- sharded: 8 simulated devices, one subprocess ----------------------------------------------


def _multidevice_main():
    """On a (data 1 x fsdp 4 x tensor 2) mesh, for every choice: the train state's shardings
    (`train_state_shapes`), the optimizer state made and updated with them, and one orbax
    save/restore of all the updated states; prints one JSON line. The transformer's init is
    compiled once (`create_sharded_train_state`, float32): its parameters serve every choice."""
    from configs import smoke
    from editmgt_jax import sharding
    from editmgt_jax.checkpoint.manager import TrainCheckpoints
    from editmgt_jax.models.transformer import Transformer, TransformerConfig, example_inputs
    from editmgt_jax.training.train_state import create_sharded_train_state, train_state_shapes

    assert jax.device_count() == 8, jax.devices()
    # The smoke transformer widened to 4 x 32 = 128 features, so that matrices of 128 x 512 and
    # 384 x 128 are quantized (int8) and factored ("factored" needs two dimensions >= 128).
    config = smoke.get_config()
    config.model.update(num_attention_heads=4, attention_head_dim=32, axes_dims_rope=(8, 12, 12))
    cfg = TransformerConfig.from_dict(config.model)
    model = Transformer(cfg)
    mesh = sharding.create_mesh([1, 4, 2])
    sample = example_inputs(cfg, batch=1, grid=(8, 8), text_len=32)
    key = jax.random.key(0)
    min_bytes = 8192  # every parameter of 2048+ float32 entries is split over fsdp x tensor
    out, states, abstract_states = {}, {}, {}
    for moments in MOMENTS:
        section = ml_collections.ConfigDict({**config.optim.to_dict(), "moments": moments})
        tx = make_optimizer(section, 10)
        abstract, shardings = train_state_shapes(model, tx, key, sample, mesh)
        if moments == "float32":
            state, _ = create_sharded_train_state(model, tx, key, sample, mesh)
            params = state.params
            grads = jax.tree.map(lambda p: 1e-3 * jnp.sign(p) + 1e-4, params)
        opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
        update = jax.jit(
            tx.update,
            in_shardings=(shardings.params, shardings.opt_state, shardings.params),
            out_shardings=(shardings.params, shardings.opt_state),
        )
        _, opt_state = update(grads, opt_state, params)
        states[moments], abstract_states[moments] = opt_state, abstract.opt_state
        leaves = jax.tree.leaves(opt_state)
        out[moments] = dict(
            params_replicated=sharding.fully_replicated_large_arrays(params, min_bytes),
            # from the shapes alone, and on the arrays the jitted init and update made
            abstract_replicated=sharding.fully_replicated_large_arrays(
                abstract.opt_state, min_bytes
            ),
            opt_replicated=sharding.fully_replicated_large_arrays(opt_state, min_bytes),
            opt_split=sum(not x.sharding.is_fully_replicated for x in leaves),
            opt_bytes=sum(x.size * x.dtype.itemsize for x in leaves),
            dtypes=sorted({str(x.dtype) for x in leaves}),
            finite=all(
                bool(np.all(np.isfinite(np.asarray(x, np.float32))))
                for x in leaves
                if jnp.issubdtype(x.dtype, jnp.floating)
            ),
        )
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = TrainCheckpoints(tmp, asynchronous=False)
        ckpt.save(1, states, {})
        restored, _ = ckpt.restore(1, abstract_states)
        ckpt.close()
    for moments in MOMENTS:
        same = jax.tree.map(
            lambda a, b: (
                bool(np.array_equal(np.asarray(a), np.asarray(b)))
                and a.dtype == b.dtype
                and a.sharding == b.sharding
            ),
            restored[moments],
            states[moments],
        )
        out[moments]["restored_equal"] = all(jax.tree.leaves(same))
    print(json.dumps(out))


@pytest.fixture(scope="module")
def sharded():
    from tests.test_sharding import run_on_8_devices

    return run_on_8_devices("tests.test_optimizer_state")


@pytest.mark.parametrize("moments", MOMENTS)
def test_sharded_state_is_split_and_survives_a_checkpoint(sharded, moments):
    result = sharded[moments]
    assert result["params_replicated"] == []  # the premise: every large parameter is split
    # ... and so is every large optimizer leaf, in the shardings and on the arrays
    assert result["abstract_replicated"] == [] and result["opt_replicated"] == [], result
    assert result["opt_split"] > 0
    assert result["restored_equal"] and result["finite"], result
    expected = {
        "float32": ["float32", "int32"],
        "bfloat16": ["bfloat16", "int32"],
        "int8": ["float32", "int32", "int8", "uint8"],
        "factored": ["bfloat16", "float32", "int32"],
    }[moments]
    assert result["dtypes"] == expected
    if moments != "float32":
        assert result["opt_bytes"] < 0.6 * sharded["float32"]["opt_bytes"]


if __name__ == "__main__":
    _multidevice_main()
