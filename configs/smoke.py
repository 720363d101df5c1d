"""A tiny end-to-end configuration: 32 px images, MiniLM text, a 1 + 1 block transformer.

For tests and smoke runs; everything runs in about a minute on 2 CPU cores.

    python -m launch.init_checkpoint --config configs/smoke.py --out /tmp/smoke_bundle
    python -m launch.train --config configs/smoke.py --workdir /tmp/smoke --config.train.steps=24
"""

from __future__ import annotations

import ml_collections

from configs import common
from editmgt_jax.training.lora import DEFAULT_TARGETS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.image_size = 32  # pixels; tokens per side = image_size / vq stride = 8

    # Text encoder: all-MiniLM-L6-v2 (states [B, 32, 384], pooled [B, 384]), frozen.
    config.text_encoder = ml_collections.ConfigDict(dict(kind="minilm", max_length=32))

    # VQ tokenizer (diffusers VQModel fields): stride 4, 64 codes.
    config.vq = ml_collections.ConfigDict(
        dict(
            block_out_channels=(16, 32, 32),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=8,
            num_vq_embeddings=64,
            mid_block_add_attention=False,
        )
    )

    config.model = common.transformer(
        num_layers=1,
        num_single_layers=1,
        num_attention_heads=2,
        attention_head_dim=16,
        joint_attention_dim=384,
        pooled_projection_dim=384,
        axes_dims_rope=(4, 6, 6),
        vocab_size=65,
        codebook_size=64,
        downsample=False,
        upsample=False,
        connector_type="linear",
        text_encoder_architecture="MiniLM",
        timestep_convention="mask_ratio",
    )

    config.pipeline = ml_collections.ConfigDict(
        dict(
            resolution=32,
            steps=8,
            guidance=3.0,
            reference_strength=1.0,
            capture_blocks=(1,),
            hold_threshold=0.3,
            schedule="cosine",
            smoothing="adaptive",
            temperature=(2.0, 0.0),
            score_rescale="minmax",
            sample_temperature=1.0,
            aesthetic_score=6.0,
            paste_back=False,
        )
    )

    config.vq_checkpoint = ""  # a diffusers-layout VQ folder; empty: random VQ from `vq` and `seed`
    config.data = ml_collections.ConfigDict(
        dict(
            source="synthetic",  # synthetic | shards | parquet
            path="",
            synthetic_seed=1,
            synthetic_num=512,
            random_crop=True,
            use_tokens=False,  # shards made by launch.tokenize_shards: skip the VQ encode
            worker_count=0,
            # Relative sampling weight per category name (absent: 1); empty samples as stored.
            category_weights=ml_collections.ConfigDict(),
            # "synthetic": each read rewords the stored instruction with the synthetic world's
            # training phrasings (data_pipelines.synthetic.phrasings.rephrase); "": as stored.
            rephrase="",
        )
    )
    config.train = common.train()
    config.init_from = ""  # pretrained transformer: a bundle or an official folder
    # LoRA (rank > 0): only adapters on the `targets` kernels (regexes on parameter paths) train.
    config.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=DEFAULT_TARGETS))
    config.optim = common.optim(
        learning_rate=2e-3, warmup_steps=4, decay="cosine", end_lr_ratio=0.1
    )
    config.mesh = common.mesh()
    return config
