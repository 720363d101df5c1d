"""The shape of the parity fixture `official_tiny`: 2 + 2 blocks, 4 x 16, down/upsample.

python -m launch.inspect --config configs/official_tiny.py
"""

from configs import common


def get_config(arg: str | None = None):
    del arg
    import ml_collections

    config = ml_collections.ConfigDict()
    config.model = common.transformer(
        num_layers=2,
        num_single_layers=2,
        num_attention_heads=4,
        attention_head_dim=16,
        joint_attention_dim=48,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
        vocab_size=128,
        codebook_size=64,
        downsample=True,
        upsample=True,
        connector_type="linear",
        text_encoder_architecture="CLIP_Gemma2",
    )
    config.mesh = common.mesh()
    config.inspect = common.inspect_section()
    config.inspect.grid = 16
    return config
