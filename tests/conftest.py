"""Shared fixtures: the official_tiny checkpoint and its recorded inputs/outputs; a JAX
compilation cache shared by the tests, the launch scripts they start and (under pytest-xdist) all
workers; the longest test files collected first, so that `-n 2 --dist loadfile` keeps both
workers busy to the end."""

import os

# LLVM's lowest optimisation level for XLA:CPU: the tests' programs are small and run briefly, so
# compiling them is most of their cost (the accelerator smoke run: 73 s -> 58 s); the results are
# the same programs' (the parity tests hold their tolerances). Set before any backend starts;
# subprocesses inherit it unless they set XLA_FLAGS themselves.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

# The tests run on the CPU. Where the TPU compiler is installed (the `tpu` extra, for
# launch.aot), JAX would otherwise try to start a TPU backend in every process; subprocesses
# inherit this (launch.aot sets up its compile-only TPU client itself).
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import pytest

from editmgt_jax.checkpoint.convert.from_torch import load_transformer
from tests.fixtures_path import fixtures_dir

# The files that take longest (about 10-120 s each under `-n 2`, `--durations`), longest first.
# xdist's loadfile scheduling hands out files in collection order; starting with these leaves the
# many short files to even out the two workers at the end.
LONGEST_FILES = (
    "test_crispedit_recipe.py",
    "test_train_launch.py",
    "test_aot.py",
    "test_gcs_paths.py",
    "test_accelerator_benchmark.py",
    "test_edit_focus.py",
    "test_training_step.py",
    "test_sharding.py",
    "test_vq_train.py",
    "test_benchmark_e2e.py",
    "test_transformer_parity.py",
    "test_default_model.py",
    "test_vq.py",
    "test_serve_browser.py",
    "test_notebook.py",
    "test_vq_parity.py",
    "test_convert_folder.py",
    "test_serve_api.py",
    "test_editor.py",
    "test_transformer.py",
    "test_editor_downsample.py",
    "test_serving_units.py",
    "test_eval.py",
    "test_source_refiner.py",
    "test_grow_codebook.py",
    "test_sampling_transformer_fn.py",
    "test_docstrings.py",
    "test_attention.py",
    "test_data_loader.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = os.path.basename(str(item.path))
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: tests keep their order within a file


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the session (fresh each run): a program compiled once, e.g.
    the smoke train step that several launch.train subprocesses build, is not compiled again.
    xdist workers share it (their base folders sit in one folder per run)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "jax_compilation_cache"
        shared.mkdir(exist_ok=True)
        path = str(shared)
    else:
        path = str(tmp_path_factory.mktemp("jax_compilation_cache"))
    # Programs that compile faster are not worth a disk round trip. (Keeping every program saves
    # ~3 s per restarted launch script, but the whole suite measured no faster: 754 s against
    # 716 s in .ci/run, within the run-to-run spread.)
    min_seconds = 1.0
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_seconds)
    with pytest.MonkeyPatch.context() as env:  # the subprocesses read the same settings
        env.setenv("JAX_COMPILATION_CACHE_DIR", path)
        env.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(min_seconds))
        yield path


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """(config, params) converted from the official fixture."""
    return load_transformer(fixtures_dir("official_tiny"))


def _inputs(data):
    return dict(
        tokens=data["hidden_states"].astype(np.int32),
        text_states=data["encoder_hidden_states"],
        pooled=data["pooled_projections"],
        micro_conds=data["micro_conds"],
        timestep=data["timestep"],
    )


@pytest.fixture(scope="session")
def tiny_io():
    """(inputs with source tokens, recorded arrays) of io.npz."""
    data = dict(np.load(fixtures_dir("official_tiny", "io.npz")))
    inputs = _inputs(data)
    inputs["source_tokens"] = data["reference_image_hidden_states"].astype(np.int32)
    return inputs, data


@pytest.fixture(scope="session")
def tiny_io_noref():
    data = dict(np.load(fixtures_dir("official_tiny", "io_noref.npz")))
    return _inputs(data), data


def nchw_to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.fixture(scope="session")
def smoke_bundle(tmp_path_factory):
    """Path of a randomly initialised configs/smoke.py bundle (32 px, MiniLM)."""
    from configs import smoke
    from editmgt_jax.checkpoint.bundle import save_bundle
    from launch import init_checkpoint

    path = str(tmp_path_factory.mktemp("smoke_bundle") / "bundle")
    return save_bundle(path, init_checkpoint.random_bundle(smoke.get_config()))
