"""Text cleaning and word splitting exactly as OpenAI's CLIP (and open_clip's default 'lower' cleaning).

The full cleaning costs ~20-200 us per text, nearly all of it ftfy, which changes almost no real text.
`clean_lower` skips the parts that provably change nothing:

- `is_plain`: ftfy.fix_text is the identity on printable ASCII (U+0020-U+007E) without '&' (every ftfy
  fixer acts only on non-ASCII characters, control characters, line breaks or HTML entities), and
  html.unescape only acts on '&'.
- `ftfy_unchanged`, for any other text: ftfy.fix_text runs its fixers once over each line and returns as
  soon as a round changes nothing. A round changes nothing when (a) the text has no character that one of
  its character fixers (C1 controls, Latin ligatures, full/half-width forms, curly quotes, line breaks,
  surrogates, terminal escapes, control characters) or HTML unescaping would touch, (b) it is already
  NFC-normalised, and (c) its mojibake detector `ftfy.badness.is_bad` finds nothing (fix_encoding's first
  test). (c) is decided without the detector when the text has none of the ~400 characters that every
  pattern of the detector needs (`_needed_chars`: CJK, kana, Hangul, emoji, ... never trigger it).
  The character sets are read from ftfy's own tables at import; if ftfy's fixers are not the ones this
  analysis covers, the fast path is switched off and every non-plain text is fully cleaned.
- Whitespace collapsing and stripping cannot change the word split: no alternative of WORD_PATTERN
  matches whitespace, so the tokenizer splits on whitespace first.
`tests/test_tokenizer.py` checks all of this with hypothesis against ftfy and open_clip.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence

import ftfy
import regex
from ftfy import badness, chardata

from clipforge.tokenizer.bpe import EOT_TEXT, SOT_TEXT

try:  # the stdlib regular-expression parser (renamed in Python 3.11)
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre_parse

WORD_PATTERN = regex.compile(
    rf"{SOT_TEXT}|{EOT_TEXT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
    regex.IGNORECASE,
)

# ftfy's fixers as of 6.x: the ones whose effects `_fixer_chars` covers. Any other set disables the fast path.
KNOWN_FIXERS = frozenset(
    {
        "unescape_html",
        "remove_terminal_escapes",
        "restore_byte_a0",
        "replace_lossy_sequences",
        "decode_inconsistent_utf8",
        "fix_c1_controls",
        "fix_latin_ligatures",
        "fix_character_width",
        "uncurl_quotes",
        "fix_line_breaks",
        "fix_surrogates",
        "remove_control_chars",
    }
)


def clean_text(text: str) -> str:
    """ftfy repair, HTML unescape (twice, as OpenAI), whitespace collapse + strip, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def is_plain(text: str) -> bool:
    """True when `clean_text(text)` splits into the same words as `text.lower()` (see module docstring)."""
    return text.isascii() and text.isprintable() and "&" not in text


def _class_codes(op, av) -> set[int] | None:
    """The code points one parsed regex item matches, if it is a literal or a plain character class."""
    if op is _sre_parse.LITERAL:
        return {av}
    if op is not _sre_parse.IN:
        return None
    codes: set[int] = set()
    for item_op, item_av in av:
        if item_op is _sre_parse.LITERAL:
            codes.add(item_av)
        elif item_op is _sre_parse.RANGE:
            codes.update(range(item_av[0], item_av[1] + 1))
        else:  # a category (\s, \w) or a negation: not a finite set we can use
            return None
    return codes


def _needed_chars(pattern: re.Pattern) -> frozenset[int] | None:
    """Non-ASCII code points such that every match of `pattern` contains one of them, or None if that cannot
    be shown (each top-level alternative must have a mandatory item matching only non-ASCII characters)."""
    if pattern.flags & re.IGNORECASE:
        return None
    parsed = list(_sre_parse.parse(pattern.pattern, pattern.flags))
    if len(parsed) == 1 and parsed[0][0] is _sre_parse.BRANCH:
        branches = parsed[0][1][1]
    else:
        branches = [parsed]
    needed: set[int] = set()
    for branch in branches:
        witnesses = [codes for op, av in branch if (codes := _class_codes(op, av)) and min(codes) >= 0x80]
        if not witnesses:
            return None
        needed |= min(witnesses, key=_commonness)  # any one is enough: take the rarest in real text
    return frozenset(needed)


def _commonness(codes: set[int]) -> tuple[int, int, int]:
    """How often a character class turns up in ordinary text: its lower-case letters of Latin-1 to
    Cyrillic (é, ß, ж), then all its letters there, then its size."""
    letters = [c for c in codes if 0xC0 <= c < 0x530 and unicodedata.category(chr(c)).startswith("L")]
    lower = sum(unicodedata.category(chr(c)) == "Ll" for c in letters)
    return lower, len(letters), len(codes)


def _fixer_chars() -> set[int]:
    """Every character that one of ftfy's character fixers, or HTML unescaping, acts on."""
    chars = set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | set(chardata.CONTROL_CHARS)
    for quotes in (chardata.SINGLE_QUOTE_RE, chardata.DOUBLE_QUOTE_RE):
        codes = _class_codes(*_sre_parse.parse(quotes.pattern)[0])
        if codes is None:
            raise ValueError(f"ftfy quote pattern {quotes.pattern!r} is not a character class")
        chars |= codes
    chars |= set(range(0x80, 0xA0))  # C1 controls (fix_c1_controls)
    chars |= {ord(c) for c in "\r\n\u2028\u2029\x85&"}  # line breaks (and line splitting), HTML entities
    chars |= set(range(0xD800, 0xE000))  # surrogates
    return chars


def _char_class(codes: set[int] | frozenset[int]) -> re.Pattern:
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + "]")


def _fast_path_patterns() -> tuple[re.Pattern, re.Pattern | None] | None:
    config = ftfy.TextFixerConfig()
    if set(ftfy.FIXERS) != KNOWN_FIXERS or config.normalization != "NFC":
        return None
    try:
        touched = _char_class(_fixer_chars())
        needed = _needed_chars(badness.BADNESS_RE)
    except (AttributeError, ValueError, TypeError):  # ftfy's tables changed shape
        return None
    return touched, None if needed is None else _char_class(needed)


_FAST_PATH = _fast_path_patterns()
_MAX_SEGMENT = ftfy.TextFixerConfig().max_decode_length


def ftfy_unchanged(text: str) -> bool:
    """True only when ftfy.fix_text(text) == text and html.unescape(text) == text (see module docstring)."""
    if _FAST_PATH is None or len(text) >= _MAX_SEGMENT:
        return False
    touched, mojibake_chars = _FAST_PATH
    if touched.search(text) or not unicodedata.is_normalized("NFC", text):
        return False
    return (mojibake_chars is not None and mojibake_chars.search(text) is None) or not badness.is_bad(text)


def all_ftfy_unchanged(texts: Sequence[str]) -> bool:
    """True only when `ftfy_unchanged(t)` for every text, decided for the batch in one pass (no loop per
    text): its tests are character searches and NFC, and texts joined by spaces pass them exactly when every
    text does (a space is a starter that composes and reorders with nothing). Where the mojibake detector
    itself would be needed, False: the caller then checks text by text."""
    if _FAST_PATH is None or not texts:
        return False
    touched, mojibake_chars = _FAST_PATH
    if mojibake_chars is None or max(map(len, texts)) >= _MAX_SEGMENT:
        return False
    joined = " ".join(texts)
    if touched.search(joined) or mojibake_chars.search(joined):
        return False
    return unicodedata.is_normalized("NFC", joined)


def clean_lower(text: str) -> str:
    """A text whose whitespace-separated chunks are those of `clean_text(text)`, skipping provable no-ops."""
    if is_plain(text) or ftfy_unchanged(text):
        return text.lower()
    return clean_text(text)
