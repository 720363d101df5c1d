"""The released EditMGT model: 14 + 28 blocks, 8 x 128 heads, 1,009,306,624 parameters.

    python -m launch.inspect --config configs/editmgt_1b.py
    python -m launch.inspect --config configs/editmgt_1b.py --config.model.dtype=bfloat16

`get_config("scan")` stacks the layers with `nn.scan` (faster compiles, same math).
"""

from configs import common, sizes


def get_config(arg: str | None = None):
    import ml_collections

    config = ml_collections.ConfigDict()
    config.model = common.transformer(**sizes.EDITMGT_1B)
    if arg == "scan":
        config.model.scan_layers = True
    elif arg:
        raise ValueError(f"Unknown config argument {arg!r}; expected nothing or 'scan'")
    config.mesh = common.mesh()
    config.inspect = common.inspect_section()  # 64 x 64 tokens = 1024 px
    return config
