#!/usr/bin/python3
"""Reference byte-level BPE (GPT-2 / RoBERTa) for sharding/bpe_tokenizer_test.cc.

Written from the published GPT-2 algorithm (encoder.py: bytes_to_unicode, the pre-tokenisation
regex, bpe()), independently of the C++ implementation. Needs only the standard library and
the `regex` module (Debian: python3-regex) for \\p{L} and \\p{N}.

    bpe_reference.py --corpus CAPTIONS.txt --merges 400 --out DIR [--max-length 16]

1. Trains a byte-level BPE vocabulary on the corpus (one caption per line): the pre-tokens of
   every caption, as byte-to-unicode strings, are counted; then, --merges times, the most
   frequent adjacent pair (ties: the smallest pair in code point order) is merged everywhere.
   Stops early when no pair occurs twice.
2. Writes DIR/vocab.json (<s> 0, <pad> 1, </s> 2, <unk> 3, the 256 byte symbols in byte order,
   the merge results in merge order, <mask> last), DIR/merges.txt ("#version: 0.2" then one
   "a b" per line, by rank) and DIR/tokenizer.json (the same vocabulary and merges as a
   Hugging Face BPE model, merges as ["a", "b"] pairs).
3. Encodes, RoBERTa style (<s> ids </s>), every caption, every two consecutive captions joined
   by a newline (the first 400), and 600 random strings drawn from letters of many scripts,
   digits, combining marks, emoji, punctuation, apostrophes and every kind of white space;
   writes DIR/cases.json: {"max_length": M, "merges": N, "cases": [{"text", "pieces", "ids",
   "ids_truncated"}]}, where pieces are the pre-tokens of the text and ids_truncated keeps the
   first M - 1 ids and ends with </s> when ids is longer than M.
"""
import argparse
import collections
import json
import os
import random

import regex

PRETOKENIZE = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()


def pretokens(text):
    """The pre-tokens of text, each as its string of byte symbols."""
    return ["".join(BYTE_ENCODER[b] for b in tok.encode("utf-8")) for tok in PRETOKENIZE.findall(text)]


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def merge_word(word, first, second):
    """Every occurrence of (first, second) in word merged, left to right (GPT-2's loop)."""
    new_word = []
    i = 0
    while i < len(word):
        try:
            j = word.index(first, i)
        except ValueError:
            new_word.extend(word[i:])
            break
        new_word.extend(word[i:j])
        i = j
        if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
            new_word.append(first + second)
            i += 2
        else:
            new_word.append(word[i])
            i += 1
    return tuple(new_word)


def bpe(token, ranks):
    """GPT-2's bpe(): merges the lowest-ranked adjacent pair until none is ranked."""
    word = tuple(token)
    pairs = get_pairs(word)
    if not pairs:
        return list(word)
    while True:
        bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
        if bigram not in ranks:
            break
        word = merge_word(word, bigram[0], bigram[1])
        if len(word) == 1:
            break
        pairs = get_pairs(word)
    return list(word)


def train(captions, num_merges):
    counts = collections.Counter()
    for caption in captions:
        counts.update(pretokens(caption))
    words = {tuple(w): c for w, c in counts.items()}
    merges = []
    for _ in range(num_merges):
        pair_counts = collections.Counter()
        for word, c in words.items():
            for i in range(len(word) - 1):
                pair_counts[(word[i], word[i + 1])] += c
        if not pair_counts:
            break
        best_count = max(pair_counts.values())
        if best_count < 2:
            break
        best = min(p for p, c in pair_counts.items() if c == best_count)
        merges.append(best)
        words = {merge_word(w, best[0], best[1]): c for w, c in words.items()}
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for b in range(256):
        vocab[BYTE_ENCODER[b]] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return vocab, merges


def encode(text, vocab, ranks, cache):
    ids = [vocab["<s>"]]
    for token in pretokens(text):
        if token not in cache:
            cache[token] = [vocab[piece] for piece in bpe(token, ranks)]
        ids.extend(cache[token])
    ids.append(vocab["</s>"])
    return ids


def random_texts(count, seed):
    rng = random.Random(seed)
    # Characters assigned since Unicode 6 or earlier, so that any recent Unicode database
    # classifies them alike.
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÉÎÕÜŒœŠšŽžĳ",
        "αβγδεζηθλμπσφψωΑΒΓΔΩ",
        "абвгдежзийклмнопрстуфхцчшщыэюяАБВГД",
        "אבגדהוזחטיכלמנסעפצקרשת",
        "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
        "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह\u093f\u0940\u094d",
        "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长",
        "あいうえおかきくけこさしすせそたちつてとなにぬねのアイウエオカキクケコ",
        "가나다라마바사아자차카타파하한국어소리",
        "٠١٢٣٤٥٦٧٨٩０１２３４５６７８９²³¹½¼¾ⅠⅡⅢⅫ①②③",
        "\u0300\u0301\u0302\u0308\u0327\u20dd",
        "🎵🎶🔊🔔🐦🐕🐈🌧🌊🚗🚂✈🔥👏😀😂🙂👍🏽\u200d\ufe0f",
        "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~…—–«»“”‘’¡¿§¶©®°±×÷€£¥",
        "''''''’",
        "sStTmMdDlLrReEvV",
        " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u2003\u200a\u200b\u2028\u2029\u202f\u205f\u3000\u180e",
        "    ",
    ]
    contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 30)):
            if rng.random() < 0.1:
                parts.append(rng.choice(contractions))
            else:
                pool = rng.choice(pools)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--merges", type=int, default=400)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-length", type=int, default=16)
    args = parser.parse_args()

    with open(args.corpus, "rb") as f:
        captions = f.read().decode("utf-8").split("\n")
    if captions and captions[-1] == "":
        captions.pop()

    vocab, merges = train(captions, args.merges)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(args.out, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for t in ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                           "trim_offsets": True, "add_prefix_space": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
                  "byte_fallback": False, "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False, indent=1)

    texts = list(captions)
    texts += [captions[i] + "\n" + captions[i + 1] for i in range(min(400, len(captions) - 1))]
    texts += random_texts(600, seed=35)
    texts += ["", " ", "\n", "<s>", "a</s>b"]
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    cache = {}
    eos = vocab["</s>"]
    cases = []
    for text in texts:
        ids = encode(text, vocab, ranks, cache)
        truncated = ids if len(ids) <= args.max_length else ids[:args.max_length - 1] + [eos]
        cases.append({"text": text, "pieces": PRETOKENIZE.findall(text), "ids": ids,
                      "ids_truncated": truncated})
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"max_length": args.max_length, "merges": len(merges), "cases": cases}, f)
    print(f"{len(merges)} merges, vocab {len(vocab)}, {len(cases)} cases")


if __name__ == "__main__":
    main()
