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


def grown_token_tables(params: dict, old_codebook: np.ndarray, new_codebook: np.ndarray) -> dict:
    """`params` (a Transformer's, unboxed) for a codebook that keeps `old_codebook` [K, D] as its
    first K codes and adds codes after them (`new_codebook` [K', D], K' > K).

    Each added code starts with the embedding row and output column of its nearest old code, and
    the mask token's row moves to the new last id (K'). An added code's logit then ties with its
    nearest old code's, which has the lower id, so the most likely code is what the old model
    predicted (its probability shared with the tied codes, which can change a sampler's reveal
    order) until training breaks the tie; every other weight is unchanged.
    """
    old = np.asarray(old_codebook, np.float32)
    new = np.asarray(new_codebook, np.float32)
    k, k_new = old.shape[0], new.shape[0]
    if k_new <= k or new.shape[1] != old.shape[1] or not np.array_equal(new[:k], old):
        raise ValueError(
            f"the new codebook {new.shape} must start with the old one's {old.shape} codes "
            "(unchanged) and add at least one"
        )
    embedding = np.asarray(params["embed"]["embeddings"]["embedding"])
    kernel = np.asarray(params["mlm_layer"]["conv2"]["kernel"])
    if kernel.shape[1] != k or embedding.shape[0] != k + 1:
        raise ValueError(
            f"the model predicts {kernel.shape[1]} codes with {embedding.shape[0]} embeddings; "
            f"the old codebook has {k} codes (expected {k} and {k + 1})"
        )
    nearest = np.argmin(
        np.square(new[k:, None, :] - old[None, :, :]).sum(-1), axis=1
    )  # [K' - K] ids of old codes
    table = np.concatenate([embedding[:k], embedding[nearest], embedding[k:]])
    readout = np.concatenate([kernel, kernel[:, nearest]], axis=1)
    grown = jax.tree.map(lambda x: x, params)
    grown["embed"] = dict(
        grown["embed"], embeddings={"embedding": jnp.asarray(table, embedding.dtype)}
    )
    grown["mlm_layer"] = dict(
        grown["mlm_layer"],
        conv2=dict(grown["mlm_layer"]["conv2"], kernel=jnp.asarray(readout, kernel.dtype)),
    )
    return grown
