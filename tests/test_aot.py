"""launch.aot: the production programs compiled for TPU topologies on this CPU host (libtpu's
compiler, no TPU): per-chip memory, exit codes, the planner.

Each compile runs `python -m launch.aot` in a subprocess: the script sets up the compile-only
TPU client itself (editmgt_jax.aot.topologies.prepare_environment) before JAX starts, which a
test process whose backends are already up could not.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from editmgt_jax.aot import topologies

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(
    not topologies.libtpu_available(),
    reason="libtpu is not installed (pip install 'editmgt-jax[tpu]'): no TPU compiler",
)
# configs/smoke.py, smaller still where it costs compile time and nothing else.
TINY = ["--config", "configs/smoke.py", "--config.train.batch_size=8"]


def aot(*args: str, timeout: int = 600) -> tuple[int, list[dict], str]:
    """(exit code, JSON records on stdout, stderr) of one `python -m launch.aot` run."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("JAX_PLATFORMS", None)  # the script chooses its own (cpu + compile-only TPU)
    result = subprocess.run(
        [sys.executable, "-m", "launch.aot", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, records, result.stderr


def state_bytes_per_chip(fsdp: int, batch: int, data_parallel: int) -> tuple[int, int, int]:
    """(lower, upper, leaves) bounds on one chip's argument bytes for TINY's train step, from
    shapes alone (no compiler): params + both Adam moments + EMA, float32, divided by the fsdp
    size, plus the per-chip batch. Lower: every leaf split evenly. Upper: every leaf whole (small
    ones are not split) and padded to TPU tiles (8 x 128 elements per 2D slice, 128 per 1D
    array, a 128-word tile per scalar)."""
    import jax

    from configs import smoke
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.models.transformer_stats import abstract_params

    config = smoke.get_config()
    params = jax.tree.leaves(abstract_params(TransformerConfig.from_dict(config.model)))
    n = sum(math.prod(p.shape) for p in params)
    grid, text, dim = config.image_size // 4, config.text_encoder.max_length, 384
    per_example = 4 * (2 * grid * grid + text * dim + dim + 5)
    lower = 4 * 4 * n // fsdp + batch * per_example // data_parallel

    def padded(shape) -> int:
        if not shape:
            return 128
        if len(shape) == 1:
            return -(-shape[0] // 128) * 128
        rows = math.prod(shape[:-2]) * (-(-shape[-2] // 8) * 8)
        return rows * (-(-shape[-1] // 128) * 128)

    upper = 4 * 4 * sum(padded(p.shape) for p in params)
    upper += batch * per_example + 4096 * 10  # batch arrays, uncond, key, the step counters
    return lower, upper, len(params)


@pytest.fixture(scope="module")
def train_4_and_8():
    four = aot(
        *TINY, "--topology", "v5e:2x2", "--job", "train", "--config.mesh.ici_parallelism=1,4,1"
    )
    eight = aot(
        *TINY, "--topology", "v5e:2x4", "--job", "train", "--config.mesh.ici_parallelism=1,8,1"
    )
    return four, eight


def test_train_step_compiles_for_4_and_8_chips(train_4_and_8):
    for (code, records, stderr), chips in zip(train_4_and_8, (4, 8), strict=True):
        assert code == 0, stderr[-3000:]
        (r,) = records
        assert r["job"] == "train" and r["topology"] in ("v5e:2x2", "v5e:2x4")
        assert r["chips"] == chips and r["device_kind"] == "TPU v5 lite"
        assert r["mesh"] == {"data": 1, "fsdp": chips, "tensor": 1}
        assert r["fits"] is True and r["hbm_bytes_per_chip"] == 16 * 2**30
        assert set(r["bytes_per_chip"]) == {
            "arguments",
            "outputs",
            "aliased",
            "temporaries",
            "code",
            "peak",
        }
        # FSDP: weights are gathered for the passes and gradients reduce-scattered.
        assert r["collectives"]["all-gather"]["count"] > 0
        assert r["model_flops"] > 0 and r["estimated_step_s"] > 0 and 0 < r["estimated_mfu"] <= 1
        lower, upper, _ = state_bytes_per_chip(chips, 8, chips)
        args = r["bytes_per_chip"]["arguments"]
        assert lower <= args <= upper, (chips, lower, args, upper)
        # The donated state comes back in place.
        assert r["bytes_per_chip"]["aliased"] >= r["state_bytes_per_device"]
    (r4,), (r8,) = train_4_and_8[0][1], train_4_and_8[1][1]
    # Twice the fsdp: the state's share per chip halves (what the compiler saw, unpadded).
    assert r8["state_bytes_per_device"] < 0.6 * r4["state_bytes_per_device"]
    assert "fits" not in train_4_and_8[0][2] or "train" in train_4_and_8[0][2]  # the table


def test_splash_attention_compiles_for_tpu(train_4_and_8):
    """The Pallas kernel in the TPU program, and the report reads the HLO past its multi-line
    kernel configs: the same collectives as the XLA attention's step."""
    code, records, stderr = aot(
        *TINY,
        "--topology",
        "v5e:2x2",
        "--job",
        "train",
        "--config.mesh.ici_parallelism=1,4,1",
        "--config.model.attention_impl=splash",
    )
    assert code == 0, stderr[-3000:]
    (splash,) = records
    (xla,) = train_4_and_8[0][1]
    assert splash["fits"] and xla["pallas_kernels"] == 0
    # A forward and a backward kernel for each of the smoke model's blocks.
    blocks = 2
    assert splash["pallas_kernels"] >= 2 * blocks
    # Gradients: the same reductions; weights: gathered alike (within a few: layouts differ).
    for kind in ("all-reduce", "reduce-scatter"):
        assert splash["collectives"][kind]["count"] == xla["collectives"][kind]["count"], kind
    gathers = (
        splash["collectives"]["all-gather"]["count"],
        xla["collectives"]["all-gather"]["count"],
    )
    assert 0.9 * gathers[1] <= gathers[0] <= gathers[1], gathers
    assert splash["bytes_per_chip"]["arguments"] == xla["bytes_per_chip"]["arguments"]


def test_edit_sampler_compiles_for_4_and_8_chips():
    for topology in ("v5e:2x2", "v5e:2x4"):
        code, records, stderr = aot(*TINY, "--topology", topology, "--job", "edit")
        assert code == 0, stderr[-3000:]
        (r,) = records
        assert r["program"] == "edit" and r["fits"] and r["model_batch"] == 2
        assert r["steps"] == 8 and r["model_flops"] > 0


def test_too_large_a_config_does_not_fit_and_exits_1():
    # 1024 px edits on a model of width 4096 with float32 weights: about 23 GB of weights alone.
    code, records, stderr = aot(
        *TINY,
        "--topology",
        "v5e:1x1",
        "--job",
        "edit",
        "--config.model.num_attention_heads=32",
        "--config.model.attention_head_dim=128",
        "--config.model.axes_dims_rope=16,56,56",
        "--config.model.num_single_layers=24",
    )
    assert code == 1, stderr[-3000:]
    assert records and records[0]["fits"] is False
    assert "does not fit" in stderr and "edit needs" in stderr and "--plan" in stderr


def test_bad_topology_and_mesh_exit_2_with_a_clear_message():
    code, _, stderr = aot(*TINY, "--topology", "v9z:2x2")
    assert code == 2 and "unknown TPU chip 'v9z'" in stderr and "v5e" in stderr
    code, _, stderr = aot(*TINY, "--topology", "v5e:2x2x2")
    assert code == 2 and "2 positive axes" in stderr
    code, _, stderr = aot(*TINY, "--topology", "v5e:2x2", "--config.mesh.ici_parallelism=1,3,1")
    assert code == 2 and "uses 3 devices, but there are 4" in stderr and "v5e:2x2" in stderr
    code, _, stderr = aot(*TINY, "--topology", "v5e:2x2", "--config.mesh.ici_parallelism=-1,3,1")
    assert code == 2 and "does not divide 4 devices" in stderr
    code, _, stderr = aot(*TINY, "--topology", "v5e:2x2", "--config.train.no_such_field=1")
    assert code != 0 and "no_such_field" in stderr


def test_topology_names():
    assert topologies.parse_topology("v5e:4x4").chips == 16
    assert topologies.parse_topology("v5p:2x2x1").chips_per_host_bounds == (2, 2, 1)
    assert topologies.parse_topology("v5e:1x1").chips_per_host_bounds == (1, 1, 1)
    assert topologies.parse_topology("v4:2x2x1").devices == 8  # one device per TensorCore
    with pytest.raises(topologies.TopologyError, match="not CHIP:AxB"):
        topologies.parse_topology("v5e")


def test_planner_returns_a_layout_that_fits():
    code, records, stderr = aot(
        *TINY, "--topology", "v5e:2x2", "--plan", "--plan_compile_top=1", "--plan_max_batch=4"
    )
    assert code == 0, stderr[-3000:]
    summary = records[-1]
    assert summary["plan"] is True and summary["chosen"] is not None
    chosen = summary["chosen"]
    assert chosen["data"] * chosen["fsdp"] * chosen["tensor"] == 4
    compiled = [r for r in records if r.get("job") == "plan"]
    assert compiled and compiled[-1]["fits"] is True
    assert any(o.startswith("--config.mesh.ici_parallelism=") for o in summary["overrides"])
    assert "--config.train.batch_size=" in stderr
