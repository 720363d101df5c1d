"""Content-aware initial token tables: code embeddings and output weights from the codebook.

A fresh transformer starts with a random embedding per code id and a random output row per code,
so it must learn from data alone that two codes look alike. With a tokenizer whose codes are
image patches, the tables can start from what each code looks like instead: a fixed random
projection of the (standardised) codebook vector. Similar patches then start with similar
embeddings and similar logits; training moves on from there. Only initial values change (same
parameters, same architecture), and the mask token's embedding stays as initialised.

Example:
    >>> import jax, numpy as np
    >>> params = {"embed": {"embeddings": {"embedding": np.zeros((5, 8), np.float32)}},
    ...           "mlm_layer": {"conv2": {"kernel": np.zeros((8, 4), np.float32)}}}
    >>> out = codebook_informed_tables(params, np.eye(4, 6, dtype=np.float32), jax.random.key(0))
    >>> out["embed"]["embeddings"]["embedding"].shape, bool((out["embed"]["embeddings"]
    ...     ["embedding"][4] == 0).all())
    ((5, 8), True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from editmgt_jax.common_types import PRNGKey


def _projected(codebook: np.ndarray, width: int, key: PRNGKey) -> np.ndarray:
    """[K, D] codebook -> [K, width], each column ~ unit variance."""
    vectors = np.asarray(codebook, np.float64)
    vectors = (vectors - vectors.mean(0)) / max(vectors.std(), 1e-8)
    projection = np.asarray(jax.random.normal(key, (vectors.shape[1], width)), np.float64)
    out = vectors @ projection / np.sqrt(vectors.shape[1])
    return (out / max(out.std(), 1e-8)).astype(np.float32)


def codebook_informed_tables(params: dict, codebook: np.ndarray, key: PRNGKey) -> dict:
    """`params` (a Transformer's, unboxed) with `embed/embeddings/embedding[:K]` and
    `mlm_layer/conv2/kernel` replaced by projections of `codebook` [K, D], scaled like their
    default initialisations (unit normal embeddings; 1/sqrt(fan_in) kernel)."""
    embedding = params["embed"]["embeddings"]["embedding"]
    kernel = params["mlm_layer"]["conv2"]["kernel"]
    codes = kernel.shape[1]
    if codebook.shape[0] != codes:
        raise ValueError(f"codebook has {codebook.shape[0]} codes; the model predicts {codes}")
    in_key, out_key = jax.random.split(key)
    table = np.asarray(embedding).copy()
    table[:codes] = _projected(codebook, table.shape[1], in_key)
    readout = _projected(codebook, kernel.shape[0], out_key).T / np.sqrt(kernel.shape[0])
    new = jax.tree.map(lambda x: x, params)  # a new tree; leaves shared
    new["embed"] = dict(new["embed"], embeddings={"embedding": jnp.asarray(table, embedding.dtype)})
    new["mlm_layer"] = dict(
        new["mlm_layer"],
        conv2=dict(new["mlm_layer"]["conv2"], kernel=jnp.asarray(readout, kernel.dtype)),
    )
    return new
