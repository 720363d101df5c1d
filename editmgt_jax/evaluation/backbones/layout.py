"""Layout hooks between transformers' ViT-family tensors and our parameters."""

from __future__ import annotations

import numpy as np

from editmgt_jax.checkpoint.convert.table import Hook

# ViT / DINOv2 store the class token as [1, 1, D] and the position table as [1, 1 + N, D]; we
# keep [D] and [1 + N, D] (CLIP's own layouts).
CLASS_TOKEN = Hook(
    "class_token",
    lambda x: np.ascontiguousarray(x.reshape(-1)),
    lambda x: np.ascontiguousarray(x.reshape(1, 1, -1)),
)
POSITIONS = Hook(
    "positions",
    lambda x: np.ascontiguousarray(x.reshape(-1, x.shape[-1])),
    lambda x: np.ascontiguousarray(x[None]),
)
