#!/usr/bin/env python3
"""The peer of `fedkd bench tokenizer`: Hugging Face `tokenizers` on one
thread, with the vocabulary, merges and pre-tokenizer of a GGUF model (built
as make_expected.py builds it), encoding a text one document at a time
(documents separated by "\\n%\\n"). Prints one key=value line, with a CRC-32
of the ids (int32 little-endian) so that the caller can check they agree.

    RAYON_NUM_THREADS=1 python3 bench_tokenizer_hf.py MODEL.gguf TEXT
"""
import os
import sys
import time
import zlib

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from make_expected import build_tokenizer  # noqa: E402

MIN_SECONDS, MIN_RUNS = 1.0, 3


def main():
    model, text_path = sys.argv[1], sys.argv[2]
    tok = build_tokenizer(model)
    tok.encode_special_tokens = True  # as fedkd's encode: special names are plain text
    raw = open(text_path, "rb").read()
    docs = raw.decode("utf-8").split("\n%\n")
    best, total, runs = float("inf"), 0.0, 0
    while runs < MIN_RUNS or total < MIN_SECONDS:
        t0 = time.perf_counter()
        out = [tok.encode(d, add_special_tokens=False).ids for d in docs]
        dt = time.perf_counter() - t0
        best, total, runs = min(best, dt), total + dt, runs + 1
    crc, n = 0, 0
    for ids in out:
        crc = zlib.crc32(np.asarray(ids, dtype="<i4").tobytes(), crc)
        n += len(ids)
    print(f"peer=hf_tokenizers bytes={len(raw)} tokens={n} mb_per_s={len(raw) / best / 1e6:.2f} "
          f"tokens_per_s={n / best:.0f} ids_crc32={crc:08x}")


if __name__ == "__main__":
    main()
