#!/usr/bin/env python3
"""Writes the expected values that fedkd's C tests compare against, from the
Hugging Face reference implementations reading the same GGUF file. CI runs
only the C side; this script is run by hand when the model or the texts change:

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install tokenizers transformers gguf torch accelerate
    /tmp/ref/bin/python tests/reference/make_expected.py [MODEL.gguf] [--no-logits]

Outputs (small text files, committed, next to this script):
  tokenizer_text.txt      the varied test text (prose, code, numbers, white
                          space runs, non-Latin scripts, emoji)
  tokenizer_ids.txt       its ids from `tokenizers`, one per line; special
                          token names in the text are ordinary text
  tokenizer_special.txt   a chat-formatted text, then a line "--", then its
                          ids with the special tokens recognised
  tokenizer_random.txt    a random text from pools of white space, numbers,
  tokenizer_random_ids.txt  scripts, combining marks and emoji, and its ids
  logits_topk.txt         for a few texts: "text <i> <n_tokens>", the ids, then
                          per position "pos logsumexp id:logit ..." (top K of
                          transformers' fp32 forward pass over the dequantized
                          GGUF weights)

The tokenizer is built explicitly with `tokenizers` from the GGUF's
vocabulary and merges, with SmolLM2's own pre-tokenizer (digits split one by
one, then GPT-2's byte-level pattern); transformers' GGUF loader is checked to
give the same ids.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOP_K = 20

TEXT = (
    "The quick brown fox jumps over the lazy dog. It's a well-known pangram; "
    "we've used it since 1885, and they'll keep using it — won't they?\n\n"
    "Numbers: 0, 7, 42, 3.14159, -273.15, 1,000,000 and 2026-11-25T08:45:00Z; "
    "phone +1 (555) 010-9999; ½ ¾ ² ٣ ४ ൬.\n"
    "Code:\n"
    "def fib(n: int) -> int:\n"
    "    if n < 2:\n"
    "        return n\n"
    "    return fib(n - 1) + fib(n - 2)\n\n"
    "for (int i = 0; i < 10; i++) { printf(\"%d\\n\", i * i); }\n"
    "\t\tTabs\tand   runs   of    spaces     here.  \n"
    "   \n\n\n  Trailing and leading white space.   \r\n"
    "Deutsch: Größe, Straße, Übermäßig. Français : déjà vu, garçon, Noël !\n"
    "Русский: Съешь же ещё этих мягких французских булок.\n"
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.\n"
    "中文：我能吞下玻璃而不伤身体。日本語：私はガラスを食べられます。\n"
    "한국어: 나는 유리를 먹을 수 있어요. العربية: أنا قادر على أكل الزجاج.\n"
    "हिन्दी: मैं काँच खा सकता हूँ। עברית: אני יכול לאכול זכוכית.\n"
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ — done!!! ??? ... '''quoted''' \"double\"\n"
    "URLs: https://example.com/path?q=1&r=two#frag, e-mail: someone@example.org\n"
    "Special-looking text: <|im_start|>user<|im_end|> <|endoftext|>\n"
    "I'M SHOUTING, you're whispering, THEY'LL see. O'Neil's 'quote's.\n"
)

SPECIAL_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
)

LOGIT_TEXTS = [
    "The capital of France is Paris. The capital of Germany is",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
]


# Pools of characters for a random text that stresses the pre-tokenizer:
# every kind of white space, contractions, Unicode numbers (digits are split
# one by one), combining marks, ZWJ emoji sequences, supplementary planes.
RANDOM_POOLS = [
    " \t\n\r\x0b\x0c\u00a0\u2000\u3000\u0085",
    "abcdefXYZ'sretvmld",
    "0123456789\u00bd\u00b2\u0663\u096a\u0d6c\u216b",
    "!?.,;:-_()[]{}<>|@#$%^&*+=~`\"\\/",
    "\u00e9\u00e0\u00fc\u00df\u00e7\u00f1\u00f8\u00e5\u0153\u00e6",
    "\u0436\u0449\u042e\u042f\u0430\u0431\u0432",
    "\u4e2d\u6587\u5b57\u65e5\u672c\u8a9e\ud55c\uad6d\uc5b4",
    "\U0001F600\U0001F389\U0001F44D\U0001F3FD\u2764\ufe0f\u2728\u200d",
    "\u0301\u200d\ufe0f\u2170\u2171\U00010000\U000E0001",
]


def random_text(segments=700, seed=5):
    import random

    rng = random.Random(seed)
    parts = []
    for _ in range(segments):
        pool = rng.choice(RANDOM_POOLS)
        parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 12))))
        if rng.random() < 0.3:
            parts.append(" ")
    return "".join(parts)


def gguf_tokenizer_tables(path):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = strings("tokenizer.ggml.merges")
    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    return tokens, merges, types


def build_tokenizer(path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens, merges, types = gguf_tokenizer_tables(path)
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False)
                for t, ty in zip(tokens, types) if ty in (3, 4)]
    tok.add_special_tokens(specials)
    return tok


def write_lines(name, lines):
    with open(os.path.join(HERE, name), "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(f"{line}\n")


def tokenizer_expected(path):
    tok = build_tokenizer(path)
    tok.encode_special_tokens = True   # special token names are plain text here
    ids = tok.encode(TEXT, add_special_tokens=False).ids
    assert tok.decode(ids) == TEXT, "reference tokenizer does not round-trip"
    with open(os.path.join(HERE, "tokenizer_text.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(TEXT)
    write_lines("tokenizer_ids.txt", ids)
    tok.encode_special_tokens = False
    sids = tok.encode(SPECIAL_TEXT, add_special_tokens=False).ids
    with open(os.path.join(HERE, "tokenizer_special.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(SPECIAL_TEXT + "--\n" + "\n".join(map(str, sids)) + "\n")
    rtext = random_text()
    rids = tok.encode(rtext, add_special_tokens=False).ids
    assert tok.decode(rids) == rtext, "reference tokenizer does not round-trip the random text"
    with open(os.path.join(HERE, "tokenizer_random.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(rtext)
    write_lines("tokenizer_random_ids.txt", rids)
    print(f"tokenizer: {len(ids)} ids for {len(TEXT.encode())} bytes; special text {len(sids)} ids; "
          f"random text {len(rids)} ids for {len(rtext.encode())} bytes")
    check_transformers_tokenizer(path, ids)
    return tok


def check_transformers_tokenizer(path, ids):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    t.backend_tokenizer.encode_special_tokens = True
    other = t.backend_tokenizer.encode(TEXT, add_special_tokens=False).ids
    same = other == ids
    print(f"transformers' GGUF tokenizer gives the same ids: {same}")
    if not same:
        first = next(i for i, (a, b) in enumerate(zip(ids, other)) if a != b)
        print(f"  first difference at {first}: {ids[first:first + 5]} vs {other[first:first + 5]}")


def logits_expected(path, tok):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
    model.eval()
    lines = []
    for i, text in enumerate(LOGIT_TEXTS):
        ids = tok.encode(text, add_special_tokens=False).ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double().numpy()
        lines.append(f"text {i} {len(ids)}")
        lines.append(" ".join(map(str, ids)))
        for pos in range(len(ids)):
            row = logits[pos]
            lse = float(np.log(np.exp(row - row.max()).sum()) + row.max())
            top = np.argsort(-row, kind="stable")[:TOP_K]
            lines.append(f"{pos} {lse:.6f} " + " ".join(f"{t}:{row[t]:.6f}" for t in top))
    write_lines("logits_topk.txt", lines)
    print(f"logits: {len(LOGIT_TEXTS)} texts, top {TOP_K} per position")


def main():
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    path = paths[0] if paths else os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
    tok = tokenizer_expected(path)
    if "--no-logits" not in sys.argv:
        logits_expected(path, tok)


if __name__ == "__main__":
    main()
