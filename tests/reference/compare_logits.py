#!/usr/bin/env python3
"""Compares fedkd's forward pass of a GGUF llama model with transformers' fp32
one on a few thousand tokens of varied text, over full distributions: mean and
max KL(transformers || fedkd), argmax agreement, and both perplexities.

    cmake --build build --target gguf_dump_logits
    /tmp/ref/bin/python tests/reference/compare_logits.py build/tests/gguf/gguf_dump_logits \
        [models/SmolLM2-135M-Instruct.Q4_1.gguf] [--tokens 2048] [--window 512]

The text is tests/reference/tokenizer_text.txt followed by fortunes from the
Debian fortune files (the default corpus); both sides read the same ids (the
C side tokenizes, and its ids equal the reference tokenizer's; see
make_expected.py). Each window starts from a fresh context.
"""
import argparse
import glob
import os
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def varied_text():
    parts = [open(os.path.join(HERE, "tokenizer_text.txt"), encoding="utf-8").read()]
    for name in ("science", "literature", "computers", "wisdom"):
        for path in glob.glob(f"/usr/share/games/fortunes/{name}"):
            parts.append(open(path, encoding="utf-8", errors="replace").read()[:6000])
    return "\n".join(parts)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dumper")
    ap.add_argument("model", nargs="?",
                    default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--window", type=int, default=512)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        text_path = os.path.join(tmp, "text.txt")
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(varied_text())
        prefix = os.path.join(tmp, "ours")
        subprocess.run([args.dumper, args.model, text_path, str(args.window), prefix,
                        str(args.tokens)], check=True)
        ids = np.fromfile(prefix + ".ids", dtype=np.int32)
        ours = np.fromfile(prefix + ".logits", dtype=np.float32).reshape(len(ids), -1)

        torch.set_num_threads(2)
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(args.model), gguf_file=os.path.basename(args.model),
            dtype=torch.float32)
        model.eval()
        kls, same, nll_ref, nll_ours = [], 0, 0.0, 0.0
        n_pred = 0
        for w in range(0, len(ids), args.window):
            win = ids[w:w + args.window]
            with torch.no_grad():
                ref = model(torch.tensor([win.astype(np.int64)])).logits[0].numpy()
            lp, lq = log_softmax(ref), log_softmax(ours[w:w + args.window])
            kls.extend((np.exp(lp) * (lp - lq)).sum(axis=-1))
            same += int((lp.argmax(-1) == lq.argmax(-1)).sum())
            tgt = win[1:]
            nll_ref -= lp[np.arange(len(tgt)), tgt].sum()
            nll_ours -= lq[np.arange(len(tgt)), tgt].sum()
            n_pred += len(tgt)
    kls = np.array(kls)
    ppl_ref, ppl_ours = np.exp(nll_ref / n_pred), np.exp(nll_ours / n_pred)
    print(f"positions={len(ids)} window={args.window} mean_kl={kls.mean():.3g} "
          f"max_kl={kls.max():.3g} argmax_agreement={same / len(ids):.5f} "
          f"ppl_transformers={ppl_ref:.4f} ppl_fedkd={ppl_ours:.4f} "
          f"ppl_rel_diff={abs(ppl_ours / ppl_ref - 1):.2e}")


if __name__ == "__main__":
    main()
