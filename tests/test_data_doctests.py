"""The examples in the data_pipelines docstrings run and hold."""

import doctest
import importlib

import pytest

MODULES = [
    "data_pipelines.schema",
    "data_pipelines.transforms",
    "data_pipelines.fake_crispedit",
    "data_pipelines.loader",
    "data_pipelines.tfds_builder",
    "data_pipelines.synthetic.generate",
    "data_pipelines.synthetic.source",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{name}: {result.failed} examples failed"
