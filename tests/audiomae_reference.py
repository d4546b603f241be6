#!/usr/bin/env python3
"""An AudioMAE encoder written from AudioMAE's published code (util/pos_embed.py and
models_mae.py: a 1-channel 16x16 convolution as patch embedding over (B, 1, T, F) input, fixed
2-D sin-cos positions from get_2d_sincos_pos_embed_flexible, timm's pre-LN ViT blocks, a final
LayerNorm), used to check the worker's AudioMAE warm start (worker/warm_start_test.cc).

Writes, into the folder given as the only argument:
  audiomae.safetensors  random weights in AudioMAE's (timm's) tensor names, with the position
                        table, class token, mask token and a decoder tensor, as a pre-trained
                        AudioMAE file holds them;
  io.safetensors        "spec" (2, T, F) random input, "pos" (N, D) the position table without
                        its class row, and "pooled" (2, D), the mean over the patch tokens of the
                        encoder's output (after its LayerNorm), computed without the class token
                        (the worker's encoder has none).
Shape: T = 64 frames, F = 32 mel bins, patch 16 (a 4 x 2 grid), width 32, 2 blocks of 2 heads,
MLP ratio 4. Only numpy and torch (python3-torch) are used.
"""
import json
import struct
import sys

import numpy as np
import torch

T, F, P, D, DEPTH, HEADS, MLP = 64, 32, 16, 32, 2, 2, 4


# ---- util/pos_embed.py (AudioMAE), as published ----
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000 ** omega
    pos = pos.reshape(-1)
    out = np.einsum("m,d->md", pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_2d_sincos_pos_embed_flexible(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size[0], dtype=np.float32)
    grid_w = np.arange(grid_size[1], dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size[0], grid_size[1]])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


# ---- the encoder (models_mae.py's forward_encoder without masking and class token) ----
def block(x, w, i):
    def ln(t, name):
        return torch.nn.functional.layer_norm(t, (D,), w[name + ".weight"], w[name + ".bias"], eps=1e-6)

    def lin(t, name):
        return torch.nn.functional.linear(t, w[name + ".weight"], w[name + ".bias"])

    p = "blocks.%d." % i
    b, n, _ = x.shape
    h = ln(x, p + "norm1")
    qkv = lin(h, p + "attn.qkv").reshape(b, n, 3, HEADS, D // HEADS).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q @ k.transpose(-2, -1)) * (D // HEADS) ** -0.5
    h = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, D)
    x = x + lin(h, p + "attn.proj")
    h = lin(torch.nn.functional.gelu(lin(ln(x, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2")
    return x + h


def encode(spec, w, pos):
    x = torch.nn.functional.conv2d(spec.unsqueeze(1), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=P)
    x = x.flatten(2).transpose(1, 2)  # (B, N, D), time-major
    x = x + pos
    for i in range(DEPTH):
        x = block(x, w, i)
    x = torch.nn.functional.layer_norm(x, (D,), w["norm.weight"], w["norm.bias"], eps=1e-6)
    return x.mean(dim=1)


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().contiguous().to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for c in chunks:
            f.write(c)


def main():
    out = sys.argv[1]
    torch.manual_seed(11)
    w = {
        "patch_embed.proj.weight": torch.randn(D, 1, P, P) * 0.05,
        "patch_embed.proj.bias": torch.randn(D) * 0.05,
        "norm.weight": 1 + 0.1 * torch.randn(D),
        "norm.bias": 0.1 * torch.randn(D),
    }
    for i in range(DEPTH):
        p = "blocks.%d." % i
        for name, shape in [("norm1", (D,)), ("norm2", (D,))]:
            w[p + name + ".weight"] = 1 + 0.1 * torch.randn(shape)
            w[p + name + ".bias"] = 0.1 * torch.randn(shape)
        for name, o, n in [("attn.qkv", 3 * D, D), ("attn.proj", D, D), ("mlp.fc1", MLP * D, D), ("mlp.fc2", D, MLP * D)]:
            w[p + name + ".weight"] = torch.randn(o, n) * n ** -0.5
            w[p + name + ".bias"] = 0.05 * torch.randn(o)
    grid = (T // P, F // P)
    pos_with_cls = torch.from_numpy(get_2d_sincos_pos_embed_flexible(D, grid, cls_token=True)).float()
    pos = pos_with_cls[1:]
    spec = torch.randn(2, T, F)
    with torch.no_grad():
        pooled = encode(spec, w, pos)
    saved = dict(w)
    saved["pos_embed"] = pos_with_cls.unsqueeze(0)
    saved["cls_token"] = torch.randn(1, 1, D)
    saved["mask_token"] = torch.randn(1, 1, D)
    saved["decoder_embed.weight"] = torch.randn(16, D)
    write_safetensors(out + "/audiomae.safetensors", saved)
    write_safetensors(out + "/io.safetensors", {"spec": spec, "pos": pos, "pooled": pooled})


if __name__ == "__main__":
    main()
