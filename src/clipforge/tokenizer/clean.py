"""Text cleaning and word splitting exactly as OpenAI's CLIP (and open_clip's default 'lower' cleaning).

The full cleaning costs ~20-100 us per text (mostly ftfy). `is_plain` picks the texts where it provably
changes nothing that matters, so the tokenizer can use `text.lower()` instead:

- ftfy.fix_text is the identity on printable ASCII (U+0020-U+007E) without '&': every ftfy fixer acts only
  on non-ASCII characters, control characters (incl. ESC), line breaks or HTML entities.
- html.unescape only acts on '&'.
- Whitespace collapsing and stripping cannot change the regex matches below, since no alternative of
  WORD_PATTERN matches a space, and the only whitespace in such a text is the space itself.
`tests/test_tokenizer.py` checks this with hypothesis against open_clip on random ASCII text.
"""

from __future__ import annotations

import html

import ftfy
import regex

from clipforge.tokenizer.bpe import EOT_TEXT, SOT_TEXT

WORD_PATTERN = regex.compile(
    rf"{SOT_TEXT}|{EOT_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)


def clean_text(text: str) -> str:
    """ftfy repair, HTML unescape (twice, as OpenAI), whitespace collapse + strip, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def is_plain(text: str) -> bool:
    """True when `clean_text(text)` splits into the same words as `text.lower()` (see module docstring)."""
    return text.isascii() and text.isprintable() and "&" not in text
