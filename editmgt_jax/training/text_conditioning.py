"""Frozen text conditioning for training: the encoder's weights sharded over the mesh, one jitted
encode per batch.

The text encoder a run names (MiniLM, CLIP alone, or CLIP + Gemma 2) is frozen. Two ways feed its
states to the train step:

- **per batch, on the mesh** (`cache=False`, the released model's recipe): the host tokenizes the
  batch's instructions, the ids become global arrays split over the batch like the images, and
  one jitted `encoder.apply_tokens` turns them into states. Its parameters are sharded over the
  mesh's `fsdp` axis like the transformer's (Gemma 2 2B is 5.2 GB in bfloat16: replicated, it
  would not leave room for the model on a 16 GB chip), so XLA gathers each weight inside the
  program. The states never visit the host.
- **cached per instruction** (`cache=True`, the embedded model's synthetic world, whose few
  thousand instructions repeat): states are computed once on the host, kept, and uploaded with
  the batch.

Precomputing states into the data shards was measured against encoding per batch
(`benchmarks/text_conditioning.py`, BENCHMARKS.md): Gemma 2's states are 256 x 2304 values a row
(1.18 MB in bfloat16), 72x the row's two 64 x 64 int16 token grids, so CrispEdit-2M's 2.29M rows
would carry 2.7 TB of states (37.5 GB of tokens), while encoding costs a forward of the 2.6B
encoder: 6.2% of the 1B train step's FLOPs at 1024 px (4.9% with full remat). So per-batch
encoding is the default and the only path; nothing is precomputed.

The unconditional input of classifier-free guidance is the encoder's own encoding of the empty
instruction (`uncond`), as the official training script does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Leaves below this size stay replicated: sharding them saves nothing and adds collectives.
MIN_SHARDED_BYTES = 1 << 20


def frozen_param_shardings(params: Any, mesh: Mesh, min_bytes: int = MIN_SHARDED_BYTES) -> Any:
    """A `NamedSharding` per leaf of a frozen parameter tree: each leaf of at least `min_bytes`
    is split over the mesh's `fsdp` axis along its largest dimension that the fsdp size divides
    (the transformer's weights are sharded over the same axis); the others are replicated."""
    fsdp = mesh.shape.get("fsdp", 1)

    def spec(x) -> NamedSharding:
        shape = np.shape(x)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize
        if fsdp > 1 and nbytes >= min_bytes:
            axes = sorted(range(len(shape)), key=lambda a: -shape[a])
            for axis in axes:
                if shape[axis] % fsdp == 0:
                    parts = [None] * len(shape)
                    parts[axis] = "fsdp"
                    return NamedSharding(mesh, PartitionSpec(*parts))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(spec, params)


class TextConditioning:
    """A frozen text encoder placed on the training mesh (module docstring).

    Args:
      encoder: a `editmgt_jax.models.text.encoder.TextEncoder` (MiniLM, CLIP, CLIP + Gemma 2).
      mesh: the training mesh.
      batch_sharding: how batch-major arrays are split (the train step's batch sharding).
      host_text: with a cache, instructions -> (states [B, T, D], pooled [B, P]) host arrays,
        cached per instruction (`TrainingInputs.text`); None: encode every batch on the mesh.
      min_sharded_bytes: leaves smaller than this stay replicated (`frozen_param_shardings`).
    """

    def __init__(
        self,
        encoder: Any,
        mesh: Mesh,
        batch_sharding: NamedSharding,
        host_text: Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]] | None = None,
        min_sharded_bytes: int = MIN_SHARDED_BYTES,
    ):
        self.encoder, self.mesh, self.batch_sharding = encoder, mesh, batch_sharding
        self.host_text = host_text
        self.min_sharded_bytes = min_sharded_bytes
        self._params = None
        self._encode = None
        self.replicated = NamedSharding(mesh, PartitionSpec())

    def _place(self) -> None:
        """Shards the weights over the mesh and jits the encode (once, on first use)."""
        params = self.encoder.frozen_params
        shardings = frozen_param_shardings(params, self.mesh, self.min_sharded_bytes)
        self._params = jax.device_put(params, shardings)
        self._encode = jax.jit(
            self.encoder.apply_tokens,
            in_shardings=(shardings, self.batch_sharding),
            out_shardings=(self.batch_sharding, self.batch_sharding),
        )

    def global_states(self, instructions: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        """This process's instructions -> (states [B, T, D], pooled [B, P]) as global arrays
        split like the batch (B = the global batch)."""
        if self.host_text is not None:
            states, pooled = self.host_text(instructions)
            return (
                jax.make_array_from_process_local_data(self.batch_sharding, states),
                jax.make_array_from_process_local_data(self.batch_sharding, pooled),
            )
        if self._encode is None:
            self._place()
        tokens = {
            name: jax.make_array_from_process_local_data(self.batch_sharding, ids)
            for name, ids in self.encoder.token_arrays(list(instructions)).items()
        }
        return self._encode(self._params, tokens)

    def uncond(self) -> tuple[jax.Array, jax.Array]:
        """The empty instruction's (states [T, D], pooled [P]), replicated: CFG's unconditional
        input, from the encoder itself."""
        out = self.encoder.encode([""])
        states, pooled = np.asarray(out.states[0]), np.asarray(out.pooled[0])
        return jax.device_put(states, self.replicated), jax.device_put(pooled, self.replicated)
