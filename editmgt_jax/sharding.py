"""Device meshes, logical-axis rules and sharded parameter creation.

Mesh axes are (data, fsdp, tensor). Parameters and activations carry logical axis names
(`editmgt_jax.common_types`); `LOGICAL_RULES` maps them onto mesh axes. A logical axis whose size is
not divisible by its mesh axes, or whose mesh axis is already used by an earlier dimension of the
same array, is replicated instead of failing.

Example (on 8 devices: data 1 x fsdp 4 x tensor 2):
    mesh = create_mesh([1, 4, 2])
    params = init_sharded(model, jax.random.key(0), inputs, mesh)
    with activation_sharding(mesh):
        logits = jax.jit(model.apply)({"params": params}, **inputs)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from editmgt_jax import common_types as ct

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_RULES: tuple[tuple[str, Any], ...] = (
    # weights
    (ct.EMBED, "fsdp"),
    (ct.MLP, "tensor"),
    (ct.HEADS, "tensor"),
    (ct.MODULATION, "tensor"),
    (ct.VOCAB, "tensor"),
    (ct.CODEBOOK, "tensor"),
    (ct.TEXT_EMBED, "fsdp"),
    (ct.COND_EMBED, "fsdp"),
    (ct.TIME_EMBED, "fsdp"),
    (ct.NORM, None),
    (ct.CONV_HEIGHT, None),
    (ct.CONV_WIDTH, None),
    (ct.LAYERS, None),
    # activations
    (ct.ACT_BATCH, ("data", "fsdp")),
    (ct.ACT_LENGTH, None),
    (ct.ACT_EMBED, None),
    (ct.ACT_HEADS, "tensor"),
    (ct.ACT_KV, None),
    (ct.ACT_MLP, "tensor"),
    (ct.ACT_VOCAB, "tensor"),
)


def resolve_parallelism(parallelism: Sequence[int], num_devices: int, what: str) -> list[int]:
    """Fills the single -1 so that the product is `num_devices`."""
    dims = [int(x) for x in parallelism]
    if len(dims) != len(MESH_AXES):
        raise ValueError(f"{what} {dims} must have {len(MESH_AXES)} entries {MESH_AXES}")
    if dims.count(-1) > 1 or any(d == 0 or d < -1 for d in dims):
        raise ValueError(f"{what} {dims}: sizes must be positive, with at most one -1")
    known = math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if num_devices % known:
            raise ValueError(f"{what} {dims} does not divide {num_devices} devices")
        dims[dims.index(-1)] = num_devices // known
    if math.prod(dims) != num_devices:
        raise ValueError(
            f"{what} {dims} uses {math.prod(dims)} devices, but there are {num_devices}"
        )
    return dims


def create_mesh(
    ici_parallelism: Sequence[int],
    dcn_parallelism: Sequence[int] = (1, 1, 1),
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A (data, fsdp, tensor) mesh: `ici_parallelism` within a slice, `dcn_parallelism` across."""
    devices = list(devices if devices is not None else jax.devices())
    num_slices = math.prod(int(x) for x in dcn_parallelism)
    if num_slices == 1:
        ici = resolve_parallelism(ici_parallelism, len(devices), "ici_parallelism")
        try:
            grid = mesh_utils.create_device_mesh(ici, devices)
        except (AssertionError, NotImplementedError, ValueError):
            grid = np.asarray(devices).reshape(ici)  # e.g. CPU or a subset of devices
    else:
        dcn = resolve_parallelism(dcn_parallelism, num_slices, "dcn_parallelism")
        ici = resolve_parallelism(ici_parallelism, len(devices) // num_slices, "ici_parallelism")
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    return Mesh(grid, MESH_AXES)


def _mesh_axes_for(logical: str | None, rules: dict[str, Any]) -> tuple[str, ...]:
    if logical is None:
        return ()
    if logical not in rules:
        raise ValueError(f"Logical axis {logical!r} has no sharding rule")
    target = rules[logical]
    if target is None:
        return ()
    return (target,) if isinstance(target, str) else tuple(target)


def logical_to_mesh_spec(
    logical: PartitionSpec | Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = LOGICAL_RULES,
) -> PartitionSpec:
    """Logical names of one array -> a mesh PartitionSpec that is valid for its shape."""
    rules = dict(rules)
    used: set[str] = set()
    spec = []
    logical = tuple(logical) + (None,) * (len(shape) - len(tuple(logical)))
    for name, size in zip(logical, shape, strict=True):
        axes = tuple(a for a in _mesh_axes_for(name, rules) if a not in used and mesh.shape[a] > 1)
        while axes and size % math.prod(mesh.shape[a] for a in axes):
            axes = axes[:-1]  # drop the innermost mesh axis until the size divides
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def tree_shardings(abstract_boxed: Any, mesh: Mesh, rules=LOGICAL_RULES) -> Any:
    """NamedShardings for a tree of (possibly `nn.LogicallyPartitioned`) abstract arrays."""
    specs = nn.get_partition_spec(abstract_boxed)
    shapes = nn.meta.unbox(abstract_boxed)
    return jax.tree.map(
        lambda spec, x: NamedSharding(mesh, logical_to_mesh_spec(spec, x.shape, mesh, rules)),
        specs,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def init_sharded(
    model: nn.Module, rng: jax.Array, inputs: dict[str, Any], mesh: Mesh, rules=LOGICAL_RULES
) -> dict[str, Any]:
    """Creates the model's params directly sharded on `mesh` (no full copy on one device)."""
    init = lambda key: nn.meta.unbox(model.init(key, **inputs)["params"])
    abstract = jax.eval_shape(lambda key: model.init(key, **inputs)["params"], rng)
    shardings = tree_shardings(abstract, mesh, rules)
    with activation_sharding(mesh, rules):
        return jax.jit(init, out_shardings=shardings)(rng)


def param_shardings(model: nn.Module, inputs: dict[str, Any], mesh: Mesh, rules=LOGICAL_RULES):
    """Shardings of the model's params (for placing converted weights or AOT compiles)."""
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs)["params"])
    return tree_shardings(abstract, mesh, rules)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=LOGICAL_RULES):
    """Within: `nn.with_logical_constraint` in the modules resolves against `mesh`.

    Flax reads the mesh from `jax.set_mesh` (`jax.sharding.get_abstract_mesh`); under the legacy
    `with mesh:` alone every activation constraint is silently dropped, and XLA then keeps the
    activations whole on every chip and all-reduces them (BENCHMARKS.md, TPU AOT compile). The
    legacy context is entered too, for code that still reads it."""
    with mesh, jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def context_mesh() -> jax.sharding.AbstractMesh | None:
    """The mesh an enclosing `activation_sharding` (`jax.set_mesh`) made active, or None.

    For ops XLA cannot partition itself (Pallas kernels), which must run in `shard_map`."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def fully_replicated_large_arrays(params: Any, min_bytes: int = 2**20) -> list[str]:
    """Paths of arrays of at least `min_bytes` that are not split over any mesh axis."""
    found = []
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        nbytes = x.size * np.dtype(x.dtype).itemsize
        sharding = getattr(x, "sharding", None)
        if nbytes >= min_bytes and (sharding is None or sharding.is_fully_replicated):
            found.append(jax.tree_util.keystr(path))
    return found


def assert_params_sufficiently_sharded(params: Any, min_bytes: int = 2**20) -> None:
    """Raises when any array of `min_bytes` or more is fully replicated across the mesh."""
    found = fully_replicated_large_arrays(params, min_bytes)
    if found:
        raise AssertionError(f"{len(found)} large arrays are fully replicated: {found}")
