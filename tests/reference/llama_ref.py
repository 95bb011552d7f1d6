#!/usr/bin/env python3
"""Independent reference for the engine: a Llama forward pass in numpy on the same GGUF.

Weights are read and dequantized by the `gguf` PyPI package (llama.cpp's own Python reader),
the math is plain float64 numpy, prompts are tokenized by the Python `tokenizers` package
built from the GGUF's vocab and merges (SmolLM2's pre-tokenizer: single digits, then GPT-2
byte-level) and the chat template is rendered by jinja2. Nothing here shares code with the
Rust engine. Writes tests/golden/engine.json:
token ids, logits at a fixed set of vocabulary ids and the top 10 at the last position, and a
greedy continuation, for a few prompts.

    pip install gguf==0.19.0 numpy tokenizers==0.22.2 jinja2
    python3 tests/reference/llama_ref.py models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

PROMPTS = [
    # raw text, and whether the ChatML template wraps it
    ("The capital of France is", False),
    ("What is 17 * 23? Answer step by step.", True),
    ("Write one sentence about the sea, then stop.", True),
]
PROBE_IDS = [0, 1, 2, 11, 198, 253, 314, 1000, 2000, 4096, 8191, 12345, 20000, 30000, 40000, 49151]
GREEDY_TOKENS = 12


def load_tokenizer(path):
    import jinja2
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken

    r = GGUFReader(path)
    f = lambda k: r.fields[k].contents()
    tokens, merges, types = f("tokenizer.ggml.tokens"), f("tokenizer.ggml.merges"), f("tokenizer.ggml.token_type")
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[tuple(m.split(" ", 1)) for m in merges])
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return tok, env.from_string(f("tokenizer.chat_template"))


class Llama:
    def __init__(self, path):
        r = GGUFReader(path)
        f = lambda k: r.fields[k].contents()
        self.n_layer = f("llama.block_count")
        self.n_head = f("llama.attention.head_count")
        self.n_kv = f("llama.attention.head_count_kv")
        self.d = f("llama.embedding_length")
        self.eps = f("llama.attention.layer_norm_rms_epsilon")
        self.base = f("llama.rope.freq_base")
        self.hd = self.d // self.n_head
        self.w = {}
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))
            self.w[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
        self.out = self.w.get("output.weight", self.w["token_embd.weight"])

    def rms(self, x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        # GGUF llama weights are permuted so that rotation applies to adjacent pairs.
        half = self.hd // 2
        inv = self.base ** (-np.arange(half) * 2.0 / self.hd)
        ang = pos[:, None] * inv[None, :]  # [T, half]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids):
        T = len(ids)
        x = self.w["token_embd.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        g = self.n_head // self.n_kv
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(T, self.n_head, self.hd)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            att = np.empty((T, self.n_head, self.hd))
            for hh in range(self.n_head):
                s = q[:, hh] @ k[:, hh // g].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // g]
            x = x + att.reshape(T, self.d) @ self.w[p + "attn_output.weight"].T
            h = self.rms(x, self.w[p + "ffn_norm.weight"])
            gate = h @ self.w[p + "ffn_gate.weight"].T
            up = h @ self.w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.w[p + "ffn_down.weight"].T
        return self.rms(x, self.w["output_norm.weight"]) @ self.out.T


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    tok, template = load_tokenizer(path)
    model = Llama(path)
    cases = []
    for text, chat in PROMPTS:
        if chat:
            rendered = template.render(messages=[{"role": "user", "content": text}], add_generation_prompt=True)
        else:
            rendered = text
        ids = tok.encode(rendered, add_special_tokens=False).ids
        logits = model.forward(np.array(ids))
        last = logits[-1]
        top = np.argsort(-last)[:10]
        seq = list(ids)
        for _ in range(GREEDY_TOKENS):
            seq.append(int(np.argmax(model.forward(np.array(seq))[-1])))
        cases.append({
            "text": text,
            "chat": chat,
            "rendered": rendered,
            "ids": [int(i) for i in ids],
            "probe_ids": PROBE_IDS,
            "probe_logits": [round(float(last[i]), 5) for i in PROBE_IDS],
            "first_position_probe_logits": [round(float(logits[0][i]), 5) for i in PROBE_IDS],
            "top_ids": [int(i) for i in top],
            "top_logits": [round(float(last[i]), 5) for i in top],
            "greedy": seq[len(ids):],
            "greedy_text": tok.decode(seq[len(ids):]),
        })
        print(text, "->", repr(cases[-1]["greedy_text"]), file=sys.stderr)
    out = Path(__file__).resolve().parent.parent / "golden" / "engine.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "cases": cases}, indent=1))
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
