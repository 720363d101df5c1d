"""Models know nothing of how they are stored: no file under editmgt_jax/models or editmgt_jax/nn
imports editmgt_jax.checkpoint (the loaders import the models, never the other way round)."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("editmgt_jax/models", "editmgt_jax/nn")
FORBIDDEN = "editmgt_jax.checkpoint"


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[: -len(".py")]
    parts = rel.split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of `from ... import` (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_forbidden(name: str) -> bool:
    return name == FORBIDDEN or name.startswith(FORBIDDEN + ".")


def forbidden_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import of editmgt_jax.checkpoint in `source` (at any depth, also inside functions,
    and through importlib.import_module / __import__ with a literal name), as 'line: text'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names = [str(first.value)]
        if any(_is_forbidden(n) for n in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _layer_files() -> list[str]:
    files = []
    for layer in LAYERS:
        for root, _, names in os.walk(os.path.join(REPO, layer)):
            files += [os.path.join(root, n) for n in names if n.endswith(".py")]
    return sorted(files)


def test_models_and_nn_do_not_import_checkpoint():
    files = _layer_files()
    assert len(files) > 10, files  # the walk found the packages
    offenders = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        hits = forbidden_imports(source, _module_name(path), path.endswith("__init__.py"))
        if hits:
            offenders[os.path.relpath(path, REPO)] = hits
    assert not offenders, f"models/nn import the checkpoint package: {offenders}"


@pytest.mark.parametrize(
    "source",
    [
        "import editmgt_jax.checkpoint",
        "import editmgt_jax.checkpoint.convert.vq as v",
        "from editmgt_jax.checkpoint import load_vq",
        "from editmgt_jax import checkpoint",
        "def f():\n    from editmgt_jax.checkpoint.convert.vq import load_vq\n",
        "from ...checkpoint.convert import vq",
        "import importlib\nimportlib.import_module('editmgt_jax.checkpoint.text')",
    ],
)
def test_the_check_catches_every_form(source):
    assert forbidden_imports(source, "editmgt_jax.models.text.encoder")


def test_the_check_allows_other_imports():
    source = "import jax\nfrom editmgt_jax.nn.linear import dense\nfrom . import clip\n"
    assert forbidden_imports(source, "editmgt_jax.models.text.encoder") == []
