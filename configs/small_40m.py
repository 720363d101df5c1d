"""A 41M-parameter transformer (2 + 4 blocks, 8 x 64 heads, 1024 codes) for benchmarks and tests.

The shape of the 41M reference config against which the official sampler was timed (issue 4).

python -m launch.inspect --config configs/small_40m.py
"""

from configs import common


def get_config(arg: str | None = None):
    del arg
    import ml_collections

    config = ml_collections.ConfigDict()
    config.model = common.transformer(
        num_layers=2,
        num_single_layers=4,
        num_attention_heads=8,
        attention_head_dim=64,
        joint_attention_dim=384,
        pooled_projection_dim=384,
        axes_dims_rope=(8, 28, 28),
        vocab_size=1088,
        codebook_size=1024,
        downsample=True,
        upsample=True,
        connector_type="linear",
        text_encoder_architecture="MiniLM",
    )
    config.mesh = common.mesh()
    config.inspect = common.inspect_section()
    config.inspect.grid = 32
    return config
