r"""Train (or fine-tune) the EditMGT transformer with masked-token prediction.

    python -m launch.train --config configs/smoke.py --workdir /tmp/smoke --config.train.steps=24
    # stop it (Ctrl-C / SIGTERM) or let it end; the same command resumes where it stopped, and a
    # larger --config.train.steps continues a finished run.

Multi-host (TPU pod slices and GPU clusters): run the same command on every host. On TPU,
`jax.distributed.initialize()` finds its peers by itself (`--distributed`); elsewhere pass
`--coordinator_address=host0:1234 --num_processes=N --process_id=i`. Each host reads its own slice
of the data; the batch is assembled into global arrays on the mesh (`config.mesh`).

Writes to the workdir: `config.json`, `checkpoints/<step>/` (orbax: train state + data iterator
position), `metrics.jsonl` (one JSON object per logged step), TensorBoard events under `tb/`, and
sample edits of a fixed batch under `samples/`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from data_pipelines.loader import EditLoader, LoaderConfig
from editmgt_jax import paths, sharding
from editmgt_jax.checkpoint.bundle import Bundle, is_bundle, read_manifest, save_bundle
from editmgt_jax.checkpoint.manager import TrainCheckpoints
from editmgt_jax.models.transformer import Transformer, example_inputs
from editmgt_jax.models.transformer_config import TransformerConfig
from editmgt_jax.training.config_from_bundle import resolve_config
from editmgt_jax.training.from_config import (
    lora_section,
    step_options,
    use_ema,
    validate,
    validate_grid,
)
from editmgt_jax.training.lora import merge
from editmgt_jax.training.optimizer import make_optimizer
from editmgt_jax.training.pipeline import TrainingInputs
from editmgt_jax.training.step import StepOptions, jit_train_step, make_train_step
from editmgt_jax.training.train_state import (
    create_sharded_train_state,
    train_state_shapes,
    warm_start,
)
from launch import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the flags (only when run as a script: importing this module defines none, so
    `launch.train.train` can be called from a process that runs other launch scripts' code)."""
    config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints and metrics go.", required=True)
    cli.define_distributed_flags(__name__)  # --distributed, --coordinator_address, ...
    flags.DEFINE_string(
        "export_to",
        None,
        "Write the latest checkpoint's EMA weights as a bundle to this folder and exit without "
        "training (also while another process trains in the same workdir).",
    )


class Preemption:
    """Turns SIGTERM (TPU preemption, `kill`) into a flag checked between steps."""

    def __init__(self):
        self.requested = False
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        del signum, frame
        logging.warning("SIGTERM: saving a checkpoint after this step, then exiting.")
        self.requested = True


def _rephraser(name: str):
    """`data.rephrase` -> the loader's instruction rewording (None: the stored words)."""
    if not name:
        return None
    if name == "synthetic":
        from data_pipelines.synthetic.phrasings import rephrase

        return rephrase
    raise ValueError(f"data.rephrase is {name!r}; expected '' or 'synthetic'")


def make_loader(config: ml_collections.ConfigDict) -> EditLoader:
    data = config.data
    loader_config = LoaderConfig(
        batch_size=config.train.batch_size,
        resolution=config.image_size,
        seed=config.seed,
        num_epochs=None,
        shuffle=True,
        random_crop=data.random_crop,
        worker_count=data.worker_count,
        use_tokens=data.use_tokens,
        category_weights=data.category_weights.to_dict() if data.category_weights else None,
        rephrase=_rephraser(data.get("rephrase", "")),
    )
    if data.use_tokens and data.source == "synthetic":
        raise ValueError(
            "data.use_tokens needs token shards (data.source='shards', made by "
            "launch.tokenize_shards); synthetic data are images"
        )
    if data.source == "synthetic":
        from data_pipelines.synthetic.source import SyntheticSource

        source = SyntheticSource(
            seed=data.synthetic_seed, num=data.synthetic_num, size=config.image_size, split="train"
        )
        return EditLoader(source, loader_config)
    if data.source in ("shards", "parquet"):
        if not data.path:
            raise ValueError(f"data.source={data.source!r} needs data.path")
        return EditLoader(data.path, loader_config, parquet=data.source == "parquet")
    raise ValueError(f"data.source={data.source!r}; expected synthetic, shards or parquet")


class MetricsLog:
    """metrics.jsonl (appended; process 0) and TensorBoard scalars. For a URL workdir the event
    files are written in a local temp folder and uploaded to `<workdir>/tb/` after each flush."""

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        self.path = paths.join(workdir, "metrics.jsonl")
        self.tb_dir = paths.join(workdir, "tb")
        self.tb = self.staging = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            if paths.is_url(workdir):
                self.staging = tempfile.mkdtemp(prefix="editmgt-tb-")
            self.tb = SummaryWriter(self.staging or self.tb_dir)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        paths.append_text(self.path, json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.tb.add_scalar(key, value, record["step"])
        self.tb.flush()
        self._upload()

    def _upload(self) -> None:
        if self.staging is None:
            return
        for name in os.listdir(self.staging):
            paths.upload_file(os.path.join(self.staging, name), paths.join(self.tb_dir, name))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self._upload()
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


def train(
    config: ml_collections.ConfigDict, workdir: str, export_to: str | None = None
) -> dict[str, Any]:
    """Runs (or resumes) training; returns the last logged metrics. With `export_to`, writes the
    latest checkpoint as a bundle there instead and returns {"step", "bundle"}."""
    # Placeholders (configs/editmgt_crispedit.py) filled from init_from; others unchanged.
    config = resolve_config(local_init_from(config))
    mesh = sharding.create_mesh(config.mesh.ici_parallelism, config.mesh.dcn_parallelism)
    validate(config, mesh)
    model_cfg = TransformerConfig.from_dict(config.model)
    model = Transformer(model_cfg)
    paths.makedirs(workdir)  # a folder; nothing for a URL (gs://bucket/run)
    checkpoints = TrainCheckpoints(
        workdir, config.train.keep_checkpoints, read_only=export_to is not None
    )
    checkpoints.check_config(config)
    loader = make_loader(config)  # before any compute: a data path without records fails here

    inputs = TrainingInputs.create(config)  # VQ tokenizer + frozen text encoder
    tx = make_optimizer(config.optim, config.train.steps)
    grid = validate_grid(config, inputs.vq_stride, model_cfg.token_stride)
    sample = example_inputs(model_cfg, batch=1, grid=(grid, grid), text_len=inputs.text_len)
    lora = lora_section(config)
    state_args = (model, tx, jax.random.key(config.seed), sample, mesh, lora, use_ema(config))
    start = checkpoints.latest_step()
    if start is None:
        state, state_shardings = create_sharded_train_state(*state_args)
        if config.init_from:
            partial = bool(config.get("init_partial", False))
            state = warm_start(config.init_from, model_cfg, state, state_shardings, partial)
    else:  # restored into its shapes: no weights to initialise first
        abstract, state_shardings = train_state_shapes(*state_args)
        state, data_state = checkpoints.restore(start, abstract)
        loader.set_state(data_state)
        tqdm.write(f"Resumed from step {start} in {workdir}", file=sys.stderr)
    if export_to is not None:
        checkpoints.close()
        loader.close()
        if start is None:
            raise FileNotFoundError(f"{workdir} holds no checkpoint to export")
        options = step_options(config, model_cfg, lora)
        bundle = bundle_from_state(config, state, options, inputs, start)
        if jax.process_index() == 0:
            write_bundle(export_to, bundle, config)
        return {"step": start, "bundle": paths.abspath(export_to)}

    if start is None and not config.init_from and config.train.init_tables_from_codebook:
        state = init_tables_from_codebook(state, state_shardings, inputs, config.seed)
    options = step_options(config, model_cfg, lora)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    step_fn = jit_train_step(
        make_train_step(model, options), state_shardings, batch_sharding, replicated
    )
    # The text encoder on the mesh: cached per instruction on the host (the embedded model's
    # small world) or encoded per batch with its weights sharded (the released model's recipe).
    conditioning = inputs.conditioning(
        mesh, batch_sharding, cache=config.text_encoder.get("cache", True)
    )
    uncond = conditioning.uncond()
    base_key = jax.random.key(config.seed + 1)
    log = MetricsLog(workdir)
    samples = probe = None
    if config.train.sample_every > 0 and jax.process_index() == 0:
        samples = SampleEdits(config, inputs, workdir, config.train.sample_count)
    if config.train.probe_every > 0 and jax.process_index() == 0:
        probe = make_probe(config, model, model_cfg, inputs, grid)
    preemption = Preemption()
    step = saved_step = int(state.step)
    last: dict[str, Any] = {}
    bar = tqdm(
        total=config.train.steps, initial=step, desc="train", disable=jax.process_index() != 0
    )
    timer, examples = time.perf_counter(), 0
    try:
        with sharding.activation_sharding(mesh):
            while step < config.train.steps:
                batch = inputs.device_batch(next(loader), conditioning)
                state, metrics = step_fn(state, batch, uncond[0], uncond[1], base_key)
                step = int(state.step)
                examples += config.train.batch_size
                if int(state.consecutive_skips) >= config.train.max_consecutive_nonfinite:
                    raise FloatingPointError(
                        f"{int(state.consecutive_skips)} steps in a row had a non-finite loss or "
                        f"gradient (at step {step}); stopping. The last good checkpoint "
                        f"(step {checkpoints.latest_step()}) is intact."
                    )
                if int(metrics["nonfinite"]):
                    continue
                bar.update(1)
                if step % config.train.log_every == 0 or step == config.train.steps:
                    elapsed = time.perf_counter() - timer
                    last = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    last.update(
                        step=step,
                        examples_per_s=examples / elapsed,
                        tokens_per_s=examples * grid * grid / elapsed,
                        skipped_steps=int(state.skipped_steps),
                    )
                    log.write(last)
                    bar.set_postfix(
                        loss=f"{last['loss']:.4f}", ex_s=f"{last['examples_per_s']:.1f}"
                    )
                    timer, examples = time.perf_counter(), 0
                if samples is not None and step % config.train.sample_every == 0:
                    samples(step, state, options)
                if probe is not None and step % config.train.probe_every == 0:
                    log.write(dict(probe(evaluated_params(state)), step=step))
                if step % config.train.checkpoint_every == 0 or step == config.train.steps:
                    checkpoints.save(step, state, loader.get_state())
                    saved_step = step
                stop_after = config.train.stop_after_steps
                if preemption.requested or (stop_after > 0 and step >= stop_after):
                    # As on preemption: save where we are; the same command resumes from here.
                    if saved_step != step:
                        checkpoints.save(step, state, loader.get_state(), force=True)
                    break
    finally:
        checkpoints.close()
        log.close()
        bar.close()
        loader.close()
    if config.train.export_bundle and step >= config.train.steps:
        path = export_bundle(config, workdir, state, options, inputs, step)
        if jax.process_index() == 0:
            tqdm.write(f"Wrote the trained bundle to {path}", file=sys.stderr)
    return last


def init_tables_from_codebook(state, shardings, inputs: TrainingInputs, seed: int):
    """A fresh state whose token embeddings and output weights start from the VQ codebook
    (`editmgt_jax.training.token_init`); params and EMA alike."""
    from editmgt_jax.training.token_init import codebook_informed_tables

    codebook = jax.device_get(inputs.vq_params)["codebook"]
    if isinstance(codebook, dict):  # VQModel: the latent codebook
        codebook = codebook["embedding"]
    params = codebook_informed_tables(
        jax.device_get(state.params), np.asarray(codebook), jax.random.key(seed + 2)
    )
    params = jax.device_put(params, shardings.params)
    ema = None if state.ema_params is None else jax.tree.map(lambda x: x.copy(), params)
    return state.replace(params=params, ema_params=ema)


def make_probe(config, model, model_cfg: TransformerConfig, inputs: TrainingInputs, grid: int):
    """The held-out probe (`editmgt_jax.training.probe`) on `train.probe_count` examples of the
    synthetic world's held-out split (world seed `train.probe_seed`)."""
    from data_pipelines.synthetic import make_example
    from editmgt_jax.training.probe import HeldoutProbe

    examples = [
        make_example(config.train.probe_seed, i, config.image_size, "heldout")
        for i in range(config.train.probe_count)
    ]
    blocks = config.train.attention_loss_blocks or config.pipeline.capture_blocks
    return HeldoutProbe.from_examples(model, model_cfg, inputs, examples, blocks)


class SampleEdits:
    """Edits a fixed batch of held-out synthetic examples with the current EMA weights and writes
    `samples/step_<N>.png` (rows: source | target | edit | heatmap). Process 0 only; one sampler
    compile for the whole run (the weights are arguments of the compiled loop)."""

    def __init__(self, config, inputs, workdir: str, count: int):
        from data_pipelines.synthetic import make_example

        self.dir = paths.join(workdir, "samples")
        size = config.image_size
        self.examples = [
            make_example(config.seed, i, size=size, split="heldout") for i in range(count)
        ]
        self.config, self.inputs, self.editor = config, inputs, None

    def __call__(self, step: int, state, options: StepOptions) -> None:
        from PIL import Image

        from editmgt_jax.editor import Editor

        bundle = bundle_from_state(self.config, state, options, self.inputs, step)
        if self.editor is None:
            self.editor = Editor(bundle, text_encoder=self.inputs.text_encoder)
        else:
            self.editor.params = jax.device_put(bundle.transformer_params)
        results = self.editor.edit(
            [e.source for e in self.examples], [e.instruction for e in self.examples], seeds=0
        )
        rows = [
            np.concatenate([e.source, e.target, r.image, r.heatmap_image()], axis=1)
            for e, r in zip(self.examples, results, strict=True)
        ]
        png = io.BytesIO()
        Image.fromarray(np.concatenate(rows, axis=0)).save(png, format="PNG")
        paths.write_atomic(paths.join(self.dir, f"step_{step:07d}.png"), png.getvalue())


def export_bundle(config, workdir: str, state, options: StepOptions, inputs, step: int) -> str:
    """EMA weights (LoRA merged) + the VQ tokenizer -> `<workdir>/bundle` for launch.edit."""
    bundle = bundle_from_state(config, state, options, inputs, step)
    path = paths.join(workdir, "bundle")
    if jax.process_index() == 0:
        write_bundle(path, bundle, config)
    return path


def evaluated_params(state):
    """The weights a run is judged by: the EMA's, or the raw ones when it keeps no EMA."""
    return state.params if state.ema_params is None else state.ema_params


# What a bundle converted from a released folder carries beyond its weights, kept in a bundle
# trained from it: the tokenizers and official extras (folders), and the record of the source
# layout that `launch.export --to_torch` writes back (metadata).
CARRIED_FOLDERS = ("tokenizers", "official")
CARRIED_METADATA = ("converted_from", "source_folder", "sources", "tokenizer_sources", "dtype")


def write_bundle(path: str, bundle: Bundle, config) -> str:
    """Saves `bundle` at `path` (atomically) and, when the run started from a converted bundle,
    adds that bundle's tokenizer and official folders (as `launch.convert` wrote them)."""
    from editmgt_jax.checkpoint.folder import Converted, save_converted

    init = config.get("init_from", "")
    files = {}  # bundle-relative path -> the init bundle's file
    for name in CARRIED_FOLDERS if is_bundle(init) else ():
        for folder, _, names in os.walk(os.path.join(init, name)):
            for file in names:
                source = os.path.join(folder, file)
                files[os.path.relpath(source, init)] = source
    if not files:
        return save_bundle(path, bundle, overwrite=True)
    return save_converted(Converted(bundle=bundle, files=files, warnings=[]), path, overwrite=True)


def local_init_from(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with a URL `init_from` (gs://.../bundle) replaced by its cached local copy
    (`paths.local_copy`); other configs unchanged."""
    init = config.get("init_from", "")
    if not init or not paths.is_url(init):
        return config
    config = ml_collections.ConfigDict(config.to_dict())
    config.init_from = paths.local_copy(init)
    return config


def bundle_from_state(config, state, options: StepOptions, inputs, step: int) -> Bundle:
    """An in-memory bundle of the EMA weights (the raw ones without EMA; LoRA merged), the VQ and
    the text encoder (spec, and the weights when they came from the init_from bundle)."""
    params = jax.device_get(evaluated_params(state))
    if state.frozen_params is not None:
        params = merge(jax.device_get(state.frozen_params), params, options.lora_scale)
    text_encoder, text_params, carried = dict(config.text_encoder), None, {}
    init = config.get("init_from", "")
    if is_bundle(init):
        manifest = read_manifest(init)
        carried = {
            k: manifest["metadata"][k] for k in CARRIED_METADATA if k in manifest["metadata"]
        }
        if manifest["text_encoder"].get("params") == "bundle" and not text_encoder.get("folder"):
            text_encoder = manifest["text_encoder"]  # the converted encoders, as they were
            text_params = jax.device_get(inputs.text_encoder.frozen_params)
    return Bundle(
        transformer_config=TransformerConfig.from_dict(config.model),
        transformer_params=params,
        vq_config=inputs.vq_model.config.to_diffusers(),
        vq_params=jax.device_get(inputs.vq_params),
        text_encoder=text_encoder,
        pipeline={k: list(v) if isinstance(v, tuple) else v for k, v in config.pipeline.items()},
        metadata=dict(
            carried,
            random_init=False,
            trained_steps=step,
            seed=config.seed,
            config=json.loads(config.to_json_best_effort()),
            ema_decay=options.ema_decay,
            **({"init_from": init} if init else {}),
            **({"domain": config.domain.to_dict()} if "domain" in config else {}),
        ),
        text_params=text_params,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if logging.get_verbosity() == logging.INFO and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
    try:  # a config that contradicts its checkpoint: one clear line, no traceback
        config = resolve_config(local_init_from(FLAGS.config))
    except (ValueError, FileNotFoundError) as e:
        raise app.UsageError(str(e)) from e
    cli.initialize_distributed()
    last = train(config, FLAGS.workdir, export_to=FLAGS.export_to)
    if jax.process_index() == 0:
        print(json.dumps({"final": last}))


def run():
    """The console script (pyproject.toml): the same absl main as `python -m`."""
    define_flags()
    cli.run_main(main)


if __name__ == "__main__":
    run()
