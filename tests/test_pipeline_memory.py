"""benchmarks.pipeline_memory on miniature configurations: counts and AOT memory, nothing allocated."""

import jax
import pytest

from benchmarks import pipeline_memory as pm
from configs import official_tiny
from editmgt_jax.models.text.clip import CLIPTextConfig
from editmgt_jax.models.text.gemma2 import Gemma2Config
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.models.vq import VQConfig

VQ = VQConfig(
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=4,
    num_vq_embeddings=16,
)
CLIP = CLIPTextConfig(
    vocab_size=20,
    hidden_size=8,
    intermediate_size=16,
    projection_dim=4,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=6,
    bos_token_id=18,
    eos_token_id=19,
)
GEMMA = Gemma2Config(
    vocab_size=32,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=8,
    sliding_window=4,
    query_pre_attn_scalar=8,
)


def _components(dtype):
    cfg = TransformerConfig.from_dict(official_tiny.get_config().model)
    cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
    return [
        pm.transformer_component(cfg, grid=8, batch=1, text_len=4, capture_blocks=(3,)),
        pm.vq_encode_component(VQ, dtype, pixels=8, batch=1),
        pm.vq_decode_component(VQ, dtype, grid=4, batch=1),
        pm.clip_component(CLIP, dtype, batch=1),
        pm.gemma2_component(GEMMA, dtype, text_len=5, batch=1),
    ]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_counts_and_memory(dtype):
    components = _components(dtype)
    itemsize = 4 if dtype == "float32" else 2
    rows = []
    for component in components:
        leaves = jax.tree.leaves(component.params)
        assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing allocated
        row = pm.measure(component, compile=dtype == "float32")
        assert row["params"] == sum(x.size for x in leaves) > 0
        assert row["dtype"] == dtype
        assert row["param_bytes"] == row["params"] * itemsize
        if dtype == "float32":
            memory = row["memory"]
            assert set(memory) == set(pm.MEMORY_FIELDS)
            for field in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes"):
                assert memory[field] > 0, (component.name, field)
            assert memory["generated_code_size_in_bytes"] >= 0
            assert row["working_bytes"] >= memory["temp_size_in_bytes"]
        else:
            assert "memory" not in row
        rows.append(row)
    assert rows[0]["params"] == 609_408  # official_tiny (0.61M in BENCHMARKS.md)
    assert rows[1]["params"] == rows[2]["params"]

    total = pm.pipeline_total(rows)
    by_name = {r["component"]: r for r in rows}
    shared = by_name["vq_decode"]["param_bytes"]
    assert total["param_bytes"] == sum(r["param_bytes"] for r in rows) - shared
    if dtype == "float32":
        peak = max(r["working_bytes"] for r in rows)
        assert total["peak_working_bytes"] == peak
        assert total["total_bytes"] == total["param_bytes"] + peak
        assert by_name[total["peak_stage"]]["working_bytes"] == peak
    else:
        assert "total_bytes" not in total


def test_unknown_component():
    with pytest.raises(ValueError, match="Unknown component"):
        pm.released_components(["nope"], "float32")
