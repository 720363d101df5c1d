"""A training-layout planner: which (data, fsdp, tensor) split, remat policy and per-chip batch
to train a config with on a TPU topology.

1. Enumerate every split of the devices into data x fsdp x tensor (tensor up to the attention
   heads), every remat policy the model allows, and per-chip batches 1, 2, 4, ... up to
   `max_batch_per_chip`.
2. Prune with an analytic model (`estimate`): per-device memory = the config's own train state
   (its real bytes: optimizer moments of whatever kind, EMA or none, LoRA, the accumulation
   buffer), split over fsdp x tensor, + the gradients and the optimizer update's float32
   temporaries + the activations kept for the backward (per block; the residual streams are not
   split by tensor, the heads and MLP hidden are) + one block's working set (+ the attention
   score matrices, unless a kernel such as splash keeps them out of memory) + the batch; time =
   roofline of our FLOP count, weight gathers (fsdp) and gradient reductions (data).
3. Compile the fastest candidates that fit by the model, fastest first, and keep the first that
   fits by the compiler (`memory_analysis` peak <= HBM). After each compile the model is
   corrected: the compiler's bytes over the estimate, per remat policy and tensor split, scale
   the estimates of the candidates not yet tried, which are then filtered and ranked again.

The answer is printed as `--config.mesh.ici_parallelism=...` / `--config.model.remat_policy=...` /
`--config.train.batch_size=...` overrides.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Callable
from typing import Any

from editmgt_jax.aot.topologies import Topology

# Bytes per position per unit of model width kept between forward and backward, per block, as
# (not split by tensor, split by tensor). Calibrated on the compiler (BENCHMARKS.md, the 1B step):
# "full" keeps the float32 block input and a little more (the compiler's growth per example at
# 1024 px on v5e-8 between 4 and 26 a chip: 0.63 GB, i.e. ~5 per block with the working set
# below); "dots" the matmul outputs; no remat everything (modulated inputs, q/k/v, attention
# output, the 4d MLP hidden and its activation, residuals).
_KEPT = {
    "none": (14.0, 24.0),
    "dots": (6.0, 14.0),
    "dots_no_batch": (6.0, 14.0),
    "full": (5.0, 0.0),
}
_WORKING = (16.0, 40.0)  # one block's forward + backward in flight, same units
_OPTIMIZER_TEMPS = 3.0  # float32 copies of the trained weights' shard alive in the update


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

    def overrides(self, update_size: int = 0, accumulation: int = 1) -> list[str]:
        """The launch.train flags of this layout; with `update_size` (examples an optimizer
        update sees: train.batch_size x optim.accumulation_steps) also the accumulation that
        keeps it, where the new batch divides it."""
        batch = self.batch_per_chip * self.data * self.fsdp
        out = [
            f"--config.mesh.ici_parallelism={self.data},{self.fsdp},{self.tensor}",
            f"--config.model.remat_policy={self.remat_policy}",
            f"--config.train.batch_size={batch}",
        ]
        if update_size and update_size % batch == 0 and update_size // batch != accumulation:
            out.append(f"--config.optim.accumulation_steps={update_size // batch}")
        return out


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

    shape: params (N), trained_params, state_bytes (the whole train state, all copies),
    inner_dim (d), heads, num_blocks, positions (S per example), act_bytes (2 for bfloat16
    compute, 4 for float32), batch_bytes (one example's batch arrays), fused_attention (a kernel
    that keeps no [S, S] scores in memory).
    """
    c, n, d = candidate, shape["params"], shape["inner_dim"]
    shards = c.fsdp * c.tensor
    trained = shape.get("trained_params", n)
    state = shape.get("state_bytes", 16.0 * n) / shards
    grads = 4.0 * trained / shards
    optimizer = _OPTIMIZER_TEMPS * 4.0 * trained / shards
    b, s, blocks = c.batch_per_chip, shape["positions"], shape["num_blocks"]
    per_width = b * s * d  # one block's activations per unit of width
    unsplit, split = _KEPT[c.remat_policy]
    kept = blocks * per_width * (unsplit + split / c.tensor)
    working = per_width * (_WORKING[0] + _WORKING[1] / c.tensor)
    if not shape.get("fused_attention", False):
        # The XLA attention's float32 scores, [b, heads, S, S] a block: kept for the backward
        # unless the block is rematerialised whole; scores, probabilities and their gradient
        # alive at once inside one block (0.68 GB a block for the 1B step at 1024 px, 4 a chip).
        scores = b * max(shape.get("heads", 1) // c.tensor, 1) * float(s) * s * 4.0
        if c.remat_policy != "full":
            kept += blocks * scores
        working += 3.0 * scores
    layer = 2.0 * 4.0 * n / blocks / c.tensor  # the gathered weights of two blocks (prefetch)
    memory = state + grads + optimizer + kept + working + layer + b * shape["batch_bytes"]
    flops = b * (6.0 * n * s + 12.0 * s * s * d * blocks)
    flops *= 8.0 / 6.0 if c.remat_policy != "none" else 1.0
    flops /= c.tensor
    gathers = 3.0 * 4.0 * n / c.tensor if c.fsdp > 1 else 0.0  # weights, fwd + bwd (+ remat)
    reduce = 2.0 * 4.0 * trained / shards if c.data * c.fsdp > 1 else 0.0
    tensor_traffic = 4.0 * b * s * d * blocks * 2 if c.tensor > 1 else 0.0
    chip = topology.chip
    compute_s = flops / topology.peak_flops_per_device
    comm_s = (gathers + reduce + tensor_traffic) / (chip.ici_bytes_per_s / chip.cores_per_chip)
    hbm_s = (3 * state + kept * 2) / (chip.hbm_bytes_per_s / chip.cores_per_chip)
    step_s = max(compute_s, comm_s, hbm_s)
    examples = b * c.data * c.fsdp
    return dict(memory=memory, step_s=step_s, s_per_example=step_s / examples)


def correction_key(candidate: Candidate) -> str:
    """What a compile corrects: the model's error depends on the remat policy and the tensor split
    (how much of the activations tensor parallelism really divides), e.g. "none/tensor2"."""
    return f"{candidate.remat_policy}/tensor{candidate.tensor}"


def candidates(
    topology: Topology,
    shape: dict[str, Any],
    policies,
    max_batch_per_chip: int,
    heads: int,
    correction: dict[str, float] | None = None,
) -> list[tuple[Candidate, dict[str, float]]]:
    """Every candidate with its estimate (memory times `correction[correction_key(...)]`, the
    compiler's measured ratio where known), the ones that fit HBM by the estimate, fastest first."""
    correction = correction or {}
    out = []
    batches = [2**i for i in range(max_batch_per_chip.bit_length()) if 2**i <= max_batch_per_chip]
    for (data, fsdp, tensor), policy, batch in itertools.product(
        splits(topology.devices, heads), policies, batches
    ):
        if heads % tensor:
            continue
        cand = Candidate(data, fsdp, tensor, policy, batch)
        est = estimate(cand, shape, topology)
        est["memory"] *= correction.get(correction_key(cand), 1.0)
        if est["memory"] <= 0.9 * topology.hbm_bytes_per_device:
            out.append((cand, est))
    # Fastest per example; among equals the larger batch (fewer steps), then less memory.
    out.sort(key=lambda ce: (round(ce[1]["s_per_example"], 9), -ce[0].batch_per_chip))
    return out


def largest_batch(
    candidate: Candidate,
    shape: dict[str, Any],
    topology: Topology,
    measured: float | None = None,
    max_batch_per_chip: int = 1024,
) -> int:
    """The largest per-chip batch (any integer) for `candidate`'s mesh and remat policy that fits
    0.9 of a device's HBM by the model; 0 if none. With `measured` (the compiler's bytes for
    `candidate` itself) the model is anchored there: bytes(b) = measured + est(b) - est(b0), i.e.
    the model gives only the growth per example (its fixed part is what it gets most wrong)."""
    base = estimate(candidate, shape, topology)["memory"]
    offset = 0.0 if measured is None else measured - base
    best = 0
    for batch in range(1, max_batch_per_chip + 1):
        trial = dataclasses.replace(candidate, batch_per_chip=batch)
        need = estimate(trial, shape, topology)["memory"] + offset
        if need > 0.9 * topology.hbm_bytes_per_device:
            break
        best = batch
    return best


def measured_bytes(record: dict[str, Any]) -> float | None:
    """A compile record's bytes a device needs (peak + code), None when the compiler refused it
    without figures; a refusal for memory counts as at least the chip's HBM."""
    if "bytes_per_chip" in record:
        return float(record["bytes_per_chip"]["peak"] + record["bytes_per_chip"]["code"])
    error = record.get("error", "")
    if "RESOURCE_EXHAUSTED" in error or record.get("fits") is False:
        # "... required for HLO temporaries (21.92G) exceeds available HBM (15.75G)": GiB.
        stated = re.search(r"temporaries \(([\d.]+)G\)", error)
        floor = float(record["hbm_bytes_per_device"]) * 1.05
        return max(floor, float(stated[1]) * 2**30) if stated else floor
    return None


def plan(
    topology: Topology,
    shape: dict[str, Any],
    policies,
    heads: int,
    compile_fn: Callable[[Candidate], dict[str, Any]],
    max_batch_per_chip: int = 64,
    compile_top: int = 3,
) -> dict[str, Any]:
    """The analytically fastest candidate the compiler says fits, in at most `compile_top`
    compiles: {"chosen": Candidate or None, "estimate", "record", "tried": [...], "ranked",
    "correction"}.

    compile_fn(candidate) compiles the train step with those overrides and returns its record
    (with "fits"); it may raise ValueError for a layout the step rejects (tried, skipped). After
    each compile that does not fit, the estimates of its remat policy and tensor split are scaled by
    measured / estimated (never below 1) and the remaining candidates re-ranked.
    """
    correction: dict[str, float] = {}
    tried, done = [], set()
    ranked_first = None
    for _ in range(compile_top):
        ranked = [
            ce
            for ce in candidates(topology, shape, policies, max_batch_per_chip, heads, correction)
            if ce[0] not in done
        ]
        ranked_first = len(ranked) if ranked_first is None else ranked_first
        if not ranked:
            break
        cand, est = ranked[0]
        done.add(cand)
        try:
            record = compile_fn(cand)
        except ValueError as error:
            tried.append(dict(candidate=dataclasses.asdict(cand), error=str(error)))
            continue
        measured = measured_bytes(record)
        tried.append(
            dict(
                candidate=dataclasses.asdict(cand),
                fits=record["fits"],
                estimated_memory_bytes=est["memory"],  # against the compiler's, below
                measured_bytes=measured,
                **{k: record[k] for k in ("bytes_per_chip", "error") if k in record},
            )
        )
        if record["fits"]:
            return dict(
                chosen=cand,
                estimate=est,
                record=record,
                tried=tried,
                ranked=ranked_first,
                correction=correction,
            )
        if measured:
            key = correction_key(cand)
            raw = est["memory"] / correction.get(key, 1.0)
            correction[key] = max(correction.get(key, 1.0), measured / raw)
    return dict(
        chosen=None,
        estimate=None,
        record=None,
        tried=tried,
        ranked=ranked_first or 0,
        correction=correction,
    )
