"""Run under 8 simulated CPU devices (tests/test_crispedit_recipe.py); prints one JSON line.

The miniature release's CLIP + Gemma 2 (the bundle given as argv[1]) encoded per batch on a
(data 2 x fsdp 4) mesh with its weights sharded over fsdp, against the encoder on one device.
"""

import json
import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from editmgt_jax import sharding  # noqa: E402
from editmgt_jax.training.pipeline import text_encoder_for  # noqa: E402
from editmgt_jax.training.text_conditioning import TextConditioning  # noqa: E402

bundle = sys.argv[1]
encoder = text_encoder_for(ml_collections.ConfigDict(dict(kind="clip_gemma2")), bundle)
mesh = sharding.create_mesh((2, 4, 1))
batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
# The miniature's weights are tiny: shard every leaf that divides, as the real 5 GB ones are.
conditioning = TextConditioning(encoder, mesh, batch_sharding, min_sharded_bytes=0)
texts = ["make it red", "make the circle blue", "", "the green square", "make it"] * 2
texts = texts[:8]
states, pooled = conditioning.global_states(texts)
expected = encoder.encode(texts)
specs = [x.sharding.spec for x in jax.tree.leaves(conditioning._params)]
print(
    json.dumps(
        dict(
            states_error=float(np.abs(np.asarray(states) - np.asarray(expected.states)).max()),
            pooled_error=float(np.abs(np.asarray(pooled) - np.asarray(expected.pooled)).max()),
            states_sharding=str(states.sharding.spec),
            sharded_leaves=sum("fsdp" in str(s) for s in specs),
            leaves=len(specs),
            gemma_embed=str(conditioning._params["gemma"]["embed_tokens"].sharding.spec),
        )
    )
)
