"""An independent numpy forward of transformers' CLIPVisionModelWithProjection, ViTModel and
Dinov2Model, read straight from their state-dict keys (NCHW pixels, PyTorch layouts), for
checking our Flax backbones on shapes the torch fixtures do not cover.

It is written from transformers' modeling code (4.47), not from ours: per-pixel loops for the
bicubic position interpolation, patches by reshaping, attention per head. Its own correctness is
checked against the torch fixtures (tests/test_backbones.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

A = -0.75  # PyTorch's bicubic coefficient


def _act(name: str, x: np.ndarray) -> np.ndarray:
    if name in ("gelu", "gelu_python"):
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "relu":
        return np.maximum(x, 0.0)
    raise ValueError(name)


def _ln(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _linear(x, state, key, bias=True):
    y = x @ state[f"{key}.weight"].T
    return y + state[f"{key}.bias"] if bias and f"{key}.bias" in state else y


def _cubic(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return ((A + 2) * x - (A + 3)) * x * x + 1
    if x < 2:
        return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    return 0.0


def torch_bicubic(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """[h, w, D] -> [out_h, out_w, D] as F.interpolate(bicubic, align_corners=False, size=)."""
    h, w, _ = grid.shape
    out = np.zeros((out_h, out_w, grid.shape[2]))
    for oy in range(out_h):
        sy = (oy + 0.5) * h / out_h - 0.5
        y0 = math.floor(sy)
        for ox in range(out_w):
            sx = (ox + 0.5) * w / out_w - 0.5
            x0 = math.floor(sx)
            acc = 0.0
            for dy in range(-1, 3):
                wy = _cubic(sy - (y0 + dy))
                yy = min(max(y0 + dy, 0), h - 1)
                for dx in range(-1, 3):
                    wx = _cubic(sx - (x0 + dx))
                    xx = min(max(x0 + dx, 0), w - 1)
                    acc = acc + wy * wx * grid[yy, xx]
            out[oy, ox] = acc
    return out


def _positions(table: np.ndarray, grid_h: int, grid_w: int, height: int, width: int):
    """[1 + N, D] -> [1 + gh * gw, D], interpolating unless the trained grid at a square input."""
    num = table.shape[0] - 1
    if grid_h * grid_w == num and height == width:
        return table
    side = int(round(math.sqrt(num)))
    patch = torch_bicubic(table[1:].reshape(side, side, -1), grid_h, grid_w)
    return np.concatenate([table[:1], patch.reshape(grid_h * grid_w, -1)], axis=0)


def _attention(x, state, prefix, names, heads, bias):
    b, t, d = x.shape
    q = _linear(x, state, f"{prefix}.{names[0]}", bias)
    k = _linear(x, state, f"{prefix}.{names[1]}", bias)
    v = _linear(x, state, f"{prefix}.{names[2]}", bias)
    hd = d // heads
    split = lambda y: y.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
    logits = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(hd)
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    out = (probs @ split(v)).transpose(0, 2, 1, 3).reshape(b, t, d)
    return out, k


def _patches(pixels, weight, bias):
    b, c, height, width = pixels.shape
    d, _, p, _ = weight.shape
    gh, gw = height // p, width // p
    x = pixels[:, :, : gh * p, : gw * p].reshape(b, c, gh, p, gw, p)
    x = x.transpose(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
    y = x @ weight.reshape(d, c * p * p).T
    return (y if bias is None else y + bias), gh, gw


def forward(kind: str, config: dict, state: dict, pixels: np.ndarray) -> dict:
    """pixels float [B, C, H, W] -> dict of float64 outputs (as transformers names them)."""
    state = {k: np.asarray(v, np.float64) for k, v in state.items()}
    pixels = np.asarray(pixels, np.float64)
    b, _, height, width = pixels.shape
    if kind == "clip":
        cfg = config.get("vision_config", config) if config.get("model_type") == "clip" else config
        pre = "vision_model."
        emb, gh, gw = _patches(pixels, state[pre + "embeddings.patch_embedding.weight"], None)
        cls = np.broadcast_to(state[pre + "embeddings.class_embedding"], (b, 1, emb.shape[-1]))
        table = state[pre + "embeddings.position_embedding.weight"]
        x = np.concatenate([cls, emb], 1) + _positions(table, gh, gw, height, width)
        x = _ln(
            x,
            state[pre + "pre_layrnorm.weight"],
            state[pre + "pre_layrnorm.bias"],
            cfg["layer_norm_eps"],
        )
        keys = None
        for i in range(cfg["num_hidden_layers"]):
            p = f"{pre}encoder.layers.{i}"
            h = _ln(
                x,
                state[f"{p}.layer_norm1.weight"],
                state[f"{p}.layer_norm1.bias"],
                cfg["layer_norm_eps"],
            )
            a, keys = _attention(
                h,
                state,
                f"{p}.self_attn",
                ("q_proj", "k_proj", "v_proj"),
                cfg["num_attention_heads"],
                True,
            )
            x = x + _linear(a, state, f"{p}.self_attn.out_proj")
            h = _ln(
                x,
                state[f"{p}.layer_norm2.weight"],
                state[f"{p}.layer_norm2.bias"],
                cfg["layer_norm_eps"],
            )
            x = x + _linear(
                _act(cfg["hidden_act"], _linear(h, state, f"{p}.mlp.fc1")), state, f"{p}.mlp.fc2"
            )
        pooled = _ln(
            x[:, 0],
            state[pre + "post_layernorm.weight"],
            state[pre + "post_layernorm.bias"],
            cfg["layer_norm_eps"],
        )
        embeds = pooled @ state["visual_projection.weight"].T
        return dict(last_hidden_state=x, image_embeds=embeds, last_layer_keys=keys)

    dinov2 = kind == "dinov2"
    eps = config["layer_norm_eps"]
    bias_qkv = config.get("qkv_bias", True)
    emb, gh, gw = _patches(
        pixels,
        state["embeddings.patch_embeddings.projection.weight"],
        state["embeddings.patch_embeddings.projection.bias"],
    )
    cls = np.broadcast_to(state["embeddings.cls_token"][0], (b, 1, emb.shape[-1]))
    table = state["embeddings.position_embeddings"][0]
    x = np.concatenate([cls, emb], 1) + _positions(table, gh, gw, height, width)
    keys = None
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        n1, n2 = ("norm1", "norm2") if dinov2 else ("layernorm_before", "layernorm_after")
        h = _ln(x, state[f"{p}.{n1}.weight"], state[f"{p}.{n1}.bias"], eps)
        a, keys = _attention(
            h,
            state,
            f"{p}.attention.attention",
            ("query", "key", "value"),
            config["num_attention_heads"],
            bias_qkv,
        )
        a = _linear(a, state, f"{p}.attention.output.dense")
        if dinov2:
            a = a * state[f"{p}.layer_scale1.lambda1"]
        x = x + a
        h = _ln(x, state[f"{p}.{n2}.weight"], state[f"{p}.{n2}.bias"], eps)
        if dinov2 and config.get("use_swiglu_ffn"):
            both = _linear(h, state, f"{p}.mlp.weights_in")
            x1, x2 = np.split(both, 2, axis=-1)
            h = _linear(x1 / (1.0 + np.exp(-x1)) * x2, state, f"{p}.mlp.weights_out")
        elif dinov2:
            h = _linear(
                _act(config["hidden_act"], _linear(h, state, f"{p}.mlp.fc1")), state, f"{p}.mlp.fc2"
            )
        else:
            h = _linear(
                _act(config["hidden_act"], _linear(h, state, f"{p}.intermediate.dense")),
                state,
                f"{p}.output.dense",
            )
        if dinov2:
            h = h * state[f"{p}.layer_scale2.lambda1"]
        x = x + h
    last = _ln(x, state["layernorm.weight"], state["layernorm.bias"], eps)
    return dict(
        last_hidden_state=last, pooler_output=last[:, 0], cls=last[:, 0], last_layer_keys=keys
    )
