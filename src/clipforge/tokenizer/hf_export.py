"""Write the vocabulary as Hugging Face `vocab.json` + `merges.txt` (for CLIPTokenizerFast comparisons)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clipforge.tokenizer.bpe import EOT_TEXT, SOT_TEXT, VOCAB_PATH, load_vocab

HF_NAMES = {SOT_TEXT: "<|startoftext|>", EOT_TEXT: "<|endoftext|>"}  # OpenAI's spelling, which HF uses


def write_hf_tokenizer_files(
    out_dir: str | os.PathLike, vocab_path: str | os.PathLike = VOCAB_PATH, context_length: int = 77
) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json into `out_dir`; return it.

    `CLIPTokenizerFast.from_pretrained(out_dir)` then gives the same ids as ours on texts that need no
    ftfy repair (HF normalises with NFC + whitespace + lower case only).
    """
    vocab = load_vocab(str(vocab_path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    token_to_id = {HF_NAMES.get(token, token): i for token, i in vocab.token_to_id.items()}
    (out_dir / "vocab.json").write_text(json.dumps(token_to_id, ensure_ascii=False), encoding="utf-8")
    merges = "\n".join(f"{a} {b}" for a, b in vocab.merges)
    (out_dir / "merges.txt").write_text(f"#version: 0.2\n{merges}\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": context_length}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return out_dir
