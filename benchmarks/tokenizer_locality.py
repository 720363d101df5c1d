r"""How local a tokenizer's ids are on synthetic edits: per category, the share of token cells whose
pixels an edit changed, the share whose id changed, and how many ids changed in cells whose pixels
did not (0 for a local tokenizer; the first default model's VQ-GAN: 33% of ids for 8% of cells).

    python -m benchmarks.tokenizer_locality --vq workdirs/patch_vq/vq --num 700

Prints one JSON object.
"""

from __future__ import annotations

import collections
import json

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from data_pipelines.synthetic.generate import make_example
from editmgt_jax.checkpoint.convert.vq import load_vq
from editmgt_jax.models.patch_vq import to_patches

_VQ = flags.DEFINE_string(
    "vq", None, "Tokenizer folder (config.json + safetensors).", required=True
)
_NUM = flags.DEFINE_integer("num", 700, "Held-out examples.")
_SEED = flags.DEFINE_integer("seed", 4_000_001, "World seed.")
_SIZE = flags.DEFINE_integer("size", 64, "Image side.")


def main(argv):
    del argv
    model, params = load_vq(_VQ.value)
    stride = model.config.stride
    encode = jax.jit(lambda x: model.apply({"params": params}, x, method=model.encode_to_ids))
    totals = collections.defaultdict(lambda: np.zeros(4))
    for i in range(_NUM.value):
        e = make_example(_SEED.value, i, _SIZE.value, "heldout")
        pair = np.stack([e.source, e.target])
        ids = np.asarray(encode(jnp.asarray(pair, jnp.float32) / 255.0))
        cells = np.asarray(to_patches(jnp.asarray(pair), stride))
        pixels = (cells[0] != cells[1]).any(-1)
        changed = ids[0] != ids[1]
        totals[e.category] += [pixels.sum(), changed.sum(), (changed & ~pixels).sum(), pixels.size]
    report = {
        category: dict(
            cells_changed=float(p / n),
            ids_changed=float(c / n),
            ids_changed_in_identical_cells=int(bad),
        )
        for category, (p, c, bad, n) in sorted(totals.items())
    }
    print(json.dumps(dict(vq=_VQ.value, num=_NUM.value, seed=_SEED.value, per_category=report)))


if __name__ == "__main__":
    app.run(main)
