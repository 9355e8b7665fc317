"""The region classifier: an ensemble of small CNNs trained on the labelled instances' crops,
with quarter turns, flips and small shifts (a shape's class does not depend on them) and, when
it sees pixels, a colour jitter (so it learns the outline, not the colour of a few instances)."""

from __future__ import annotations

import numpy as np

from synth.regions import colour_regions
from synth.seeding import sample_seed

from .crops import crop


def small_cnn(torch, channels: int, num_classes: int):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def _augment(torch, x, g):
    x = torch.rot90(x, int(torch.randint(0, 4, (1,), generator=g)), (2, 3))
    if float(torch.rand(1, generator=g)) < 0.5:
        x = x.flip(3)
    dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
    x = torch.roll(x, (dy, dx), (2, 3))
    if x.shape[1] > 1:  # pixels too: scale each colour channel, so colour cannot decide alone
        scale = 0.75 + 0.5 * torch.rand(x.shape[0], x.shape[1] - 1, 1, 1, generator=g)
        x = torch.cat([x[:, :-1] * scale, x[:, -1:]], 1)
    return x


def train_classifiers(torch, crops: np.ndarray, labels: np.ndarray, num_classes: int, ensemble: int, steps: int, seed: int, batch: int = 64):
    """``ensemble`` CNNs on (M, C, S, S) ``crops`` of class ids ``labels``; each class weighted by
    the inverse of its count, so a class with few instances is not drowned. Seeded by (seed,
    member) only. Classes with no instance get no logit a region could win by (see
    classify_regions)."""
    x, y = torch.from_numpy(crops), torch.from_numpy(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float32)
    weight = torch.from_numpy(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0).astype(np.float32))
    nets = torch.nn.ModuleList()
    for member in range(ensemble):
        s = sample_seed(seed, member, "region_class")
        g = torch.Generator().manual_seed(s)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            net = small_cnn(torch, crops.shape[1], num_classes)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(y), (batch,), generator=g)
            loss = torch.nn.functional.cross_entropy(net(_augment(torch, x[idx], g)), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
        nets.append(net.eval())
    return nets


def probabilities(torch, nets, crops: np.ndarray, known: np.ndarray) -> np.ndarray:
    """(M, num_classes): the ensemble's mean softmax over the four quarter turns of each crop,
    over the classes ``known`` (bool per class: those it has seen instances of) only."""
    x = torch.from_numpy(crops)
    mask = torch.from_numpy(np.where(known, 0.0, -np.inf).astype(np.float32))
    with torch.no_grad():
        p = sum(torch.softmax(net(torch.rot90(x, k, (2, 3))) + mask, 1) for net in nets for k in range(4))
    return (p / (4 * len(nets))).numpy()


def classify_regions(torch, nets, known: np.ndarray, image: np.ndarray, labels: np.ndarray, background: int, tolerance: int,
                     size: int, with_image: bool, prior: float, min_pixels: int) -> np.ndarray:
    """``labels`` (H, W) with each colour region of its non-background pixels given one class:
    argmax of log p(class | the region's crop) + prior * log(the region's smoothed pixel-vote
    share). Background pixels, so the outline, stay; regions under ``min_pixels`` keep theirs."""
    out = labels.copy()
    inside = labels != background
    if not inside.any():
        return out
    # one pass over the pixels: each region's size and its pixel votes, by dense region number
    _, rid = np.unique(colour_regions(image, inside, tolerance)[inside], return_inverse=True)
    num_classes = len(known)
    votes = np.zeros((rid.max() + 1, num_classes))
    np.add.at(votes, (rid, labels[inside]), 1)
    ids = np.flatnonzero(votes.sum(1) >= min_pixels)
    if not len(ids):
        return out
    where = np.full(labels.shape, -1)
    where[inside] = rid
    crops = np.stack([crop(image, where == r, size, with_image) for r in ids])
    p = probabilities(torch, nets, crops, known)
    share = (votes[ids] + 1) / (votes[ids] + 1).sum(1, keepdims=True)
    with np.errstate(divide="ignore"):
        score = np.log(p) + prior * np.log(share)
    score[:, background] = -np.inf
    new = np.full(len(votes), -1)
    new[ids] = score.argmax(1)
    changed = inside & (new[np.maximum(where, 0)] >= 0)
    out[changed] = new[where[changed]]
    return out
