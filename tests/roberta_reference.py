#!/usr/bin/python3
"""Reference RoBERTa encoder for worker/roberta_test.cc.

Written from the published RoBERTa definition (Liu et al. 2019; Hugging Face's modeling_roberta:
RobertaEmbeddings, RobertaSelfAttention, RobertaSelfOutput, RobertaIntermediate, RobertaOutput),
independently of the C++ implementation, with plain torch tensor operations (Debian:
python3-torch; `transformers` is not used).

    roberta_reference.py --out DIR [--hidden 32 --layers 2 --heads 4 --intermediate 64
                          --vocab 300 --positions 40 --pad 1 --seed 0]

Writes
  DIR/roberta.safetensors  random weights under Hugging Face's names (roberta.embeddings.*,
                           roberta.encoder.layer.N.*), plus a pooler and an LM head that a
                           warm start must ignore, float32;
  DIR/reference.json       {"shape": {...}, "tokens": [[...]], "hidden": [[[...]]]}: a batch of
                           token rows padded with --pad (row lengths differ, every row starts
                           with <s> = 0 and ends with </s> = 2) and the encoder's last hidden
                           state for every position, computed in float64.
"""
import argparse
import json
import math
import os
import struct

import torch


def save_safetensors(path, tensors):
    """The safetensors format: u64 header length, JSON header, row-major little-endian data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def linear(x, w, prefix):
    return x @ w[prefix + ".weight"].t() + w[prefix + ".bias"]


def roberta_forward(w, tokens, heads, pad):
    """Last hidden states (B, L, H) of RoBERTa for int64 `tokens` (B, L)."""
    p = "roberta."
    mask = (tokens != pad).long()
    # create_position_ids_from_input_ids: positions count from padding_idx + 1.
    positions = torch.cumsum(mask, dim=1) * mask + pad
    x = (w[p + "embeddings.word_embeddings.weight"][tokens] +
         w[p + "embeddings.position_embeddings.weight"][positions] +
         w[p + "embeddings.token_type_embeddings.weight"][torch.zeros_like(tokens)])
    x = layer_norm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"])
    b, l, h = x.shape
    d = h // heads
    # The extended attention mask: a large negative number added to the scores of pad keys.
    additive = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    n = 0
    while (p + "encoder.layer.%d.attention.self.query.weight" % n) in w:
        q = "%sencoder.layer.%d." % (p, n)

        def heads_of(t):
            return t.view(b, l, heads, d).permute(0, 2, 1, 3)

        query = heads_of(linear(x, w, q + "attention.self.query"))
        key = heads_of(linear(x, w, q + "attention.self.key"))
        value = heads_of(linear(x, w, q + "attention.self.value"))
        scores = query @ key.transpose(-1, -2) / math.sqrt(d) + additive
        probs = torch.softmax(scores, dim=-1)
        context = (probs @ value).permute(0, 2, 1, 3).reshape(b, l, h)
        attn = layer_norm(linear(context, w, q + "attention.output.dense") + x,
                          w[q + "attention.output.LayerNorm.weight"], w[q + "attention.output.LayerNorm.bias"])
        inter = gelu(linear(attn, w, q + "intermediate.dense"))
        x = layer_norm(linear(inter, w, q + "output.dense") + attn,
                       w[q + "output.LayerNorm.weight"], w[q + "output.LayerNorm.bias"])
        n += 1
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--positions", type=int, default=40)
    ap.add_argument("--pad", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(a.seed)

    def rand(*shape, scale=0.3, mean=0.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale + mean

    h, i = a.hidden, a.intermediate
    w = {
        "roberta.embeddings.word_embeddings.weight": rand(a.vocab, h, scale=1.0),
        "roberta.embeddings.position_embeddings.weight": rand(a.positions, h, scale=1.0),
        "roberta.embeddings.token_type_embeddings.weight": rand(1, h, scale=1.0),
        "roberta.embeddings.LayerNorm.weight": rand(h, scale=0.2, mean=1.0),
        "roberta.embeddings.LayerNorm.bias": rand(h, scale=0.2),
    }
    for n in range(a.layers):
        q = "roberta.encoder.layer.%d." % n
        for name, (rows, cols) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                                   "attention.self.value": (h, h), "attention.output.dense": (h, h),
                                   "intermediate.dense": (i, h), "output.dense": (h, i)}.items():
            w[q + name + ".weight"] = rand(rows, cols, scale=1.0 / math.sqrt(cols))
            w[q + name + ".bias"] = rand(rows, scale=0.1)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[q + name + ".weight"] = rand(h, scale=0.2, mean=1.0)
            w[q + name + ".bias"] = rand(h, scale=0.2)
    # Tensors a warm start ignores by name: Hugging Face's pooler and masked-LM head.
    w["roberta.pooler.dense.weight"] = rand(h, h)
    w["roberta.pooler.dense.bias"] = rand(h)
    w["lm_head.dense.weight"] = rand(h, h)
    w["lm_head.dense.bias"] = rand(h)
    w["lm_head.layer_norm.weight"] = rand(h)
    w["lm_head.layer_norm.bias"] = rand(h)
    w["lm_head.bias"] = rand(a.vocab)
    # The file holds float32: the reference computes from exactly those values, in float64.
    w = {k: v.to(torch.float32).to(torch.float64) for k, v in w.items()}

    lengths = [12, 5, 9, 3]
    width = max(lengths)
    rows = []
    for n in lengths:
        body = torch.randint(4, a.vocab, (n - 2,), generator=g).tolist()
        rows.append([0] + body + [2] + [a.pad] * (width - n))
    tokens = torch.tensor(rows, dtype=torch.int64)
    hidden = roberta_forward(w, tokens, a.heads, a.pad)

    os.makedirs(a.out, exist_ok=True)
    save_safetensors(os.path.join(a.out, "roberta.safetensors"), w)
    shape = {"hidden": h, "layers": a.layers, "heads": a.heads, "intermediate": i, "vocab": a.vocab,
             "positions": a.positions, "pad": a.pad}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump({"shape": shape, "tokens": rows, "hidden": hidden.tolist()}, f)


if __name__ == "__main__":
    main()
