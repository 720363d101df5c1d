"""The planner's analytic model and its correction from the compiler (no compiles: a stand-in
compile function returns the bytes a compiler would report)."""

from __future__ import annotations

import pytest

from editmgt_jax.aot import plan, topologies

V5E_8 = topologies.parse_topology("v5e:2x4")
# The 1B recipe's sizes at 1024 px (programs.plan_shape on configs/editmgt_crispedit.py).
ONE_B = dict(
    params=1_009_306_624,
    trained_params=1_009_306_624,
    state_bytes=10_130_000_000,  # float32 weights + int8 moments + the float32 accumulator
    inner_dim=1024,
    heads=8,
    num_blocks=42,
    positions=2304,
    act_bytes=2,
    batch_bytes=4 * (2 * 64 * 64 + 256 * 2304 + 1024 + 5),
    fused_attention=False,
)
POLICIES = ("none", "dots", "full")


def test_the_state_is_the_configs_own():
    full = plan.Candidate(1, 8, 1, "full", 4)
    lora = dict(ONE_B, trained_params=8_300_000, state_bytes=4_100_000_000)
    assert plan.estimate(full, lora, V5E_8)["memory"] < plan.estimate(full, ONE_B, V5E_8)["memory"]
    # More fsdp divides the state.
    half = plan.estimate(plan.Candidate(2, 4, 1, "full", 4), ONE_B, V5E_8)["memory"]
    assert half > plan.estimate(full, ONE_B, V5E_8)["memory"]


def test_a_fused_attention_kernel_drops_the_score_matrices():
    cand = plan.Candidate(1, 8, 1, "none", 4)
    fused = dict(ONE_B, fused_attention=True)
    scores_kept = 42 * 4 * 8 * 2304 * 2304 * 4.0
    drop = plan.estimate(cand, ONE_B, V5E_8)["memory"] - plan.estimate(cand, fused, V5E_8)["memory"]
    assert drop >= scores_kept


def test_tensor_parallelism_does_not_split_the_residual_streams():
    # Kept activations: tensor 8 divides only the per-head / MLP part.
    a = plan.estimate(plan.Candidate(1, 8, 1, "none", 1), dict(ONE_B, fused_attention=True), V5E_8)
    b = plan.estimate(plan.Candidate(1, 1, 8, "none", 1), dict(ONE_B, fused_attention=True), V5E_8)
    assert b["memory"] > a["memory"] / 8


def test_the_plan_corrects_its_model_from_each_compile():
    """The first pick's compile needs 3x its estimate: the model scales the estimates of that
    policy and tensor split, drops what no longer fits, and the next compile is a layout that
    fits by the corrected model."""
    estimates = {}
    compiled = []

    def compile_fn(cand):
        est = plan.estimate(cand, ONE_B, V5E_8)["memory"]
        estimates[cand] = est
        compiled.append(cand)
        need = est * (3.0 if plan.correction_key(cand) == plan.correction_key(compiled[0]) else 1.0)
        return dict(
            fits=need <= V5E_8.hbm_bytes_per_device,
            hbm_bytes_per_device=V5E_8.hbm_bytes_per_device,
            bytes_per_chip=dict(peak=int(need), code=0),
        )

    result = plan.plan(V5E_8, ONE_B, POLICIES, 8, compile_fn, max_batch_per_chip=16, compile_top=4)
    first = compiled[0]
    assert result["correction"][plan.correction_key(first)] == pytest.approx(3.0, rel=1e-6)
    assert result["chosen"] is not None and result["chosen"] != first
    assert result["tried"][0]["fits"] is False
    chosen = result["chosen"]
    # What was chosen fits by the corrected model too.
    factor = result["correction"].get(plan.correction_key(chosen), 1.0)
    assert estimates[chosen] * factor <= 0.9 * V5E_8.hbm_bytes_per_device


def test_a_refusal_for_memory_counts_as_more_than_the_chip():
    record = dict(fits=False, error="RESOURCE_EXHAUSTED: ...", hbm_bytes_per_device=100)
    assert plan.measured_bytes(record) > 100
    # The compiler's stated temporaries when it gives them (GiB).
    stated = dict(
        record,
        error="RESOURCE_EXHAUSTED: the total memory required for HLO temporaries (21.92G) "
        "exceeds available HBM (15.75G).",
        hbm_bytes_per_device=16 * 2**30,
    )
    assert plan.measured_bytes(stated) == pytest.approx(21.92 * 2**30)
    assert plan.measured_bytes(dict(fits=True, bytes_per_chip=dict(peak=5, code=2))) == 7


def test_largest_batch_is_the_last_that_fits():
    cand = plan.Candidate(1, 8, 1, "full", 1)
    fused = dict(ONE_B, fused_attention=True)
    largest = plan.largest_batch(cand, fused, V5E_8)
    limit = 0.9 * V5E_8.hbm_bytes_per_device
    at = lambda b: plan.estimate(plan.Candidate(1, 8, 1, "full", b), fused, V5E_8)["memory"]
    assert largest >= 1 and at(largest) <= limit < at(largest + 1)
    # Anchored on a compile that needed 3 GB more than the model: a smaller batch.
    assert plan.largest_batch(cand, fused, V5E_8, measured=at(1) + 3e9) < largest
    assert plan.largest_batch(cand, fused, V5E_8, measured=at(1)) == largest


def test_overrides_keep_the_update_size():
    pick = plan.Candidate(1, 2, 4, "none", 4)  # 8 examples a step
    flags = pick.overrides(update_size=256, accumulation=8)
    assert "--config.train.batch_size=8" in flags
    assert "--config.optim.accumulation_steps=32" in flags
    assert not any("accumulation" in f for f in pick.overrides(update_size=64, accumulation=8))
    assert not any("accumulation" in f for f in pick.overrides(update_size=100, accumulation=1))
