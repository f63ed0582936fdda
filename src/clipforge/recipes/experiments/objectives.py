"""Pretraining objectives compared in the paper's Fig. 2, plus the supervised baseline of its robustness study.

Every objective wraps the same `CLIP` (only its image tower is trained outside `contrastive`) and exposes the
trainer's interface, `loss(batch) -> {"loss": ...}`, plus `class_scores(images, classnames, templates) -> (N, C)`
for zero-shot classification:

- contrastive: cosine similarity to the prompt-ensembled class text embedding (CLIP);
- bag-of-words: predict the caption's words (softmax over a vocabulary, target = the caption's normalised
  word bag); a class scores the mean log-probability of its name's words;
- captioning: a small causal transformer decoder conditioned on the image predicts the caption tokens; a class
  scores the mean (over templates) caption log-likelihood of its prompts;
- supervised: cross-entropy on labels; scores are the classifier logits (no language, not zero-shot).

Vocabularies are compact: the BPE ids that occur in the training captions (`caption_vocabulary`), plus any
`extra_vocabulary` texts (the prompts of label sets scored zero-shot later: their words must be scorable; they
are never targets, so training only pushes their probabilities down, as a full-BPE softmax would).

Inputs are preprocessed images (N, 3, S, S) or, for a locked image trunk, its cached pooled features (N, D)
(batches carry them as "image_features", `recipes.frozen.CachedPairs`): `image_embedding` maps either to the
image tower's output, so every objective trains and scores on cached features unchanged.

Importing this module registers bag-of-words, captioning and supervised with the trainer's objective registry
(`loss.objective=...` in `clipforge train`), built from the training loader's `classes` and `caption_texts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipforge.models.transformer import Transformer
from clipforge.tokenizer import default_tokenizer
from clipforge.train.objectives import ContrastiveObjective, register_objective
from clipforge.zeroshot.classifier import build_classifier

OBJECTIVES = ("contrastive", "bag-of-words", "captioning", "supervised")


def _tokenize(texts: Sequence[str], context_length: int) -> Tensor:
    return default_tokenizer(context_length)(list(texts))


def image_embedding(model: nn.Module, inputs: Tensor) -> Tensor:
    """(N, E) image tower output of images (N, 3, S, S) or of cached trunk features (N, D) (projection only)."""
    if inputs.dim() == 2:
        return model.visual.project(inputs.float())
    return model.encode_image(inputs)


def batch_images(batch: dict[str, Tensor]) -> Tensor:
    """A training batch's image input: cached trunk features when it has them, else the images."""
    return batch["image_features"] if "image_features" in batch else batch["images"]


def template_captions(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every `template.format(class)` caption, class-major."""
    return [t.format(c) for c in classnames for t in templates]


def caption_vocabulary(texts: Sequence[str], context_length: int) -> Tensor:
    """(V,) sorted BPE ids occurring in the captions, SOT/EOT included."""
    ids = torch.unique(_tokenize(texts, context_length))
    return ids[ids != 0]  # 0 is padding


class _VocabMixin(nn.Module):
    """Maps BPE ids to compact vocabulary positions (-1: not in the vocabulary)."""

    def _init_vocab(self, vocab: Tensor, bpe_size: int) -> None:
        lookup = torch.full((bpe_size,), -1, dtype=torch.long)
        lookup[vocab] = torch.arange(len(vocab))
        self.register_buffer("vocab", vocab.clone(), persistent=True)
        self.register_buffer("lookup", lookup, persistent=False)

    def compact(self, tokens: Tensor, where: str) -> Tensor:
        ids = self.lookup[tokens]
        missing = (ids < 0) & (tokens != 0)
        if missing.any():
            raise ValueError(
                f"{where}: token ids {tokens[missing].unique().tolist()[:8]} are not in the vocabulary"
            )
        return ids


class ContrastiveScorer(ContrastiveObjective):
    """The trainer's CLIP loss (each distinct caption of a batch through the text tower once), scored zero-shot
    with the library's prompt-ensembled classifier."""

    def __init__(self, model: nn.Module):
        super().__init__(model, dedup_text=True)

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:  # -> (B, E), (B, E) unit rows
        if "image_features" not in batch:
            return super().embed(batch)
        image = F.normalize(image_embedding(self.model, batch["image_features"]), dim=-1)
        return image, self.model.encode_text(batch["text"], normalize=True)

    @torch.no_grad()
    def class_scores(self, images: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        classifier = build_classifier(self.model, list(classnames), list(templates), cache_dir=False,
                                      progress=False).float()  # (E, C)  # fmt: skip
        image = F.normalize(image_embedding(self.model, images).float(), dim=-1)  # (N, E)
        return image @ classifier.to(images.device)  # (N, C)


class BagOfWordsObjective(_VocabMixin):
    """Image -> softmax over the vocabulary; target: the caption's word bag (SOT/EOT/padding excluded)."""

    def __init__(self, model: nn.Module, vocab: Tensor):
        super().__init__()
        self.model = model
        self._init_vocab(vocab, model.config.text.vocab_size)
        self.head = nn.Linear(model.config.embed_dim, len(vocab))
        self.special = (int(vocab.max()), int(vocab.max()) - 1)  # EOT, SOT are the two largest BPE ids

    def word_log_probs(self, images: Tensor) -> Tensor:  # -> (B, V)
        return F.log_softmax(self.head(image_embedding(self.model, images)).float(), dim=-1)

    def word_bag(self, tokens: Tensor) -> Tensor:  # (B, L) BPE ids -> (B, V) rows summing to 1
        keep = (tokens != 0) & (tokens != self.special[0]) & (tokens != self.special[1])
        bag = torch.zeros(len(tokens), len(self.vocab), device=tokens.device)
        bag.scatter_add_(1, self.compact(tokens, "bag-of-words caption").clamp(min=0), keep.float())
        return bag / bag.sum(dim=1, keepdim=True).clamp(min=1)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        log_probs = self.word_log_probs(batch_images(batch))
        return {"loss": -(self.word_bag(batch["text"]) * log_probs).sum(dim=1).mean()}

    @torch.no_grad()
    def class_scores(self, images: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        names = self.word_bag(_tokenize(classnames, self.model.context_length).to(images.device))  # (C, V)
        return self.word_log_probs(images) @ names.T  # (N, C): mean log-prob of each name's words

    @torch.no_grad()
    def prior_scores(self, reference: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        """(C,) the class score under the mean word distribution of `reference` inputs (training images):
        subtracted from `class_scores`, it scores how much more likely a name's words are for this image."""
        names = self.word_bag(_tokenize(classnames, self.model.context_length).to(reference.device))  # (C, V)
        mean = self.word_log_probs(reference).exp().mean(dim=0)  # (V,)
        return names @ mean.clamp(min=1e-12).log()


class CaptionDecoder(nn.Module):
    """Causal transformer over caption tokens; the image embedding is added to the start token's input."""

    def __init__(
        self, embed_dim: int, vocab_size: int, context_length: int, width: int, layers: int, heads: int
    ):
        super().__init__()
        self.image_proj = nn.Linear(embed_dim, width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.randn(context_length, width) * 0.01)
        self.transformer = Transformer(width, layers, heads, 4.0, "gelu")
        self.transformer.init_weights()
        self.ln_final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, image_embedding: Tensor, inputs: Tensor) -> Tensor:  # (B, E), (B, L) -> (B, L, V)
        x = self.token_embedding(inputs) + self.positional_embedding[: inputs.shape[1]]  # (B, L, W)
        x = torch.cat([x[:, :1] + self.image_proj(image_embedding)[:, None], x[:, 1:]], dim=1)
        return self.head(self.ln_final(self.transformer(x, causal=True)))


class CaptioningObjective(_VocabMixin):
    """Predict caption token t+1 from the image and tokens <= t (teacher forcing), up to and including EOT."""

    def __init__(self, model: nn.Module, vocab: Tensor):
        super().__init__()
        self.model = model
        self._init_vocab(vocab, model.config.text.vocab_size)
        text = model.config.text
        self.decoder = CaptionDecoder(
            model.config.embed_dim, len(vocab), text.context_length, text.width, text.layers, text.heads
        )

    def token_log_likelihood(self, image_embedding: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(summed log-likelihood (B,), predicted token count (B,)) of each caption."""
        length = int(tokens.argmax(dim=-1).max()) + 1  # up to the longest EOT
        ids = self.compact(tokens[:, :length], "caption").clamp(min=0)  # (B, L')
        logits = self.decoder(image_embedding, ids[:, :-1]).float()  # (B, L'-1, V)
        targets = ids[:, 1:]
        valid = torch.arange(1, length, device=tokens.device) <= tokens.argmax(
            dim=-1, keepdim=True
        )  # (B, L'-1)
        picked = F.log_softmax(logits, dim=-1).gather(2, targets[..., None])[..., 0]  # (B, L'-1)
        return (picked * valid).sum(dim=1), valid.sum(dim=1)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        total, count = self.token_log_likelihood(
            image_embedding(self.model, batch_images(batch)), batch["text"]
        )
        return {"loss": -total.sum() / count.sum()}

    @torch.no_grad()
    def class_scores(self, images: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        embedding = image_embedding(self.model, images)  # (N, E)
        scores = torch.zeros(len(images), len(classnames), device=images.device)
        for c, name in enumerate(classnames):
            tokens = _tokenize([t.format(name) for t in templates], self.model.context_length).to(
                images.device
            )
            for prompt in tokens:  # (L,)
                total, _ = self.token_log_likelihood(embedding, prompt.expand(len(images), -1))
                scores[:, c] += total / len(templates)
        return scores

    @torch.no_grad()
    def prior_scores(self, reference: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        """(C,) each class's prompts' log-likelihood averaged (in probability) over `reference` inputs."""
        if len(templates) != 1:
            raise ValueError(f"CaptioningObjective.prior_scores: one template, got {len(templates)}")
        log_count = torch.log(torch.tensor(float(len(reference))))
        per_prompt = self.class_scores(reference, classnames, templates)  # (R, C)
        return torch.logsumexp(per_prompt, dim=0) - log_count


class SupervisedObjective(nn.Module):
    """Cross-entropy on the labels through a linear head on the image embedding (the robustness baseline)."""

    def __init__(self, model: nn.Module, num_classes: int):
        super().__init__()
        self.model = model
        self.head = nn.Linear(model.config.embed_dim, num_classes)

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits = self.head(image_embedding(self.model, batch_images(batch)))
        return {"loss": F.cross_entropy(logits, batch["labels"])}

    @torch.no_grad()
    def class_scores(self, images: Tensor, classnames: Sequence[str], templates: Sequence[str]) -> Tensor:
        if len(classnames) != self.head.out_features:
            raise ValueError(
                f"supervised head has {self.head.out_features} classes, asked for {len(classnames)}"
            )
        return self.head(image_embedding(self.model, images))


def make_objective(
    name: str,
    model: nn.Module,
    classnames: Sequence[str],
    caption_texts: Sequence[str],
    extra_vocabulary: Sequence[str] = (),
) -> nn.Module:
    """One of OBJECTIVES around `model`; word vocabularies come from the training captions `caption_texts`
    and the texts `extra_vocabulary` (prompts that will be scored)."""
    if name == "contrastive":
        return ContrastiveScorer(model)
    if name == "supervised":
        if not classnames:
            raise ValueError(
                "loss.objective=supervised needs labelled data (class names), e.g. data.kind=labelled"
            )
        return SupervisedObjective(model, len(classnames))
    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r}: valid objectives are {', '.join(OBJECTIVES)}")
    if not caption_texts:
        raise ValueError(f"loss.objective={name} needs the training captions (the loader's caption_texts)")
    vocab = caption_vocabulary(list(caption_texts) + list(extra_vocabulary), model.context_length)
    return BagOfWordsObjective(model, vocab) if name == "bag-of-words" else CaptioningObjective(model, vocab)


def _registered(name: str):
    def factory(model: nn.Module, train_data, loss) -> nn.Module:
        classes = list(getattr(train_data, "classes", []) or [])
        return make_objective(name, model, classes, list(getattr(train_data, "caption_texts", []) or []))

    return factory


for _name in ("bag-of-words", "captioning", "supervised"):
    register_objective(_name, _registered(_name))


@torch.no_grad()
def class_scores(
    objective: nn.Module,
    images: Tensor,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 500,
) -> Tensor:
    """(N, C) `objective.class_scores` over batches of images (or cached features), in eval mode (restored)."""
    was_training = objective.training
    objective.eval()
    try:
        parts = [
            objective.class_scores(images[start : start + batch_size], classnames, templates).cpu()
            for start in range(0, len(images), batch_size)
        ]
    finally:
        objective.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, len(classnames))


def hits(
    objective: nn.Module,
    images: Tensor,
    labels: Tensor,
    classnames: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 500,
) -> Tensor:
    """(N,) bool: top-1 of `objective.class_scores` on preprocessed images (N, 3, S, S) is right."""
    return class_scores(objective, images, classnames, templates, batch_size).argmax(dim=1) == labels.cpu()


def accuracy(*args, **kwargs) -> float:
    """Top-1 accuracy: the mean of `hits(*args, **kwargs)`; 0 for no images."""
    right = hits(*args, **kwargs)
    return float(right.float().mean()) if len(right) else 0.0
