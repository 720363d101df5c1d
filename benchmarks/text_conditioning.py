r"""Text conditioning for the released model's training: encode per batch, or precompute?

    python -m benchmarks.text_conditioning            # real-size arithmetic + miniature profile
    python -m benchmarks.text_conditioning --noprofile

Prints JSON lines:
1. `kind=storage`: bytes a CrispEdit row would carry with precomputed CLIP + Gemma 2 states
   (states [256, 2304] + pooled [1024], bfloat16) against its two token grids at 1024 px
   (64 x 64 int16 each, as `launch.tokenize_shards` writes them), and for all 2,286,540 rows.
2. `kind=flops`: model FLOPs of encoding one row (Gemma 2 2B over 256 tokens + the CLIP tower
   over 77) against one row of the 1B train step at 1024 px (6 N S + attention, remat adds a
   forward: 8 N S), i.e. the step-time share of encoding per batch on a chip at the same MFU.
3. `kind=profile` (unless --noprofile): the miniature release (the parity fixtures laid out as the
   released folder, converted in a temporary folder) on this CPU: seconds per batch of the text
   encode on the mesh against the train step, median of `--repeats`, after compiling.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time

from absl import app, flags

CRISPEDIT_ROWS = 2_286_540
GEMMA_TOKENS, CLIP_TOKENS = 256, 77
GEMMA_HIDDEN, POOLED = 2304, 1024
BF16, INT16 = 2, 2

_PROFILE = flags.DEFINE_bool("profile", True, "Time the miniature release on this machine.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed calls per measurement.")
_BATCH = flags.DEFINE_integer("batch", 8, "Miniature batch.")


def storage() -> dict:
    states = (GEMMA_TOKENS * GEMMA_HIDDEN + POOLED) * BF16
    tokens = 2 * 64 * 64 * INT16
    return dict(
        kind="storage",
        text_bytes_per_row=states,
        token_bytes_per_row=tokens,
        ratio=round(states / tokens, 1),
        crispedit_text_tb=round(states * CRISPEDIT_ROWS / 1e12, 2),
        crispedit_token_gb=round(tokens * CRISPEDIT_ROWS / 1e9, 1),
    )


def flops() -> dict:
    import jax

    from benchmarks.accelerator import flops_per_train_step
    from editmgt_jax.models.text.gemma2 import Gemma2Config
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.models.transformer_stats import count_params
    from editmgt_jax.training.memory import released_text_params

    del jax
    counts = released_text_params()
    gemma = Gemma2Config()
    gemma_dense = counts["gemma"] - gemma.vocab_size * gemma.hidden_size  # lookups are free
    attention = 4 * GEMMA_TOKENS**2 * gemma.num_attention_heads * gemma.head_dim
    gemma_flops = 2 * gemma_dense * GEMMA_TOKENS + attention * gemma.num_hidden_layers
    clip_flops = 2 * counts["clip"] * CLIP_TOKENS
    cfg = TransformerConfig()
    n = count_params(cfg)
    step = flops_per_train_step(cfg, n, grid=64, text_len=GEMMA_TOKENS, batch=1)
    positions = 2 * (64 // cfg.token_stride) ** 2 + GEMMA_TOKENS
    step_remat = step + 2 * n * positions  # full remat recomputes the forward
    encode = gemma_flops + clip_flops
    return dict(
        kind="flops",
        encode_flops_per_row=encode,
        train_step_flops_per_row=step,
        train_step_remat_flops_per_row=step_remat,
        encode_share=round(encode / (encode + step), 4),
        encode_share_with_remat=round(encode / (encode + step_remat), 4),
    )


def profile(batch: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from configs import editmgt_crispedit
    from editmgt_jax import sharding
    from editmgt_jax.checkpoint import folder
    from editmgt_jax.models.transformer import Transformer, example_inputs
    from editmgt_jax.models.transformer_config import TransformerConfig
    from editmgt_jax.training.config_from_bundle import resolve_config
    from editmgt_jax.training.from_config import step_options
    from editmgt_jax.training.optimizer import make_optimizer
    from editmgt_jax.training.pipeline import TrainingInputs
    from editmgt_jax.training.step import jit_train_step, make_train_step
    from editmgt_jax.training.train_state import create_sharded_train_state
    from tests.released_layout import WORDS, released_folder

    def timed(fn) -> float:
        jax.block_until_ready(fn())  # compile
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = f"{tmp}/ckpt"
        folder.save_converted(folder.convert_folder(released_folder(f"{tmp}/EditMGT")), ckpt)
        config = editmgt_crispedit.get_config()
        config.init_from, config.image_size = ckpt, 64
        config.model.dtype = config.text_encoder.dtype = "float32"
        config = resolve_config(config)
        mesh = sharding.create_mesh(config.mesh.ici_parallelism, config.mesh.dcn_parallelism)
        inputs = TrainingInputs.create(config)
        spec = jax.sharding.PartitionSpec(("data", "fsdp"))
        batch_sharding = jax.sharding.NamedSharding(mesh, spec)
        conditioning = inputs.conditioning(mesh, batch_sharding, cache=False)
        texts = [" ".join(WORDS[i % 4 : i % 4 + 4]) for i in range(batch)]
        encode_s = timed(lambda: conditioning.global_states(texts))
        cfg = TransformerConfig.from_dict(config.model)
        model = Transformer(cfg)
        tx = make_optimizer(config.optim, 100)
        sample = example_inputs(cfg, batch=1, grid=(4, 4), text_len=inputs.text_len)
        state, shardings = create_sharded_train_state(
            model, tx, jax.random.key(0), sample, mesh, use_ema=False
        )
        rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        step = jit_train_step(
            make_train_step(model, step_options(config, cfg, None)), shardings, batch_sharding, rep
        )
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, cfg.codebook_size, (batch, 4, 4)).astype(np.int32)
        states, pooled = conditioning.global_states(texts)
        data = dict(
            target_tokens=tokens,
            source_tokens=tokens,
            text_states=states,
            pooled=pooled,
            micro_conds=np.tile(np.float32([64, 64, 0, 0, 6]), (batch, 1)),
        )
        uncond = conditioning.uncond()
        holder = {"state": state}

        def one_step():
            holder["state"], metrics = step(holder["state"], data, *uncond, jax.random.key(1))
            return metrics["loss"]

        step_s = timed(one_step)
    return dict(
        kind="profile",
        backend=jax.default_backend(),
        batch=batch,
        encode_s=round(encode_s, 5),
        train_step_s=round(step_s, 5),
        encode_share=round(encode_s / (encode_s + step_s), 4),
        note="miniature release (fixtures): 2+2 blocks, Gemma 2 hidden 48, 64 px",
    )


def main(argv):
    del argv
    print(json.dumps(storage()))
    print(json.dumps(flops()))
    if _PROFILE.value:
        print(json.dumps(profile(_BATCH.value, _REPEATS.value)))


if __name__ == "__main__":
    app.run(main)
