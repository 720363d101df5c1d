"""Shared fixtures: the official_tiny checkpoint and its recorded inputs/outputs; a JAX
compilation cache shared by the tests and the launch scripts they start."""

import jax
import numpy as np
import pytest

from editmgt_jax.checkpoint.convert.from_torch import load_transformer
from tests.fixtures_path import fixtures_dir


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for the session (fresh each run): a program compiled once, e.g.
    the smoke train step that several launch.train subprocesses build, is not compiled again."""
    path = str(tmp_path_factory.mktemp("jax_compilation_cache"))
    min_seconds = 1.0  # programs that compile faster are not worth a disk round trip
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
