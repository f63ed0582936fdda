"""Shared-prefix packing: the tree it builds, and bulk encoding equal to plain padded encoding."""

import csv
import random
from pathlib import Path

import pytest
import torch

from clipforge.encode import encode_tokens
from clipforge.models import CLIP, get_config
from clipforge.models.prefix import pack_prefixes
from clipforge.tokenizer import tokenize

SOT, EOT = 49406, 49407
COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_captions_mini" / "captions.csv"


def random_tokens(n: int, seed: int, context: int = 77) -> torch.Tensor:
    """Texts drawn from a small vocabulary, so that many share prefixes (and some are duplicates)."""
    rng = random.Random(seed)
    tokens = torch.zeros(n, context, dtype=torch.long)
    for row in range(n):
        body = [rng.choice([5, 6, 7, 300]) for _ in range(rng.randint(0, context - 2))]
        seq = [SOT, *body, EOT]
        tokens[row, : len(seq)] = torch.tensor(seq)
    return tokens


def path_to_root(pack, row: int, node: int) -> list[int]:
    """Token ids along the tree from the root to `node`, read off the ancestor mask."""
    ancestors = pack.mask[row, 0, node].nonzero().flatten().tolist()
    return [int(pack.tokens[row, a]) for a in sorted(ancestors, key=lambda a: int(pack.positions[row, a]))]


@pytest.mark.parametrize("row_nodes", [8, 128])
def test_pack_spells_every_text_and_bounds_rows(row_nodes: int) -> None:
    tokens = random_tokens(60, seed=1, context=20)
    packs = list(pack_prefixes(tokens, texts_per_batch=16, row_nodes=row_nodes))
    seen = torch.cat([p.texts for p in packs])
    assert sorted(seen.tolist()) == list(range(60))  # every text exactly once
    for pack in packs:
        Q = pack.eot.shape[1]
        for text, slot in zip(pack.texts.tolist(), pack.slots.tolist()):
            row, node = divmod(slot, Q)
            node = int(pack.eot[row, node])
            length = int(tokens[text].argmax()) + 1
            assert path_to_root(pack, row, node) == tokens[text, :length].tolist()
            assert int(pack.positions[row, node]) == length - 1
        assert pack.tokens.shape[1] <= max(row_nodes, 20)  # rows stay in bounds unless one text is longer


def test_shared_prefixes_are_computed_once() -> None:
    tokens = tokenize(["a photo of a cat.", "a photo of a dog.", "a photo of a cat."])
    (pack,) = pack_prefixes(tokens)
    lengths = (tokens.argmax(-1) + 1).tolist()
    # "<sot> a photo of a" is shared, then {cat, dog} . <eot>; the duplicate adds no node
    assert lengths == [8, 8, 8]
    assert int((pack.mask[0, 0].sum(-1) > 0).sum()) == 5 + 2 * 3
    eot = {text: int(pack.eot[0, slot]) for text, slot in zip(pack.texts.tolist(), pack.slots.tolist())}
    assert eot[0] == eot[2] != eot[1]


@pytest.mark.parametrize("preset", ["tiny-vit", "tiny-resnet"])
def test_packed_encoding_equals_padded_encoding(preset: str) -> None:
    torch.manual_seed(0)
    model = CLIP(get_config(preset)).eval()
    tokens = random_tokens(40, seed=2, context=model.context_length)
    with torch.inference_mode():
        reference = torch.cat([model.encode_text(tokens[i : i + 1], normalize=True) for i in range(40)])
        for batch in (1, 7, 64):
            packed = encode_tokens(model, tokens, batch_size=batch)
            torch.testing.assert_close(packed, reference, atol=2e-5, rtol=0)
        sorted_batches = encode_tokens(model, tokens, batch_size=16, share_prefixes=False)
    torch.testing.assert_close(sorted_batches, reference, atol=2e-5, rtol=0)


@pytest.mark.skipif(not COCO.exists(), reason="needs ../shared/data")
def test_packing_saves_positions_on_real_captions() -> None:
    with open(COCO, newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)]
    tokens = tokenize(random.Random(0).sample(captions, 256))
    packs = list(pack_prefixes(tokens, texts_per_batch=128))
    computed = sum(p.tokens.numel() for p in packs)
    actual = int((tokens.argmax(-1) + 1).sum())
    assert computed < 0.95 * actual  # fewer positions than the texts' own tokens, padding included
