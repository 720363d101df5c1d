"""A training-layout planner: which (data, fsdp, tensor) split, remat policy and per-chip batch
to train a config with on a TPU topology.

1. Enumerate every split of the devices into data x fsdp x tensor (tensor up to the attention
   heads), every remat policy the model allows, and per-chip batches 1, 2, 4, ... up to
   `max_batch_per_chip`.
2. Prune with an analytic model (`estimate`): per-device memory = the train state (params, two
   Adam moments and EMA in float32, split over fsdp x tensor) + the batch + the activations kept
   for the backward (per block: none with "full" remat (the block input only), a few per
   position with "dots", ~16 d per position without remat) + one gathered layer of weights; time
   = roofline of our FLOP count, weight gathers (fsdp) and gradient reductions (data).
3. Compile the `compile_top` fastest candidates that fit by the model, fastest first, and keep
   the first that fits by the compiler (`memory_analysis` peak <= HBM).

The answer is printed as `--config.mesh.ici_parallelism=...` / `--config.model.remat_policy=...` /
`--config.train.batch_size=...` overrides.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from editmgt_jax.aot.topologies import Topology

# Bytes kept per position and model width between forward and backward, per block (float32
# activations; bfloat16 halves it). Rough: no remat ~ 16 (attention inputs/outputs, MLP hidden 4d
# and its activation, norms); "dots" keeps the matmul outputs ~ 8; "full" keeps the block input.
_ACTIVATION_WIDTHS = {"none": 16.0, "dots": 8.0, "dots_no_batch": 8.0, "full": 1.0}


@dataclasses.dataclass(frozen=True)
class Candidate:
    data: int
    fsdp: int
    tensor: int
    remat_policy: str
    batch_per_chip: int

    @property
    def mesh(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)

    def overrides(self, devices: int) -> list[str]:
        return [
            f"--config.mesh.ici_parallelism={self.data},{self.fsdp},{self.tensor}",
            f"--config.model.remat_policy={self.remat_policy}",
            f"--config.train.batch_size={self.batch_per_chip * self.data * self.fsdp}",
        ]


def splits(devices: int, max_tensor: int) -> list[tuple[int, int, int]]:
    """Every (data, fsdp, tensor) with data * fsdp * tensor = devices, tensor <= max_tensor."""
    out = []
    for tensor in range(1, min(devices, max_tensor) + 1):
        if devices % tensor:
            continue
        rest = devices // tensor
        for fsdp in range(1, rest + 1):
            if rest % fsdp == 0:
                out.append((rest // fsdp, fsdp, tensor))
    return out


def estimate(candidate: Candidate, shape: dict[str, Any], topology: Topology) -> dict[str, float]:
    """Analytic per-device bytes and seconds of one train step (see the module docstring).

    shape: params (N), inner_dim (d), num_blocks, positions (S per example), act_bytes (2 for
    bfloat16 compute, 4 for float32), batch_bytes (one example's batch arrays).
    """
    c, n, d = candidate, shape["params"], shape["inner_dim"]
    shards = c.fsdp * c.tensor
    state = 16.0 * n / shards  # params + mu + nu + ema, float32
    grads = 4.0 * n / shards
    b, s = c.batch_per_chip, shape["positions"]
    width = _ACTIVATION_WIDTHS[c.remat_policy]
    kept = shape["num_blocks"] * b * s * d * width * shape["act_bytes"] / c.tensor
    working = b * s * d * 24.0 * shape["act_bytes"] / c.tensor  # one block's forward + backward
    # The XLA attention's float32 probabilities, [b, heads, S, S] a block: kept for the backward
    # unless the block is rematerialised whole, and scores, probabilities and their gradient
    # alive at once inside one block (the 1B step at 1024 px: 0.68 GB a block at 4 per chip;
    # without this term the estimate was 4.6x below the compiler's 42.5 GB for no remat).
    scores = b * max(shape.get("heads", 1) // c.tensor, 1) * float(s) * s * 4.0
    if c.remat_policy != "full":
        kept += shape["num_blocks"] * scores
    working += 3.0 * scores
    layer = 4.0 * n / shape["num_blocks"] / c.tensor  # one gathered layer
    memory = state + grads + kept + working + 2 * layer + b * shape["batch_bytes"]
    flops = b * (6.0 * n * s + 12.0 * s * s * d * shape["num_blocks"])
    flops *= 8.0 / 6.0 if c.remat_policy != "none" else 1.0
    flops /= c.tensor
    gathers = 3.0 * 4.0 * n / c.tensor if c.fsdp > 1 else 0.0  # weights, fwd + bwd (+ remat)
    reduce = 2.0 * 4.0 * n / shards if c.data * c.fsdp > 1 else 0.0
    tensor_traffic = 4.0 * b * s * d * shape["num_blocks"] * 2 if c.tensor > 1 else 0.0
    chip = topology.chip
    compute_s = flops / topology.peak_flops_per_device
    comm_s = (gathers + reduce + tensor_traffic) / (chip.ici_bytes_per_s / chip.cores_per_chip)
    hbm_s = (3 * state + kept * 2) / (chip.hbm_bytes_per_s / chip.cores_per_chip)
    step_s = max(compute_s, comm_s, hbm_s)
    examples = b * c.data * c.fsdp
    return dict(memory=memory, step_s=step_s, s_per_example=step_s / examples)


def candidates(
    topology: Topology, shape: dict[str, Any], policies, max_batch_per_chip: int, heads: int
) -> list[tuple[Candidate, dict[str, float]]]:
    """Every candidate with its estimate, the ones that fit HBM by the estimate, fastest first."""
    out = []
    batches = [2**i for i in range(max_batch_per_chip.bit_length()) if 2**i <= max_batch_per_chip]
    for (data, fsdp, tensor), policy, batch in itertools.product(
        splits(topology.devices, heads), policies, batches
    ):
        if heads % tensor:
            continue
        cand = Candidate(data, fsdp, tensor, policy, batch)
        est = estimate(cand, shape, topology)
        if est["memory"] <= 0.9 * topology.hbm_bytes_per_device:
            out.append((cand, est))
    # Fastest per example; among equals the larger batch (fewer steps), then less memory.
    out.sort(key=lambda ce: (round(ce[1]["s_per_example"], 9), -ce[0].batch_per_chip))
    return out


def plan(
    topology: Topology,
    shape: dict[str, Any],
    policies,
    heads: int,
    compile_fn: Callable[[Candidate], dict[str, Any]],
    max_batch_per_chip: int = 64,
    compile_top: int = 3,
) -> dict[str, Any]:
    """The first of the `compile_top` analytically fastest candidates that the compiler says
    fits: {"chosen": Candidate or None, "estimate", "record", "tried": [...]}.

    compile_fn(candidate) compiles the train step with those overrides and returns its record
    (with "fits"); it may raise ValueError for a layout the step rejects (tried, skipped).
    """
    ranked = candidates(topology, shape, policies, max_batch_per_chip, heads)
    tried = []
    for cand, est in ranked[:compile_top]:
        try:
            record = compile_fn(cand)
        except ValueError as error:
            tried.append(dict(candidate=dataclasses.asdict(cand), error=str(error)))
            continue
        tried.append(
            dict(
                candidate=dataclasses.asdict(cand),
                fits=record["fits"],
                estimated_memory_bytes=est["memory"],  # against the compiler's, below
                **{k: record[k] for k in ("bytes_per_chip", "error") if k in record},
            )
        )
        if record["fits"]:
            return dict(chosen=cand, estimate=est, record=record, tried=tried, ranked=len(ranked))
    return dict(chosen=None, estimate=None, record=None, tried=tried, ranked=len(ranked))
