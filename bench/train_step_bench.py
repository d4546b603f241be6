#!/usr/bin/python3
"""Plain PyTorch FLAP training step: the baseline for bench/train_step_bench.cc.

The same architecture as worker/core/model.cc (pre-LN ViT audio encoder over 16x16 patches with
token dropping, pre-LN text transformer, MLP projections, symmetric InfoNCE, reconstruction
decoder fed by the per-sample audio embedding, as the worker's default model.recon_source) and the
same AdamW step, written the way a PyTorch
user would. Prints one JSON object per (ratio, strategy) with the mean step-time breakdown.
Run with Debian's interpreter (/usr/bin/python3), which has python3-torch.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, key_pad=None):
        b, l, w = x.shape
        hd = w // self.heads
        qkv = self.qkv(x).reshape(b, l, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (1.0 / math.sqrt(hd)), qkv[1], qkv[2]
        scores = q @ k.transpose(-2, -1)
        if key_pad is not None:
            scores = scores.masked_fill(key_pad.view(b, 1, 1, l), float("-inf"))
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, l, w)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, width, heads, mlp_ratio=4):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x, key_pad=None):
        x = x + self.attn(self.norm1(x), key_pad)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sincos_2d(dim, w, f):
    def one(d, n):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = torch.outer(torch.arange(n, dtype=torch.float64), omega)
        return torch.cat([out.sin(), out.cos()], 1).float()
    t = one(dim // 2, w)[:, None, :].expand(w, f, dim // 2)
    fr = one(dim // 2, f)[None, :, :].expand(w, f, dim // 2)
    return torch.cat([t, fr], 2).reshape(w * f, dim)


def patchify(spec, p):
    b, t, m = spec.shape
    return spec.reshape(b, t // p, p, m // p, p).permute(0, 1, 3, 2, 4).reshape(b, (t // p) * (m // p), p * p)


class Flap(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        w, f = c["frames"] // 16, c["mels"] // 16
        self.patch_embed = nn.Linear(256, c["audio_width"])
        self.register_buffer("audio_pos", sincos_2d(c["audio_width"], w, f))
        self.audio_blocks = nn.ModuleList([Block(c["audio_width"], c["audio_heads"]) for _ in range(c["audio_depth"])])
        self.audio_norm = nn.LayerNorm(c["audio_width"], eps=1e-6)
        self.audio_proj = nn.Sequential(nn.Linear(c["audio_width"], c["embed"]), nn.ReLU(), nn.Linear(c["embed"], c["embed"]))
        self.token_embed = nn.Embedding(c["vocab"], c["text_width"])
        self.text_pos = nn.Parameter(torch.randn(c["text_len"], c["text_width"]) * 0.01)
        self.text_blocks = nn.ModuleList([Block(c["text_width"], c["text_heads"]) for _ in range(c["text_depth"])])
        self.text_norm = nn.LayerNorm(c["text_width"], eps=1e-6)
        self.text_proj = nn.Sequential(nn.Linear(c["text_width"], c["embed"]), nn.ReLU(), nn.Linear(c["embed"], c["embed"]))
        self.decoder_in = nn.Linear(c["embed"], c["dec_width"])  # from the embedding (model.recon_source)
        self.register_buffer("decoder_pos", sincos_2d(c["dec_width"], w, f))
        self.decoder_blocks = nn.ModuleList([Block(c["dec_width"], c["dec_heads"]) for _ in range(c["dec_depth"])])
        self.decoder_norm = nn.LayerNorm(c["dec_width"], eps=1e-6)
        self.decoder_out = nn.Linear(c["dec_width"], 256)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_audio(self, spec, keep):
        x = self.patch_embed(patchify(spec, 16)) + self.audio_pos
        if keep is not None:
            x = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        for blk in self.audio_blocks:
            x = blk(x)
        pooled = self.audio_norm(x).mean(1)
        return pooled, F.normalize(self.audio_proj(pooled), dim=-1)

    def encode_text(self, tokens):
        pad = tokens.eq(0)
        x = self.token_embed(tokens) + self.text_pos[: tokens.shape[1]]
        for blk in self.text_blocks:
            x = blk(x, pad)
        x = self.text_norm(x)
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        return F.normalize(self.text_proj((x * keep).sum(1) / keep.sum(1).clamp_min(1)), dim=-1)

    def decode(self, pooled):
        x = self.decoder_in(pooled).unsqueeze(1) + self.decoder_pos
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_out(self.decoder_norm(x))


def loss_fn(model, spec, tokens, keep, recon_weight):
    _, a = model.encode_audio(spec, keep)
    t = model.encode_text(tokens)
    s = model.logit_scale.exp()
    labels = torch.arange(a.shape[0])
    loss = 0.5 * (F.cross_entropy(s * a @ t.t(), labels) + F.cross_entropy(s * t @ a.t(), labels))
    if recon_weight > 0:
        target = patchify(spec, 16)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        per = (model.decode(a) - target).pow(2).mean(-1)
        if keep is not None:
            dropped = torch.ones_like(per).scatter_(1, keep, 0.0)
            per = (per * dropped).sum() / dropped.sum()
        else:
            per = per.mean()
        loss = loss + recon_weight * per
    return loss


def make_keep(b, ratio, strategy, w, f, gen):
    if ratio == 0:
        return None
    if strategy == "1d":
        kept = w - round(ratio * w)
        cols = torch.stack([torch.randperm(w, generator=gen)[:kept].sort().values for _ in range(b)])
        return (cols.unsqueeze(-1) * f + torch.arange(f)).reshape(b, kept * f)
    n = w * f
    kept = n - round(ratio * n)
    return torch.stack([torch.randperm(n, generator=gen)[:kept].sort().values for _ in range(b)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ratios", default="0,0.5,0.75")
    ap.add_argument("--strategies", default="2d,1d")
    ap.add_argument("--recon-weight", type=float, default=0.5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = dict(frames=256, mels=128, audio_width=192, audio_depth=4, audio_heads=3, text_width=192, text_depth=2,
             text_heads=3, text_len=32, vocab=256, embed=128, dec_width=128, dec_depth=1, dec_heads=4)
    model = Flap(c)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(1)
    w, f = c["frames"] // 16, c["mels"] // 16
    spec = torch.randn(args.batch, c["frames"], c["mels"])
    # Captions of 6-16 tokens, like the synthetic ones, zero-padded to the maximum length.
    tokens = torch.zeros(args.batch, c["text_len"], dtype=torch.long)
    for i in range(args.batch):
        n = 6 + (i * 7) % 11
        tokens[i, :n] = torch.tensor([4 + (i * 31 + j * 17) % 250 for j in range(n)])
    for strategy in args.strategies.split(","):
        for ratio in [float(r) for r in args.ratios.split(",")]:
            fwd = bwd = optim = enc = 0.0
            for i in range(args.warmup + args.steps):
                keep = make_keep(args.batch, ratio, strategy, w, f, gen)
                t0 = time.perf_counter()
                opt.zero_grad()
                loss = loss_fn(model, spec, tokens, keep, args.recon_weight)
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                t3 = time.perf_counter()
                # The audio encoder alone, forward + backward.
                model.zero_grad()
                t4 = time.perf_counter()
                model.encode_audio(spec, keep)[1].sum().backward()
                t5 = time.perf_counter()
                if i >= args.warmup:
                    fwd += t1 - t0
                    bwd += t2 - t1
                    optim += t3 - t2
                    enc += t5 - t4
            n = args.steps
            step = (fwd + bwd + optim) / n
            print(json.dumps(dict(strategy=strategy, ratio=ratio, step_s=step, forward_s=fwd / n, backward_s=bwd / n,
                                  optimizer_s=optim / n, encoder_fwd_bwd_s=enc / n,
                                  samples_per_s=args.batch / step)), flush=True)


if __name__ == "__main__":
    main()
