"""The released EditMGT model: 14 + 28 blocks, 8 x 128 heads, 1,009,306,624 parameters.

    python -m launch.inspect --config configs/editmgt_1b.py
    python -m launch.inspect --config configs/editmgt_1b.py --config.model.dtype=bfloat16

`get_config("scan")` stacks the layers with `nn.scan` (faster compiles, same math).
"""

from configs import common


def get_config(arg: str | None = None):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.model = common.transformer(
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
    if arg == "scan":
        config.model.scan_layers = True
    elif arg:
        raise ValueError(f"Unknown config argument {arg!r}; expected nothing or 'scan'")
    config.mesh = common.mesh()
    config.inspect = common.inspect_section()  # 64 x 64 tokens = 1024 px
    return config
