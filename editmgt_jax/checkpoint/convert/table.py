"""Declarative parameter tables between our Flax trees and official PyTorch state dicts.

A table is a list of `Rule`s. Each rule names one of our parameters by its '/'-joined path in the
Flax `params` tree, the official state-dict key, and a `Hook`: a pair of layout transforms that are
exact inverses (transpose a Linear, permute a Conv, ...). Import (`to_ours`) and export
(`to_theirs`) both walk the same table, so a round trip is exact by construction, and every
mismatch (missing, unexpected or mis-shaped key) is collected and raised at once.

Example:
    >>> import numpy as np
    >>> rules = [Rule("proj/kernel", "proj.weight", LINEAR), Rule("proj/bias", "proj.bias")]
    >>> theirs = {"proj.weight": np.ones((3, 2)), "proj.bias": np.zeros(3)}
    >>> ours = to_ours(rules, theirs)
    >>> ours["proj"]["kernel"].shape
    (2, 3)
    >>> sorted(to_theirs(rules, ours)) == sorted(theirs)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

Array = np.ndarray
Transform = Callable[[Array], Array]


@dataclasses.dataclass(frozen=True)
class Hook:
    """A pair of layout transforms; `to_theirs(to_ours(x)) == x` exactly."""

    name: str
    to_ours: Transform
    to_theirs: Transform


IDENTITY = Hook("identity", lambda x: x, lambda x: x)
# torch Linear weight [out, in] <-> Flax Dense kernel [in, out].
LINEAR = Hook("linear", lambda x: np.ascontiguousarray(x.T), lambda x: np.ascontiguousarray(x.T))
# torch Conv2d weight [out, in, kh, kw] <-> Flax Conv kernel [kh, kw, in, out].
CONV = Hook(
    "conv",
    lambda x: np.ascontiguousarray(x.transpose(2, 3, 1, 0)),
    lambda x: np.ascontiguousarray(x.transpose(3, 2, 0, 1)),
)
# torch ConvTranspose2d weight [in, out, kh, kw] <-> our kernel [kh, kw, in, out].
CONV_TRANSPOSE = Hook(
    "conv_transpose",
    lambda x: np.ascontiguousarray(x.transpose(2, 3, 0, 1)),
    lambda x: np.ascontiguousarray(x.transpose(2, 3, 0, 1)),
)
# torch 1x1 Conv2d weight [out, in, 1, 1] <-> Flax Dense kernel [in, out].
CONV1X1_AS_DENSE = Hook(
    "conv1x1_as_dense",
    lambda x: np.ascontiguousarray(x[:, :, 0, 0].T),
    lambda x: np.ascontiguousarray(x.T[:, :, None, None]),
)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One parameter: our '/'-joined path, the official key, and the layout hook between them."""

    ours: str
    theirs: str
    hook: Hook = IDENTITY


def layer_rules(ours: str, theirs: str, hook: Hook = LINEAR, bias: bool = True) -> list[Rule]:
    """The kernel (and bias) of one layer: `ours/kernel` <-> `theirs.weight` through `hook`."""
    rules = [Rule(f"{ours}/kernel", f"{theirs}.weight", hook)]
    if bias:
        rules.append(Rule(f"{ours}/bias", f"{theirs}.bias"))
    return rules


def norm_rules(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
    """A norm's gain (and bias): `ours/scale` <-> `theirs.weight`."""
    rules = [Rule(f"{ours}/scale", f"{theirs}.weight")]
    if bias:
        rules.append(Rule(f"{ours}/bias", f"{theirs}.bias"))
    return rules


def abstract_param_shapes(model: Any, *sample_args: Any) -> dict[str, tuple[int, ...]]:
    """Our '/'-path -> shape of `model`'s params, from an abstract init (nothing allocated)."""
    import flax.linen as nn
    import jax

    shapes = jax.eval_shape(model.init, jax.random.key(0), *sample_args)["params"]
    return {path: tuple(leaf.shape) for path, leaf in flatten(nn.meta.unbox(shapes)).items()}


class ConversionError(ValueError):
    """Raised with the complete list of missing, unexpected and mis-shaped keys."""

    def __init__(self, what: str, missing=(), unexpected=(), misshaped=()):
        self.missing, self.unexpected, self.misshaped = (
            list(missing),
            list(unexpected),
            list(misshaped),
        )
        lines = [f"{what}: the parameters do not match the expected layout."]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        for key, got, want in self.misshaped:
            lines.append(f"  mis-shaped: {key} has shape {got}, expected {want}")
        super().__init__("\n".join(lines))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a/b/c': leaf} -> nested dict."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _check_duplicates(rules: Iterable[Rule]) -> None:
    seen_ours, seen_theirs = set(), set()
    for rule in rules:
        if rule.ours in seen_ours or rule.theirs in seen_theirs:
            raise ValueError(f"Duplicate rule in conversion table: {rule}")
        seen_ours.add(rule.ours)
        seen_theirs.add(rule.theirs)


def to_ours(
    rules: list[Rule],
    state_dict: Mapping[str, Array],
    expected_shapes: Mapping[str, tuple[int, ...]] | None = None,
    what: str = "official checkpoint",
) -> dict[str, Any]:
    """Official state dict -> our nested params.

    Args:
      rules: the table.
      state_dict: official key -> numpy array (PyTorch layouts).
      expected_shapes: our '/'-path -> shape (e.g. from `jax.eval_shape(model.init, ...)`); when
        given, every converted array is checked against it.
      what: how to name the source in errors.
    Raises:
      ConversionError: listing every missing, unexpected and mis-shaped key.
    """
    _check_duplicates(rules)
    wanted = {rule.theirs for rule in rules}
    missing = [rule.theirs for rule in rules if rule.theirs not in state_dict]
    unexpected = sorted(key for key in state_dict if key not in wanted)
    flat, misshaped = {}, []
    for rule in rules:
        if rule.theirs not in state_dict:
            continue
        value = rule.hook.to_ours(np.asarray(state_dict[rule.theirs]))
        if expected_shapes is not None:
            want = tuple(expected_shapes.get(rule.ours, ()))
            if rule.ours not in expected_shapes:
                raise ValueError(
                    f"Conversion table names {rule.ours!r}, which the model does not have"
                )
            if tuple(value.shape) != want:
                their_want = tuple(rule.hook.to_theirs(np.empty(want, np.int8)).shape)
                misshaped.append((rule.theirs, tuple(state_dict[rule.theirs].shape), their_want))
        flat[rule.ours] = value
    if missing or unexpected or misshaped:
        raise ConversionError(what, missing, unexpected, misshaped)
    return unflatten(flat)


def to_theirs(
    rules: list[Rule], params: Mapping[str, Any], what: str = "our parameters"
) -> dict[str, Array]:
    """Our nested params -> official state dict (numpy, PyTorch layouts)."""
    _check_duplicates(rules)
    flat = flatten(params)
    wanted = {rule.ours for rule in rules}
    missing = [rule.ours for rule in rules if rule.ours not in flat]
    unexpected = sorted(path for path in flat if path not in wanted)
    if missing or unexpected:
        raise ConversionError(what, missing, unexpected)
    return {rule.theirs: rule.hook.to_theirs(np.asarray(flat[rule.ours])) for rule in rules}
