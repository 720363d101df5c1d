"""Model sizes as plain dicts (no ml_collections), for code that runs where only jax is installed
(benchmarks/accelerator.py on a lent accelerator) and for the configs that build on them."""

# The released EditMGT / Meissonic 1B transformer (configs/editmgt_1b.py).
EDITMGT_1B = dict(
    num_layers=14,
    num_single_layers=28,
    num_attention_heads=8,
    attention_head_dim=128,
    joint_attention_dim=2304,
    pooled_projection_dim=1024,
    axes_dims_rope=(16, 56, 56),
    vocab_size=8256,
    codebook_size=8192,
    downsample=True,
    upsample=True,
    connector_type="linear",
    text_encoder_architecture="CLIP_Gemma2",
)
