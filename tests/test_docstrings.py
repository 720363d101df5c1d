"""The examples in public docstrings run."""

import doctest
import importlib

import pytest

MODULES = [
    "editmgt_jax.atomic",
    "editmgt_jax.checkpoint.convert.table",
    "editmgt_jax.evaluation.benchmark_metrics",
    "editmgt_jax.nodeps_packages",
    "editmgt_jax.models.transformer",
    "editmgt_jax.training.config_from_bundle",
    "editmgt_jax.training.lora",
    "editmgt_jax.training.memory",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
