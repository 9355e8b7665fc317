"""Tag conditioning: one learned token per image-level tag plus a null token, for a UNet with
cross-attention (``UNet2DConditionModel``).

A scene's tags (the kinds of object it shows: a caption's cheap analogue) become a fixed-length
token sequence: slot 0 is the null token, always present; slot k + 1 holds tag k's token, masked
out (``encoder_attention_mask``) when the scene lacks that tag. Classifier-free guidance drops
every tag slot, leaving the null token alone. Each pixel's cross-attention over the slots then
says which tag it belongs to, which is what the ``attention`` labeller reads: tag k's token per
class, the null token for the background.

Stored beside a pipeline's ``unet/`` as ``tags/tags.json`` (the vocabulary and how often each
tag set occurred in training, which generation draws from) and ``tags/embeddings.safetensors``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from synth.errors import UsageError
from synth.seeding import sample_rng

FOLDER = "tags"
NULL = "<null>"


@dataclass(frozen=True)
class TagVocabulary:
    """The tags a model knows, in slot order, and the tag sets it was trained on with counts."""

    tags: tuple[str, ...]
    sets: tuple[tuple[tuple[str, ...], int], ...] = ()

    @classmethod
    def from_training(cls, tag_lists: Sequence[Sequence[str] | None], classes: Sequence[str] = ()) -> "TagVocabulary":
        """Vocabulary of the training tags: those in ``classes`` first, in that order (so slot k + 1
        is a class's token whenever the tags are class names), then the rest alphabetically; the
        tag sets generation draws from are those of the tagged images."""
        tag_lists = [tags for tags in tag_lists if tags is not None]  # None: an untagged image (the null token)
        seen = {t for tags in tag_lists for t in tags}
        ordered = [c for c in classes if c in seen] + sorted(seen - set(classes))
        counts = Counter(tuple(sorted(set(tags), key=ordered.index)) for tags in tag_lists)
        return cls(tuple(ordered), tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))

    @property
    def slots(self) -> int:
        return len(self.tags) + 1

    def slot(self, tag: str) -> int:
        return self.tags.index(tag) + 1

    def check(self, tags: Iterable[str], where: str) -> list[str]:
        """Problems with a tag list this model should condition on (unknown tags)."""
        unknown = [t for t in tags if t not in self.tags]
        return [f"{where}: unknown tag {t!r} (the model knows {', '.join(self.tags)})" for t in unknown]

    def presence(self, tag_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """(B, len(tags)) bool: which tags each row has (none for an untagged row: the null token)."""
        out = np.zeros((len(tag_lists), len(self.tags)), bool)
        for i, tags in enumerate(tag_lists):
            for t in tags or ():
                out[i, self.tags.index(t)] = True
        return out

    def draw(self, seed: int, index: int, op: str = "tags") -> list[str]:
        """Sample ``index``'s tag set, drawn from the training distribution by (seed, index, op)."""
        if not self.sets:
            raise UsageError("the model records no training tag sets; give the generator's tags")
        counts = np.array([n for _, n in self.sets], float)
        pick = sample_rng(seed, index, op).choice(len(self.sets), p=counts / counts.sum())
        return list(self.sets[pick][0])

    def to_json(self) -> dict:
        return {"tags": list(self.tags), "null": NULL, "sets": [[list(s), n] for s, n in self.sets]}

    @classmethod
    def from_json(cls, data: dict) -> "TagVocabulary":
        return cls(tuple(data["tags"]), tuple((tuple(s), int(n)) for s, n in data.get("sets", [])))


def read_vocabulary(model_folder: Path) -> TagVocabulary | None:
    """The vocabulary of a local pipeline folder, or None when it is not tag-conditioned."""
    path = Path(model_folder) / FOLDER / "tags.json"
    if not path.is_file():
        return None
    try:
        return TagVocabulary.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: not a tag vocabulary ({e})") from None


def make_encoder(slots: int, dim: int):
    """The token table: a torch module mapping tag presence to (hidden states, attention mask)."""
    import torch

    class TagEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(slots, dim)
            torch.nn.init.normal_(self.embedding.weight, std=1.0)

        def forward(self, presence):
            """presence (B, slots - 1) bool -> (B, slots, dim) states and (B, slots) float mask."""
            b = presence.shape[0]
            states = self.embedding.weight[None].expand(b, -1, -1)
            mask = torch.cat([torch.ones(b, 1, device=presence.device), presence.float()], 1)
            return states, mask

    return TagEncoder()


def save(folder: Path, vocabulary: TagVocabulary, encoder) -> None:
    from safetensors.torch import save_file

    out = Path(folder) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    (out / "tags.json").write_text(json.dumps({**vocabulary.to_json(), "dim": int(encoder.embedding.embedding_dim)}, indent=1))
    save_file({"embedding": encoder.embedding.weight.detach().float().cpu().contiguous()}, out / "embeddings.safetensors")


def load_encoder(model_folder: Path, vocabulary: TagVocabulary):
    """The saved token table of a tag-conditioned pipeline (safetensors only)."""
    from safetensors.torch import load_file

    path = Path(model_folder) / FOLDER / "embeddings.safetensors"
    if not path.is_file():
        raise UsageError(f"{path}: missing (a tag-conditioned model keeps its tokens there)")
    weight = load_file(path)["embedding"]
    if weight.shape[0] != vocabulary.slots:
        raise UsageError(f"{path}: {weight.shape[0]} tokens for {len(vocabulary.tags)} tags and the null token")
    encoder = make_encoder(weight.shape[0], weight.shape[1])
    encoder.embedding.weight.data.copy_(weight)
    return encoder.eval().requires_grad_(False)
