"""Edit-focused training: changed-token loss weights, changed-first masking, attention
supervision, codebook-informed token tables, and the held-out probe."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from editmgt_jax.training.losses import attention_supervision_loss, masked_token_loss, pool_cells
from editmgt_jax.training.masking import mask_tokens
from editmgt_jax.training.probe import summarize_probe
from editmgt_jax.training.token_init import codebook_informed_tables


def test_changed_tokens_weigh_more_in_the_loss():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 3, 3, 5)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 5, (2, 3, 3)))
    mask = jnp.asarray(rng.random((2, 3, 3)) < 0.7)
    changed = jnp.asarray(rng.random((2, 3, 3)) < 0.4)
    loss, metrics = masked_token_loss(logits, targets, mask, changed, changed_weight=4.0)
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    w = np.asarray(mask) * np.where(np.asarray(changed), 4.0, 1.0)
    np.testing.assert_allclose(loss, (ce * w).sum() / w.sum(), rtol=1e-6)
    correct = np.argmax(np.asarray(logits), -1) == np.asarray(targets)
    both = np.asarray(mask) & np.asarray(changed)
    np.testing.assert_allclose(metrics["changed_accuracy"], correct[both].mean(), rtol=1e-6)
    plain, _ = masked_token_loss(logits, targets, mask)
    same, _ = masked_token_loss(logits, targets, mask, changed, changed_weight=1.0)
    np.testing.assert_allclose(plain, same, rtol=1e-6)


def test_changed_first_masking_masks_every_changed_token_before_any_other():
    rng = np.random.default_rng(1)
    tokens = jnp.zeros((64, 4, 4), jnp.int32)
    priority = jnp.asarray(rng.random((64, 4, 4)) < 0.3)
    masked, mask, ratio = mask_tokens(
        jax.random.key(0), tokens, 99, 0.0, priority=priority, priority_rate=1.0
    )
    mask, priority = np.asarray(mask), np.asarray(priority)
    count = mask.reshape(64, -1).sum(-1)
    np.testing.assert_array_equal(count, np.clip(np.round(np.asarray(ratio) * 16), 1, 16))
    for m, p, c in zip(mask.reshape(64, -1), priority.reshape(64, -1), count, strict=True):
        if c >= p.sum():
            assert m[p].all()  # every priority token masked first
        else:
            assert not m[~p].any()  # no other token before them
    # rate 0: plain random masking, priority tokens not favoured
    _, plain, _ = mask_tokens(jax.random.key(0), tokens, 99, 0.0, priority=jnp.asarray(priority))
    _, reference, _ = mask_tokens(jax.random.key(0), tokens, 99, 0.0)
    np.testing.assert_array_equal(plain, reference)


def test_attention_supervision_is_the_kl_to_the_edit_map_over_local_edits():
    scores = jnp.asarray([[0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0], [0.5, 0.1, 0.1, 0.3]])
    cells = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], bool)
    loss, metrics = attention_supervision_loss(scores, cells, max_fraction=0.5)
    p = np.array([0.1, 0.2]) / 1.0
    expected = np.sum(0.5 * (np.log(0.5) - np.log(p)))  # only sample 0 counts
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["attention_supervised"], 1 / 3, rtol=1e-6)
    # the loss is smallest when attention sits exactly on the edit
    perfect, _ = attention_supervision_loss(jnp.asarray([[1.0, 1.0, 0.0, 0.0]]), cells[:1])
    assert float(perfect) < 1e-6 < float(loss)
    grid = jnp.zeros((1, 4, 4), bool).at[0, 3, 0].set(True)
    np.testing.assert_array_equal(pool_cells(grid, 2)[0], [[False, False], [True, False]])


def test_token_tables_from_a_codebook_are_content_aware():
    rng = np.random.default_rng(2)
    base = rng.random((3, 12)).astype(np.float32)
    codebook = np.concatenate([base, base + 0.01 * rng.random((3, 12))]).astype(np.float32)
    params = {
        "embed": {"embeddings": {"embedding": np.full((7, 16), 5.0, np.float32)}},
        "mlm_layer": {"conv2": {"kernel": np.zeros((16, 6), np.float32)}, "conv1": {"kernel": 1}},
    }
    out = codebook_informed_tables(params, codebook, jax.random.key(0))
    table = np.asarray(out["embed"]["embeddings"]["embedding"])
    assert (table[6] == 5.0).all()  # the mask token keeps its embedding
    np.testing.assert_allclose(table[:6].std(), 1.0, rtol=0.05)
    near = np.linalg.norm(table[0] - table[3])
    far = np.linalg.norm(table[0] - table[1])
    assert near < 0.2 * far  # codes with alike patches start alike
    kernel = np.asarray(out["mlm_layer"]["conv2"]["kernel"])
    np.testing.assert_allclose(kernel.std(), 1 / 4, rtol=0.05)
    assert out["mlm_layer"]["conv1"] == {"kernel": 1}  # other params untouched
    with pytest.raises(ValueError, match="codebook has 5 codes"):
        codebook_informed_tables(params, codebook[:5], jax.random.key(0))


def test_probe_summary_means_per_category_without_nans():
    out = summarize_probe(
        ["add", "add", "style"], {"changed_acc_full": np.array([0.5, 1.0, np.nan])}
    )
    assert out == {"probe/changed_acc_full/add": 0.75, "probe/changed_acc_full": 0.75}


def test_focused_training_logs_the_probe_and_exports_the_latest_checkpoint(tmp_path):
    """launch.train with every edit-focused option and the held-out probe on, then
    `--export_to`: the exported bundle is the run's own final bundle (same EMA weights)."""
    import json
    import os
    import subprocess
    import sys

    from safetensors.numpy import load_file

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    base = [sys.executable, "-m", "launch.train", "--config", "configs/smoke.py"]
    base += ["--workdir", str(tmp_path / "run")]
    focus = [
        "--config.train.steps=4", "--config.train.log_every=2", "--config.train.probe_every=4",
        "--config.train.probe_count=7", "--config.train.changed_loss_weight=4",
        "--config.train.changed_mask_rate=0.5", "--config.train.attention_loss_weight=1",
        "--config.train.attention_loss_blocks=(1,)", "--config.train.init_tables_from_codebook=True",
    ]  # fmt: skip
    subprocess.run(base + focus, cwd=repo, check=True, capture_output=True, timeout=900)
    lines = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    train_lines = [x for x in lines if "loss" in x]
    assert {"changed_accuracy", "attention_loss", "token_loss"} <= set(train_lines[-1])
    [probe] = [x for x in lines if "probe/changed_acc_full" in x]
    assert probe["step"] == 4 and 0 <= probe["probe/attention_auroc"] <= 1
    assert {k.split("/")[-1] for k in probe if k.startswith("probe/changed_acc_full/")} == {
        "add", "remove", "replace", "color", "background change", "motion change", "style"
    }  # fmt: skip
    exported = tmp_path / "exported"
    run = subprocess.run(
        base + focus + [f"--export_to={exported}"], cwd=repo, capture_output=True, text=True,
        timeout=900, check=True,
    )  # fmt: skip
    assert json.loads(run.stdout.strip().splitlines()[-1])["final"]["step"] == 4
    ours = load_file(str(exported / "transformer.safetensors"))
    theirs = load_file(str(tmp_path / "run" / "bundle" / "transformer.safetensors"))
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert json.load(open(exported / "bundle.json"))["metadata"]["trained_steps"] == 4


def test_per_example_edit_loss_counts_every_edit_the_same():
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(3, 4, 4, 6)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 6, (3, 4, 4)))
    mask = jnp.asarray(rng.random((3, 4, 4)) < 0.8)
    changed = np.zeros((3, 4, 4), bool)
    changed[0] = True  # a global edit
    changed[1, 0, :2] = True  # a local one
    loss, _ = masked_token_loss(logits, targets, mask, jnp.asarray(changed), 2.0, per_example=True)
    ce = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    m = np.asarray(mask)
    plain = ce[m].mean()
    edits = [ce[i][m[i] & changed[i]].mean() for i in (0, 1) if (m[i] & changed[i]).any()]
    np.testing.assert_allclose(loss, plain + 2.0 * np.mean(edits), rtol=1e-5)


def test_update_pipeline_sets_known_fields_and_names_unknown_ones(smoke_bundle, tmp_path):
    import shutil

    from editmgt_jax.checkpoint.bundle import load_bundle, update_pipeline

    path = str(tmp_path / "bundle")
    shutil.copytree(smoke_bundle, path)
    update_pipeline(path, hold_threshold=0.25, sample_temperature=0.0)
    pipeline = load_bundle(path).pipeline
    assert pipeline["hold_threshold"] == 0.25 and pipeline["sample_temperature"] == 0.0
    with pytest.raises(ValueError, match="no_such_field"):
        update_pipeline(path, no_such_field=1)
