r"""The embedded default model's VQ tokenizer: 64 px synthetic-world images, 4 px per token.

    python -m launch.train_vq --config configs/vq_default.py --workdir workdirs/vq_default

16 x 16 tokens per 64 px image from 512 codes, trained on the source and target images of the
synthetic edit world (configs/default.py trains the transformer on its tokens).
"""

from __future__ import annotations

import ml_collections

from configs import vq_small


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = vq_small.get_config()
    config.seed = 0
    config.model.block_out_channels = (16, 32, 64)  # two downsamples: stride 4
    config.model.latent_channels = 16
    config.model.num_vq_embeddings = 512
    config.data = ml_collections.ConfigDict(
        dict(
            source="synthetic",
            image_size=64,
            batch_size=16,
            scales=(1.0,),
            synthetic_seed=20261128,
            synthetic_num=6000,
            eval_examples=256,
            eval_crops_per_image=1,
        )
    )
    config.num_steps = 1200
    config.learning_rate = 1e-3
    config.l1_weight = 1.0
    config.l2_weight = 1.0  # PSNR outside the edit matters for the default model
    config.lpips_weight = 0.1
    config.restart.until_step = 900
    config.eval_every = 250
    config.checkpoint_every = 250
    return config
