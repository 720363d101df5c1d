r"""Fine-tune the released EditMGT on CrispEdit: the paper's recipe (official train/train.sh).

    # 1. the released folder -> a bundle (transformer, VQ, CLIP + Gemma 2, tokenizers)
    python -m launch.convert --from_torch /models/EditMGT --out /ckpt/editmgt
    # 2. CrispEdit parquet -> edit-record shards -> VQ token shards at 1024 px (the bundle's VQ)
    python -m launch.prepare_data --from_parquet /data/CrispEdit-2M --out /data/crispedit_ar \
        --num_shards 1024
    python -m launch.tokenize_shards --shards /data/crispedit_ar --vq /ckpt/editmgt \
        --out /data/crispedit_tok --resolution 1024
    # 3. train (every host of a pod runs the same command; see docs/training.md)
    python -m launch.train --config configs/editmgt_crispedit.py --workdir /runs/editmgt \
        --config.init_from=/ckpt/editmgt --config.data.path=/data/crispedit_tok
    # LoRA (r 32, alpha 128 on to_q / to_k / to_v, as the official README):
    python -m launch.train --config configs/editmgt_crispedit.py:lora ...

The recipe, from train.sh / train.py: 1024 px; CLIP + Gemma 2 text conditioning, both frozen and
encoded per batch; 4 per GPU x 8 GPUs x gradient accumulation 8 = 256 edits an update; AdamW
(betas 0.9 / 0.999, eps 1e-8, weight decay 0.01), lr 1e-4 constant, no warm-up, gradient norm
clip 10; a checkpoint every 200 updates; no EMA (train.sh does not pass --use_ema: the release
is the raw weights, so `train.ema_decay = 0` keeps none and saves a copy of the weights); no
condition dropout (--cond_dropout_prob defaults to 0 and train.sh does not set it; set
`train.cond_dropout` > 0 to train the unconditional branch too: it uses the encoder's own empty
instruction states, as the official code does). The official run used 8-bit AdamW from
bitsandbytes; optax has none, so `optim.moments` picks a memory-saving state of ours (the
comparison is in BENCHMARKS.md).

From Meissonic, as the official run started (its transformer loaded into the EditMGT structure
where path and shape fit; the new text connector starts fresh):

    python -m launch.train --config configs/editmgt_crispedit.py --workdir /runs/editmgt \
        --config.init_from=/models/Meissonic/transformer --config.init_partial=True \
        --config.vq_checkpoint=/models/Meissonic/vqvae --config.text_encoder.folder=/models/text \
        --config.data.path=/data/crispedit_tok

(/models/text holding Meissonic's `text_encoder/` (CLIP) and Gemma 2 2B as `llm_encoder/`, with
their tokenizers.)

The architecture comes from `init_from`: the transformer's sizes, the VQ and the text encoder are
the bundle's (`editmgt_jax.training.config_from_bundle`), so the same command trains the
miniature converted folder of the tests and the real release. A `--config.model.<field>` that
contradicts the bundle is an error naming both values. Without `init_from` the released sizes
stand in (what `launch.inspect` and `launch.aot` compile).

Batch: `train.batch_size` edits go through the model per step; `optim.accumulation_steps` steps
make one update. The default (32 x 8 = 256) suits 8 to 32 chips; with 64 chips or more use
`--config.train.batch_size=256 --config.optim.accumulation_steps=1` (checkpoint_every and steps
count steps, so divide them by 8 too). The mesh shards the weights, the optimizer state and
Gemma 2 over every chip (fsdp); `python -m launch.aot --config configs/editmgt_crispedit.py
--topology v5e:4x4 --plan` searches for a faster one that fits.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common
from editmgt_jax.training.config_from_bundle import ARCHITECTURE_FIELDS

# The official LoRA (peft `LoraConfig(target_modules=["to_q", "to_k", "to_v"])`): the query, key
# and value projections of every block's attention (image stream and single-stream blocks).
OFFICIAL_LORA_TARGETS = (r"attn/to_(q|k|v)/kernel$",)
GLOBAL_BATCH = 256  # edits per optimizer update
ACCUMULATION = 8  # steps per update (train.sh: 8)
UPDATES_PER_CHECKPOINT = 200  # train.sh --checkpointing_steps
OFFICIAL_MAX_UPDATES = 500_000  # train.sh --max_train_steps


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "lora"):
        raise ValueError(f"Unknown config argument {arg!r}; expected nothing or 'lora'")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.image_size = 1024  # pixels; the released VQ has stride 16: 64 x 64 tokens

    # Architecture fields are placeholders (None): filled from init_from (module docstring).
    placeholders = {
        f: config_dict.placeholder(tuple if f == "axes_dims_rope" else _field_type(f))
        for f in ARCHITECTURE_FIELDS
    }
    config.model = common.transformer(**placeholders)
    # Execution: bf16 matmuls over float32 master weights, layers scanned and rematerialised
    # (the 1B model at 1024 px does not fit a 16 GB chip's activations otherwise).
    config.model.dtype = "bfloat16"
    config.model.scan_layers = True
    config.model.remat_policy = "full"

    # CLIP + Gemma 2 from the init_from bundle, encoded per batch on the mesh (no cache: 2.29M
    # distinct instructions). dtype: their compute dtype; folder: a released folder instead.
    config.text_encoder = ml_collections.ConfigDict(
        dict(kind="clip_gemma2", cache=False, dtype="bfloat16", folder="")
    )
    config.vq = ml_collections.ConfigDict()  # empty: the init_from bundle's VQ
    config.vq_checkpoint = ""
    config.pipeline = ml_collections.ConfigDict()  # empty: the bundle's, at image_size
    config.init_from = ""  # a converted bundle (launch.convert) or an official folder
    # True: load what fits of init_from into the released structure and keep the rest at its
    # initial values, as the official script starts EditMGT from Meissonic (no text connector,
    # CLIP-width text input); the VQ then comes from vq_checkpoint (Meissonic's vqvae/) and
    # CLIP + Gemma 2 from text_encoder.folder (a folder with text_encoder/ and llm_encoder/).
    config.init_partial = False

    config.data = ml_collections.ConfigDict(
        dict(
            source="shards",  # edit-record shards; use_tokens: made by launch.tokenize_shards
            path="",
            synthetic_seed=0,
            synthetic_num=0,
            random_crop=False,  # token shards hold the centred joint crop
            use_tokens=True,
            worker_count=0,
            category_weights=ml_collections.ConfigDict(),
            # "synthetic": each read rewords the stored instruction with the synthetic world's
            # training phrasings (data_pipelines.synthetic.phrasings.rephrase); "": as stored.
            rephrase="",
        )
    )
    config.train = common.train(
        steps=OFFICIAL_MAX_UPDATES * ACCUMULATION,
        batch_size=GLOBAL_BATCH // ACCUMULATION,
        min_mask_ratio=0.0,  # train.py --min_masking_rate default
        cond_dropout=0.0,
        ema_decay=0.0,  # no EMA (see the module docstring)
        log_every=10 * ACCUMULATION,  # train.sh --logging_steps 10
        checkpoint_every=UPDATES_PER_CHECKPOINT * ACCUMULATION,
        keep_checkpoints=3,
        sample_count=0,  # the sample edits and the probe use the synthetic world: off
        probe_count=0,
        probe_seed=0,
    )
    config.lora = ml_collections.ConfigDict(
        dict(rank=32 if arg == "lora" else 0, alpha=128.0, targets=OFFICIAL_LORA_TARGETS)
    )
    config.optim = common.optim(
        learning_rate=1e-4,
        warmup_steps=0,
        decay="constant",
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=0.01,
        grad_clip=10.0,
        accumulation_steps=ACCUMULATION,
        # 8-bit moments in place of bitsandbytes' AdamW8bit: 2.03 bytes a parameter against
        # float32's 8 (the 1B model: 2.05 GB of moments instead of 8.07), loss within 0.06 of
        # float32 AdamW over 300 miniature steps (BENCHMARKS.md, "Optimizer state").
        moments="int8",
    )
    # Every chip in one fsdp group: weights, optimizer state and Gemma 2 split eight ways on a
    # v5e-8, so the 1B step's state takes 2 GB a chip.
    config.mesh = common.mesh(data=1, fsdp=-1, tensor=1)
    config.inspect = common.inspect_section()
    return config


def _field_type(field: str) -> type:
    if field in ("downsample", "upsample"):
        return bool
    if field in ("connector_type", "text_encoder_architecture", "timestep_convention"):
        return str
    return int
