"""What a compiled TPU program costs per chip: memory, collectives, FLOPs and a roofline time.

- `memory_bytes(compiled)`: `memory_analysis()` per device {arguments, outputs, aliased,
  temporaries, code, peak} (TPU layouts pad small arrays to whole tiles: 512 B at least).
- `collectives(hlo_text)`: all-gather / all-reduce / reduce-scatter / all-to-all /
  collective-permute, each {count, executed, bytes}: `count` instructions in the compiled HLO,
  `executed` and `bytes` with while-loop bodies multiplied by their trip count (XLA's
  `known_trip_count`, else `unknown_trip_count`); bytes are each result's size on one device
  (a reduce-scatter's: its input), a proxy for the data a device moves.
- `model_flops(info, name)`: our own count (XLA's `cost_analysis` counts a loop body once):
  train 6 N S per example + 12 S^2 d per block (S: image + source + text positions after the
  token path; the MFU convention, no remat recompute); sampler 2 N S + 4 S^2 d per block per
  model call, 2B calls per step.
- `roofline(...)`: compute at bf16 peak, HBM traffic at its bandwidth and collective bytes at
  ICI bandwidth; `estimated_step_s` is the largest of the three (perfect overlap; their sum is
  reported as the no-overlap bound).
"""

from __future__ import annotations

import collections
import math
import re
from typing import Any

from editmgt_jax.aot.topologies import Topology

KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4}
_ITEMSIZE.update({"u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16})
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9]\w*)?)\[([0-9,]*)\]")
_CALLED = re.compile(
    r"\b(calls|to_apply|body|condition|true_computation|false_computation)=%([\w.\-]+)"
)
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_FRAME = re.compile(r"stack_frame_id=(\d+)")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")


def memory_bytes(compiled) -> dict[str, int]:
    """Per-device bytes of a compiled program (`memory_analysis`)."""
    m = compiled.memory_analysis()
    out = dict(
        arguments=int(m.argument_size_in_bytes),
        outputs=int(m.output_size_in_bytes),
        aliased=int(m.alias_size_in_bytes),
        temporaries=int(m.temp_size_in_bytes),
        code=int(m.generated_code_size_in_bytes),
    )
    peak = getattr(m, "peak_memory_in_bytes", 0) or 0
    # Without a peak from XLA: everything live at once (donated outputs reuse their arguments).
    fallback = out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
    out["peak"] = int(max(peak, 0) or fallback)
    return out


def fits(memory: dict[str, int], hbm_bytes: int) -> bool:
    """Whether the peak live buffers plus the program's code fit one device's HBM."""
    return memory["peak"] + memory["code"] <= hbm_bytes


def type_bytes(type_text: str) -> int:
    """Bytes of an HLO type ("f32[8,128]{1,0:T(8,128)}" or a tuple of them), unpadded."""
    total = 0
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype in _ITEMSIZE:
            total += _ITEMSIZE[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _split_instruction(line: str):
    """(name, result type, opcode, rest) of one HLO instruction line, or None."""
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = ", line)
    if not m:
        return None
    rest = line[m.end() :]
    if rest.startswith("("):  # a tuple type: up to its matching parenthesis
        depth, end = 0, len(rest) - 1
        for index, ch in enumerate(rest):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                end = index
                break
        type_text, rest = rest[: end + 1], rest[end + 1 :].lstrip()
    else:
        type_text, _, rest = rest.partition(" ")
    op = re.match(r"([a-z][\w\-]*)\(", rest)
    if not op:
        return None
    return m.group(1), type_text, op.group(1), rest


def _computations(hlo: str) -> tuple[dict[str, list[str]], str | None]:
    comps: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo.splitlines():
        head = re.match(r"(ENTRY )?%([\w.\-]+) .*\{\s*$", line)
        if head and not line.startswith(" "):
            current = head.group(2)
            comps[current] = []
            if head.group(1):
                entry = current
        elif line.rstrip() == "}":  # not "}}, metadata=...": a Pallas kernel's multi-line config
            current = None
        elif current is not None:
            comps[current].append(line)
    return comps, entry


def _kind(op: str, rest: str) -> tuple[str | None, bool]:
    """(collective kind, whether this instruction is the one that carries its result)."""
    for kind in KINDS:
        if op == kind or op == f"{kind}-done":
            return kind, True
        if op == f"{kind}-start":
            return kind, False  # counted at its -done (whose type is the result)
    if op == "fusion" and "calls=%all-reduce-scatter" in rest:
        return "reduce-scatter", True  # TPU's fused reduce-scatter
    if op == "reduce-scatter-done":
        return "reduce-scatter", True
    return None, False


def source_frames(hlo: str) -> dict[int, list[str]]:
    """stack_frame_id -> ["file:line (function)", ...] innermost first (the HLO's StackFrames)."""
    sections: dict[str, dict[int, str]] = collections.defaultdict(dict)
    name = None
    for line in hlo.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            name = line
            continue
        m = re.match(r"(\d+) (.*)$", line)
        if name and m:
            sections[name][int(m.group(1))] = m.group(2)
        elif name and line.strip() and not m:
            name = None
    files = {k: v.strip('"') for k, v in sections["FileNames"].items()}
    funcs = {k: v.strip('"') for k, v in sections["FunctionNames"].items()}
    locations = {}
    for k, v in sections["FileLocations"].items():
        f = re.search(r"file_name_id=(\d+) function_name_id=(\d+) line=(\d+)", v)
        if f:
            locations[k] = f"{files.get(int(f[1]), '?')}:{f[3]} ({funcs.get(int(f[2]), '?')})"
    frames = {}
    for k, v in sections["StackFrames"].items():
        f = re.search(r"file_location_id=(\d+) parent_frame_id=(\d+)", v)
        if f:
            frames[k] = (int(f[1]), int(f[2]))

    def stack(frame: int) -> list[str]:
        out, seen = [], set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            loc, parent = frames[frame]
            out.append(locations.get(loc, "?"))
            frame = parent
        return out

    return {k: stack(k) for k in frames}


def collectives(
    hlo: str, unknown_trip_count: int = 1, with_sources: bool = False
) -> dict[str, dict[str, Any]]:
    """{kind: {count, executed, bytes[, sources]}} of a compiled program's HLO text.

    `sources` (with_sources): {"file:line": executed count} of the innermost project frame
    (editmgt_jax, outside editmgt_jax/aot) of each collective's op metadata.
    """
    comps, entry = _computations(hlo)
    frames = source_frames(hlo) if with_sources else {}
    out = {k: dict(count=0, executed=0, bytes=0) for k in KINDS}
    sources: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    static_seen: set[tuple[str, str]] = set()

    def visit(comp: str, times: int, depth: int, scope: set) -> None:
        """`scope`: channel ids already counted in this execution context (the entry or one
        loop body): the TPU compiler keeps one collective in several fused computations (an
        async collective fusion and the fusion it came from share its channel_id)."""
        if depth > 64 or comp not in comps:
            return
        for line in comps[comp]:
            parts = _split_instruction(line)
            if parts is None:
                continue
            name, type_text, op, rest = parts
            kind, carries = _kind(op, rest)
            if kind and carries:
                channel = _CHANNEL.search(rest)
                ident = ("channel", channel[1]) if channel else (comp, name)
                if ident in scope:
                    continue
                scope.add(ident)
                nbytes = type_bytes(type_text)
                if kind == "reduce-scatter":  # its input is what moves
                    operands = rest[rest.index("(") :]
                    nbytes = max(nbytes, _operand_bytes(operands, comps[comp]))
                if ident not in static_seen:
                    static_seen.add(ident)
                    out[kind]["count"] += 1
                out[kind]["executed"] += times
                out[kind]["bytes"] += times * nbytes
                if with_sources:
                    frame = _FRAME.search(rest)
                    where = _project_frame(frames.get(int(frame[1]), [])) if frame else None
                    sources[kind][where or "?"] += times
                if op == "fusion":
                    continue  # the fused reduce-scatter's inside is its implementation
            trip = 1
            if op == "while":
                found = _TRIP.search(rest)
                condition = re.search(r"condition=%([\w.\-]+)", rest)
                trip = (
                    int(found[1])
                    if found
                    else _condition_trip_count(comps.get(condition[1], []) if condition else [])
                    or unknown_trip_count
                )
            for field, called in _CALLED.findall(rest):
                inner = set() if field == "body" else scope  # a loop body: its own context
                visit(called, times * (trip if field == "body" else 1), depth + 1, inner)
            for group in _BRANCHES.findall(rest):
                for called in re.findall(r"%([\w.\-]+)", group):
                    visit(called, times, depth + 1, scope)

    if entry:
        visit(entry, 1, 0, set())
    if with_sources:
        for kind in KINDS:
            out[kind]["sources"] = dict(sources[kind].most_common())
    return out


def _condition_trip_count(lines: list[str]) -> int | None:
    """N of a loop condition `counter < N` with N an integer constant (TPU HLO states no
    known_trip_count: scans and windowed matmuls count from 0 to N), or None."""
    constants = {}
    for line in lines:
        found = re.match(r"\s*%([\w.\-]+) = [su](?:8|16|32|64)\[\]\S* constant\((\d+)\)", line)
        if found:
            constants[found[1]] = int(found[2])
    for line in lines:
        if line.lstrip().startswith("ROOT") and "compare(" in line and "direction=LT" in line:
            operands = re.findall(r"%([\w.\-]+)", line.split("compare(", 1)[1].split(")", 1)[0])
            if len(operands) == 2 and operands[1] in constants:
                return constants[operands[1]]
    return None


def pallas_kernels(hlo: str) -> int:
    """How many Pallas (Mosaic) kernel calls a compiled TPU program holds (splash attention)."""
    return len(re.findall(r'custom_call_target="tpu_custom_call"', hlo))


def _operand_bytes(operands: str, lines: list[str]) -> int:
    """Bytes of the named operands of an instruction, looked up in its computation."""
    names = re.findall(r"%([\w.\-]+)", operands.split("),", 1)[0])
    total = 0
    for line in lines:
        parts = _split_instruction(line)
        if parts and parts[0] in names:
            total += type_bytes(parts[1])
    return total


def _project_frame(stack: list[str]) -> str | None:
    for frame in stack:
        if "editmgt_jax/" in frame and "editmgt_jax/aot/" not in frame:
            return frame[frame.index("editmgt_jax/") :]
    return None


# --- FLOPs and time -------------------------------------------------------------------------------


def _positions(info: dict) -> int:
    """Sequence length through the blocks: image + source positions after the token path + text."""
    t = info["transformer"]
    image = (info["grid"] // t["token_stride"]) ** 2
    return 2 * image + int(info["text_len"])


def model_flops(name: str, info: dict) -> float | None:
    """Our FLOP count of one call of program `name` (None where we keep none: XLA's is used)."""
    if name == "train":
        t, s = info["transformer"], _positions(info)
        attention = 12 * s**2 * t["inner_dim"] * t["num_blocks"]
        return float(info["batch"] * (6 * info["params"] * s + attention))
    if name == "edit":
        t, s = info["transformer"], _positions(info)
        attention = 4 * s**2 * t["inner_dim"] * t["num_blocks"]
        per_call = 2 * info["params"] * s + attention
        return float(info["steps"] * info["model_batch"] * per_call)
    return None


def hardware_flops(name: str, info: dict, flops: float) -> float:
    """FLOPs the chips execute: with remat the forward runs again in the backward (8/6)."""
    if name == "train" and info.get("remat_policy", "none") != "none":
        return flops * 8.0 / 6.0
    return flops


def hbm_traffic_bytes(name: str, info: dict, memory: dict[str, int], devices: int) -> float:
    """A lower bound on one device's HBM reads + writes per call, from our counts.

    train: the optimizer reads and writes params, both moments and EMA, reads the gradients
    (state x 2 + params); each pass over the weights (forward, backward; + the remat forward)
    reads the gathered weights once; every temporary is written and read once.
    edit: per step the weights once and the temporaries twice.
    Others: arguments + outputs + 2 x temporaries.
    """
    temps = 2 * memory["temporaries"]
    if name == "train":
        passes = 3 if info.get("remat_policy", "none") != "none" else 2
        gathered = info["param_bytes_per_device"] * info.get("fsdp", 1)
        state = info["state_bytes_per_device"]
        return float(2 * state + info["param_bytes_per_device"] + passes * gathered + temps)
    if name == "edit":
        weights = info["param_bytes_per_device"]
        return float(info["steps"] * (weights + temps))
    return float(memory["arguments"] + memory["outputs"] + temps)


def roofline(
    topology: Topology,
    flops_per_device: float,
    hbm_bytes: float,
    collective_bytes: float,
) -> dict[str, Any]:
    """Seconds of compute at bf16 peak, HBM traffic at bandwidth and collectives at ICI
    bandwidth (one device's share); the estimate is their max (perfect overlap)."""
    chip = topology.chip
    per_core = chip.cores_per_chip
    terms = dict(
        compute_s=flops_per_device / topology.peak_flops_per_device,
        hbm_s=hbm_bytes / (chip.hbm_bytes_per_s / per_core),
        collective_s=collective_bytes / (chip.ici_bytes_per_s / per_core),
    )
    bound = max(terms, key=terms.get)
    return dict(
        **{k: round(v, 6) for k, v in terms.items()},
        estimated_step_s=round(terms[bound], 6),
        no_overlap_s=round(sum(terms.values()), 6),
        bound=bound.removesuffix("_s"),
    )
