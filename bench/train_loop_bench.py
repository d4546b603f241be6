#!/usr/bin/python3
"""Plain PyTorch FLAP training loop: the baseline of bench/train_loop_bench.cc.

The model, losses and AdamW step of bench/train_step_bench.py (the worker's architecture), in
the loop a PyTorch user writes: features precomputed once (exported by train_loop_bench from the
worker's front end), a shuffled epoch of batches, one random caption per clip, random keep sets
for the masked patches, warm-up + cosine learning rate, evaluation (text-to-audio and
audio-to-text retrieval on the val split) every --eval-every steps. Trains until --seconds of
training (evaluations excluded) are spent. Prints one JSON line per evaluation and a last one
with the loop's samples/s. Run with Debian's interpreter (/usr/bin/python3, python3-torch).
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_bench import Flap, loss_fn, make_keep  # noqa: E402


def read(path, dtype, shape):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    return torch.frombuffer(data, dtype=dtype).reshape(shape)


def load_split(d, split, meta):
    n, c = meta[split]["clips"], meta[split]["captions"]
    spec = read(f"{d}/{split}_spec.f32", torch.float32, (n, meta["frames"], meta["mels"]))
    tokens = read(f"{d}/{split}_tokens.i64", torch.int64, (c, meta["text_len"]))
    owner = read(f"{d}/{split}_caption_clip.i64", torch.int64, (c,))
    return spec, tokens, owner


def trim(tokens):
    # As wide as the longest caption of the batch (padding is masked in attention and pooling).
    width = max(1, int(tokens.ne(0).sum(1).max()))
    return tokens[:, :width]


def learning_rate(step, lr, min_lr, warmup, total):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def evaluate(model, spec, tokens, owner, batch):
    model.eval()
    audio = torch.cat([model.encode_audio(spec[i:i + batch], None)[1] for i in range(0, len(spec), batch)])
    text = torch.cat([model.encode_text(trim(tokens[i:i + batch])) for i in range(0, len(tokens), batch)])
    model.train()
    sim = text @ audio.t()  # captions x clips
    true = sim.gather(1, owner.unsqueeze(1))
    t2a = (sim >= true).sum(1) - 1  # other clips scoring at least the true one
    # audio -> text: each clip's rank is the best of its true captions' ranks.
    sim_a = sim.t()
    a2t = []
    for c in range(len(spec)):
        mine = owner.eq(c)
        best = sim_a[c][mine].max()
        a2t.append(int((sim_a[c][~mine] >= best).sum()))
    a2t = torch.tensor(a2t)
    return {"t2a_r1": float((t2a < 1).float().mean()), "t2a_r10": float((t2a < 10).float().mean()),
            "a2t_r1": float((a2t < 1).float().mean()), "a2t_r10": float((a2t < 10).float().mean())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True)
    ap.add_argument("--ratio", type=float, default=0.0)
    ap.add_argument("--strategy", default="2d")
    ap.add_argument("--recon-weight", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--total-steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    meta = json.load(open(f"{args.features}/meta.json"))
    train_spec, train_tokens, train_owner = load_split(args.features, "train", meta)
    eval_spec, eval_tokens, eval_owner = load_split(args.features, "val", meta)
    # Each clip's captions, to draw one per clip and step.
    captions = [[] for _ in range(len(train_spec))]
    for i, c in enumerate(train_owner.tolist()):
        captions[c].append(i)
    c = dict(frames=meta["frames"], mels=meta["mels"], audio_width=192, audio_depth=4, audio_heads=3,
             text_width=192, text_depth=2, text_heads=3, text_len=meta["text_len"], vocab=meta["vocab"], embed=128,
             dec_width=128, dec_depth=1, dec_heads=4)
    model = Flap(c)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in ("token_embed.weight", "text_pos")]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in ("token_embed.weight", "text_pos"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    gen = torch.Generator().manual_seed(args.seed)
    w, f = c["frames"] // 16, c["mels"] // 16
    step, trained, samples = 0, 0.0, 0
    steps_per_epoch = len(train_spec) // args.batch
    while trained < args.seconds:
        order = torch.randperm(len(train_spec), generator=gen)
        for b in range(steps_per_epoch):
            if trained >= args.seconds:
                break
            t0 = time.perf_counter()
            idx = order[b * args.batch:(b + 1) * args.batch]
            pick = [captions[i][int(torch.randint(len(captions[i]), (1,), generator=gen))] for i in idx.tolist()]
            spec, tokens = train_spec[idx], trim(train_tokens[pick])
            keep = make_keep(len(idx), args.ratio, args.strategy, w, f, gen)
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, args.lr, args.min_lr, args.warmup, args.total_steps)
            opt.zero_grad()
            loss = loss_fn(model, spec, tokens, keep, args.recon_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            trained += time.perf_counter() - t0
            step += 1
            samples += len(idx)
            if step % args.eval_every == 0 or trained >= args.seconds:
                m = evaluate(model, eval_spec, eval_tokens, eval_owner, args.eval_batch)
                print(json.dumps(dict(step=step, train_seconds=trained, loss=float(loss), **m)), flush=True)
    print(json.dumps(dict(steps=step, train_seconds=trained, samples_per_second=samples / trained)), flush=True)


if __name__ == "__main__":
    main()
