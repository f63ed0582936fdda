"""Text corpora for the tokenizer benchmark: real COCO captions and seeded non-ASCII / long variants of them.

No real non-English caption set is available offline, so the non-ASCII corpora rewrite the COCO captions
deterministically (same seed, same texts in every process), each with its own vocabulary of unseen words:
- accents: about a third of the words get accented vowels ("a man rîdés a bïke"), like French/German text;
- cjk: each word becomes 1-3 characters (CJK ideographs, or kana, or Hangul syllables), sentences written
  without spaces except the Hangul ones (as Chinese, Japanese and Korean are), ending in "。";
- emoji: 1-3 emoji (incl. skin tones, ZWJ families and flags) inserted after random words;
- long: ten consecutive captions joined into one paragraph (~110 words, truncated to 77 tokens).
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import zlib
from pathlib import Path

CAPTIONS = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "data"
    / "coco_captions_mini"
    / "coco_val2017_all_captions.csv.gz"
)
ACCENTS = {"a": "àáâä", "e": "éèêë", "i": "îï", "o": "ôö", "u": "ùûü", "n": "ñ", "c": "ç"}
EMOJI = ["🐶", "🐱", "🚀", "❤️", "👍🏽", "👩‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "🍕", "🏄‍♀️", "😂", "🌧️", "⚽", "🚲", "🏳️‍🌈"]
CORPORA = ("coco", "accents", "cjk", "emoji", "long")


def read_captions(path: Path = CAPTIONS) -> list[str]:
    """All 25,014 COCO val2017 captions, in file order."""
    with gzip.open(path, "rb") as f:
        return [row["caption"] for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))]


def _accented(word: str, rng: random.Random) -> str:
    if rng.random() > 0.35:
        return word
    return "".join(rng.choice(ACCENTS[c]) if c in ACCENTS and rng.random() < 0.5 else c for c in word)


def _cjk_word(word: str, script: int) -> str:
    """A fixed 1-3 character spelling of `word` in one script (same word, same spelling everywhere)."""
    code = zlib.crc32(word.lower().encode())
    length = 1 + code % 3
    starts = (0x4E00, 0x3041, 0xAC00)  # CJK ideographs, hiragana, Hangul syllables
    spans = (0x5000, 0x56, 0x2BA4)
    return "".join(chr(starts[script] + (code >> (8 * i)) % spans[script]) for i in range(length))


def _cjk(caption: str, rng: random.Random) -> str:
    script = rng.randrange(3)
    words = [_cjk_word(w, script) for w in caption.split()]
    return (" " if script == 2 else "").join(words) + "。"


def _emoji(caption: str, rng: random.Random) -> str:
    words = caption.split()
    for _ in range(rng.randint(1, 3)):
        words.insert(rng.randint(1, len(words)), rng.choice(EMOJI))
    return " ".join(words)


def corpus(name: str, limit: int | None = None) -> list[str]:
    """The named corpus (one of CORPORA), at most `limit` texts."""
    captions = read_captions()
    rng = random.Random(0)
    if name == "coco":
        texts = captions
    elif name == "accents":
        texts = [" ".join(_accented(w, rng) for w in c.split()) for c in captions]
    elif name == "cjk":
        texts = [_cjk(c, rng) for c in captions]
    elif name == "emoji":
        texts = [_emoji(c, rng) for c in captions]
    elif name == "long":
        texts = [" ".join(captions[i : i + 10]) for i in range(0, len(captions) - 9, 10)]
    else:
        raise ValueError(f"unknown corpus {name!r}; valid: {', '.join(CORPORA)}")
    return texts[:limit]
