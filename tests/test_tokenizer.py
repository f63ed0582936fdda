"""The tokenizer gives exactly open_clip's ids (fixed cases, hypothesis, all COCO val captions)."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import pickle
from itertools import chain

import ftfy
import open_clip
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipforge.tokenizer import (
    EOT_TOKEN_ID,
    SOT_TOKEN_ID,
    VOCAB_SIZE,
    Tokenizer,
    clean,
    get_tokenizer,
    tokenize,
    write_hf_tokenizer_files,
)
from clipforge.tokenizer.bpe import load_vocab
from clipforge.tokenizer.clean import WORD_PATTERN, all_ftfy_unchanged, clean_text, ftfy_unchanged, is_plain

REFERENCE = open_clip.tokenizer._tokenizer  # open_clip's SimpleTokenizer behind open_clip.tokenize
SHARED = Tokenizer()
BPE_KINDS = ["rust", "python"]  # who merges new words; the ids must not depend on it

FIXED_CASES = [
    "",
    " ",
    "a photo of a cat.",
    "A Photo Of A CAT!!!",
    "  lots\tof \n whitespace\r\n here  ",
    "don't you've we'll I'm she'd it's they're",
    "Crème brûlée, naïve café, Ångström, Øresund, straße, İstanbul",
    "日本語のテキスト、中文字符和한국어",
    "emoji 🐶🐱🚀👩‍👩‍👧‍👦 🇫🇷 ❤️",
    "Tom &amp; Jerry &lt;b&gt; &#39;quoted&#39; &amp;amp; &eacute; &#x1F600; &nbsp;x",
    "&amp;lt;double&amp;gt;",
    "https://example.com/path?q=1&lang=en#frag user@mail.org",
    "3.14159 1,000,000 2024-01-01 0x1F 1e-10 ½ ² ٣ ⅷ",
    "mojibake: â€œquotedâ€\x9d cafÃ© Ã©tÃ© naÃ¯ve",
    "control\x00chars\x07and\x1bterminal\x1b[31mred\x1b[0m\x7f",
    "ｆｕｌｌｗｉｄｔｈ ﬁ ligature “curly” ‘quotes’",
    "<start_of_text> <end_of_text> <|startoftext|> <|endoftext|>",
    "\u00a0\u2028\u3000\u200b\ufeff zero width",
    "ℌ𝔢𝔩𝔩𝔬 𝕨𝕠𝕣𝕝𝕕",
    "a" * 300,
    "word " * 100,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "''s '' 's's 'S 'LL",
    "\x1c\x1d\x1e\x1f separators",
]


def reference_rows(texts: list[str], context_length: int = 77) -> torch.Tensor:
    return open_clip.tokenize(texts, context_length=context_length)


def coco_captions(shared_data) -> list[str]:
    path = shared_data / "coco_captions_mini" / "coco_val2017_all_captions.csv.gz"
    with gzip.open(path, "rb") as f:
        return [row["caption"] for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))]


@functools.lru_cache(maxsize=1)
def coco_reference(shared_data) -> tuple[list[str], torch.Tensor]:
    captions = coco_captions(shared_data)
    return captions, reference_rows(captions)


def test_vocabulary_is_openais():
    vocab = load_vocab()
    assert len(vocab.token_to_id) == VOCAB_SIZE == len(REFERENCE.encoder)
    assert vocab.token_to_id == REFERENCE.encoder
    assert (REFERENCE.sot_token_id, REFERENCE.eot_token_id) == (SOT_TOKEN_ID, EOT_TOKEN_ID)
    assert vocab.byte_to_char == open_clip.tokenizer.bytes_to_unicode()


@pytest.mark.parametrize("bpe", BPE_KINDS)
@pytest.mark.parametrize("text", FIXED_CASES)
def test_fixed_cases_match_open_clip(text, bpe):
    ours = Tokenizer(bpe=bpe)
    assert ours.encode(text) == REFERENCE.encode(text)
    assert torch.equal(ours([text], truncate=True), reference_rows([text]))


def test_batch_and_get_tokenizer_match_open_clip():
    texts = FIXED_CASES * 3
    expected = reference_rows(texts)
    assert torch.equal(tokenize(texts, truncate=True), expected)
    ours, reference = get_tokenizer("ViT-B-32"), open_clip.get_tokenizer("ViT-B-32")
    assert ours.context_length == reference.context_length == 77
    assert torch.equal(ours(texts), reference(texts))  # truncates by default, like open_clip's
    assert torch.equal(ours(texts, context_length=16), reference(texts, context_length=16))


ALPHABETS = {
    "any": st.characters(),
    "ascii": st.characters(min_codepoint=0, max_codepoint=127),
    "latin_accents": st.characters(min_codepoint=0x20, max_codepoint=0x24F),
    "cjk_kana_hangul": st.sampled_from("日本語中文字符漢字かなカナ한국어。、「」 0123"),
    "emoji": st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF) | st.sampled_from(" \u200d\ufe0f"),
    "html": st.sampled_from(["&", ";", "#", "x", "amp", "lt", "gt", "quot", "39", "1F600", " ", "<", ">"]),
    "mojibake": st.sampled_from("Ã©â€œ™žŸ¡¢ \x80\x9d\xa0 abc"),
    "whitespace_controls": st.sampled_from("ab \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000\x00\x1b"),
}


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_text_matches_open_clip(alphabet, data):
    element = ALPHABETS[alphabet]
    if alphabet == "html":
        text = "".join(data.draw(st.lists(element, max_size=30)))
    else:
        text = data.draw(st.text(element, max_size=80))
    expected = REFERENCE.encode(text)
    assert Tokenizer(bpe="rust").encode(text) == expected  # cold caches
    assert Tokenizer(bpe="python").encode(text) == expected
    assert SHARED.encode(text) == expected  # caches filled by earlier examples


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(
        st.one_of(*(st.text(a, max_size=120) for name, a in ALPHABETS.items() if name != "html")),
        max_size=12,
    )
)
def test_random_batches_match_open_clip(texts):
    assert torch.equal(SHARED(texts, truncate=True), reference_rows(texts))


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120))
def test_plain_text_needs_no_cleaning(text):
    """The fast path's premise: on printable ASCII without '&', ftfy/unescape/whitespace change no word."""
    if not is_plain(text):
        return
    assert ftfy.fix_text(text) == text
    words = list(chain.from_iterable(WORD_PATTERN.findall(c) for c in text.lower().split()))
    assert words == WORD_PATTERN.findall(clean_text(text))


@pytest.mark.parametrize("alphabet", sorted(ALPHABETS))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ftfy_skip_is_exact(alphabet, data):
    """The non-ASCII fast path's premise: whenever it skips ftfy, ftfy and HTML unescaping change nothing."""
    element = ALPHABETS[alphabet] | st.sampled_from("a b.,")
    text = "".join(data.draw(st.lists(element, max_size=60)))
    if ftfy_unchanged(text):
        assert ftfy.fix_text(text) == text
        assert clean_text(text) == " ".join(text.split()).lower()


def _detector_chars() -> list[str]:
    """Every character that some class of ftfy's mojibake detector names, minus those `_needed_chars`
    keeps, plus ASCII context: the texts most likely to make the detector fire without a needed char."""
    parser = clean._sre_parse
    codes = set()
    for branch in parser.parse(clean.badness.BADNESS_RE.pattern, clean.badness.BADNESS_RE.flags)[0][1][1]:
        for op, av in branch:
            codes |= clean._class_codes(op, av) or set()
    needed = clean._needed_chars(clean.badness.BADNESS_RE)
    return sorted(chr(c) for c in codes - needed) + list("aZ .,!\n")


DETECTOR_CHARS = _detector_chars()


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.sampled_from(DETECTOR_CHARS), max_size=10))
def test_mojibake_detector_needs_its_characters(text):
    """ftfy.badness.is_bad can only fire on a text holding one of the characters `_needed_chars` found."""
    assert not clean.badness.is_bad(text)


def test_needed_chars_spare_common_text():
    needed = clean._needed_chars(clean.badness.BADNESS_RE)
    assert needed is not None and 150 < len(needed) < 400 and len(DETECTOR_CHARS) > 100
    assert not {ord(c) for c in "éèàüñçßø日本한ж"} & needed  # lower-case accents, CJK, Cyrillic: no detector


def test_fast_path_covers_common_non_ascii_text():
    """With the installed ftfy the analysis holds, and CJK, accents and emoji skip ftfy entirely."""
    assert clean._FAST_PATH is not None and clean._FAST_PATH[1] is not None
    for text in [
        "日本語のテキスト、中文字符和한국어",
        "Crème brûlée, naïve café",
        "emoji 🐶🐱🚀 🇫🇷 ❤️",
        "straße",
    ]:
        assert ftfy_unchanged(text), text
    for text in ["cafÃ© Ã©tÃ©", "“curly”", "ﬁne", "ｆｕｌｌ", "a&amp;b", "e\u0301", "line\nbreak"]:
        assert not ftfy_unchanged(text), text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.text(st.sampled_from("日本語中文字符かなカナ한국어éèüßñ🐶❤️ab \u3000\u0301."), max_size=30),
        max_size=8,
    )
)
def test_batch_ftfy_check_implies_each_text(texts):
    """The one-pass batch test never passes a batch holding a text the per-text test refuses."""
    if all_ftfy_unchanged(texts):
        assert all(map(ftfy_unchanged, texts))
    if texts and all(map(ftfy_unchanged, texts)) and not any(map(clean._FAST_PATH[1].search, texts)):
        assert all_ftfy_unchanged(texts)  # and it is the same test where no detector character is involved


def test_batch_ftfy_check_covers_the_non_ascii_corpora():
    texts = ["日本語のテキスト、中文字符和한국어", "Crème brûlée, naïve café", "emoji 🐶🐱🚀 🇫🇷 ❤️", "straße"]
    assert all_ftfy_unchanged(texts)
    greek = [
        "ΣΑΣ",
        "ΑΣ ΣΑ",
        "ΣΣ",
        "ΜΑΣ ΣΑΣ",
        *texts,
    ]  # the batch is lower-cased at once: final sigma stays per text
    assert all_ftfy_unchanged(greek) and torch.equal(Tokenizer()(greek), reference_rows(greek))
    assert not all_ftfy_unchanged([*texts, "e\u0301"]) and not all_ftfy_unchanged([*texts, "a&amp;b"])


CUT_WORDS = st.text(
    st.sampled_from("日本語中文字符漢字かなカナ한국어éèàüñçßøжΣς🐶🐱🚀\u200d\ufe0f\u0301ab1."), min_size=1
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(CUT_WORDS, min_size=1, max_size=20))
def test_rust_pieces_merge_like_python(texts):
    """Words cut where no merge can cross give the Python BPE's ids (and the cut is really taken)."""
    from clipforge.tokenizer.bpe import word_to_ids
    from clipforge.tokenizer.rust_bpe import RustMergeMany

    vocab = load_vocab()
    words = list(dict.fromkeys(w for t in texts for w in WORD_PATTERN.findall(t)))
    merge = RustMergeMany()
    assert merge(words) == [word_to_ids(w, vocab) for w in words]
    assert merge(words[::-1]) == [word_to_ids(w, vocab) for w in words[::-1]]  # cached pieces


def test_cjk_words_are_cut_into_pieces():
    from clipforge.tokenizer.rust_bpe import crossing_pairs, split_pieces

    words = ["日本語のテキスト", "中文字符和한국어", "cat", "café"]
    cut = split_pieces(words, crossing_pairs(load_vocab()))
    assert set(cut) >= {"日本語のテキスト", "中文字符和한국어"} and "cat" not in cut
    assert all("".join(pieces) == word and len(pieces) > 1 for word, pieces in cut.items())


@pytest.mark.parametrize("bpe", BPE_KINDS)
def test_truncation_stops_early_but_exactly(bpe):
    """Truncated texts stop after the chunks that fill the row; a lone U+0345 (no ids) forces the full text."""
    texts = ["word " * 500, "\u0345 " * 80 + "tail words here", "a b " * 40 + "end", "x" * 2000]
    tok = Tokenizer(bpe=bpe)
    for context_length in (77, 16, 2):
        expected = reference_rows(texts, context_length)
        assert torch.equal(tok(texts, context_length=context_length, truncate=True), expected)


def test_too_long_raises_or_truncates():
    long_text = "word " * 100
    with pytest.raises(ValueError, match=r"text 1 is 102 tokens long .* context_length=77"):
        tokenize(["short", long_text])
    rows = tokenize(["short", long_text], truncate=True)
    assert rows[1, -1].item() == EOT_TOKEN_ID and rows[1, 0].item() == SOT_TOKEN_ID
    assert torch.equal(rows, reference_rows(["short", long_text]))
    exact = "word " * 75  # 75 + SOT + EOT = 77: fits without truncation
    assert torch.equal(tokenize(exact), reference_rows([exact]))
    with pytest.raises(ValueError, match="context_length=1"):
        tokenize("a", context_length=1)


def test_shapes_padding_and_types():
    assert tokenize([]).shape == (0, 77)
    empty = tokenize("")
    assert empty.dtype == torch.int64 and empty.shape == (1, 77)
    assert empty[0, :3].tolist() == [SOT_TOKEN_ID, EOT_TOKEN_ID, 0] and empty[0, 2:].abs().sum() == 0
    assert tokenize(("a", "b"), context_length=5).shape == (2, 5)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tokenize(["a", 3])


def test_decode_inverts_like_open_clip():
    tok = Tokenizer()
    for text in FIXED_CASES:
        ids = tok.encode(text)
        if SOT_TOKEN_ID in ids or EOT_TOKEN_ID in ids:
            continue  # ours skips SOT and stops at EOT
        assert tok.decode(ids) == REFERENCE.decode(ids).rstrip(" ")
    row = tok("A photo of a dog.")[0]
    assert tok.decode(row) == "a photo of a dog ."


def test_pickle_and_small_cache_keep_ids():
    texts = FIXED_CASES[:12]
    tok = Tokenizer(context_length=32, cache_size=5)
    restored = pickle.loads(pickle.dumps(tok))
    assert restored.context_length == 32 and len(pickle.dumps(tok)) < 1000
    expected = reference_rows(texts, context_length=32)
    assert torch.equal(tok(texts, truncate=True), expected)
    assert torch.equal(tok(texts, truncate=True), expected)  # after the cache was emptied
    assert torch.equal(restored(texts, truncate=True), expected)


@pytest.mark.parametrize("bpe", BPE_KINDS)
def test_all_coco_val_captions_match_open_clip(shared_data, bpe):
    captions, expected = coco_reference(shared_data)
    assert len(captions) == 25_014
    assert torch.equal(Tokenizer(bpe=bpe)(captions, truncate=True), expected)


def test_hf_tokenizer_files_give_same_ids(tmp_path, shared_data):
    from transformers import CLIPTokenizerFast

    captions = coco_captions(shared_data)[:2000]
    hf = CLIPTokenizerFast.from_pretrained(write_hf_tokenizer_files(tmp_path))
    encoded = hf(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    hf_rows = encoded["input_ids"] * encoded["attention_mask"]  # HF pads with EOT; we pad with 0
    assert torch.equal(hf_rows, tokenize(captions, truncate=True))
