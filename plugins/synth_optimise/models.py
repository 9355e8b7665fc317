"""The downstream models the built-in tasks train: the label-efficiency bench's U-Net (segmentation)
and the views bench's CNN (classification). The benches import them from here, so a bench figure
and a search's score come from the same model."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np


def small_unet(torch, k: int, width: int = 32):
    """Two down, two up, skip connections; ``k`` output classes."""
    nn = torch.nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU())

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = width
            self.e1, self.e2, self.e3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.u2, self.d2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.u1, self.d1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.out = nn.Conv2d(w, k, 1)

        def features(self, x):
            e1 = self.e1(x)
            e2 = self.e2(nn.functional.max_pool2d(e1, 2))
            e3 = self.e3(nn.functional.max_pool2d(e2, 2))
            d2 = self.d2(torch.cat([self.u2(e3), e2], 1))
            return self.d1(torch.cat([self.u1(d2), e1], 1))

        def forward(self, x):
            return self.out(self.features(x))

    return UNet()


def pixels(torch, images):
    """(N, H, W, 3) uint8 images as the models take them: (N, 3, H, W) floats in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_tensors(torch, images, masks):
    return pixels(torch, images), torch.from_numpy(np.asarray(masks).astype(np.int64))


def train_segmenter(torch, sets, steps: int, seed: int, classes: int, batch: int = 32, lr: float = 1e-3, model=None, width: int = 16):
    """Train on ``sets``: a list of (images, masks, share) drawn from in every batch by share."""
    torch.manual_seed(seed)
    net = model or small_unet(torch, classes, width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    data = [(*to_tensors(torch, im, m), share) for im, m, share in sets]
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        xs, ys = [], []
        for x, y, share in data:
            n = max(1, round(batch * share))
            idx = rng.integers(0, len(x), n)
            xs.append(x[idx])
            ys.append(y[idx])
        x, y = torch.cat(xs), torch.cat(ys)
        if rng.random() < 0.5:  # flips: the world has no preferred orientation
            x, y = x.flip(-1), y.flip(-1)
        if rng.random() < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def segment(torch, net, images, batch: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            x, _ = to_tensors(torch, images[s : s + batch], np.zeros(1))
            out.append(net(x).argmax(1).numpy())
    return np.concatenate(out)


def small_classifier(torch, classes: int):
    # Batch norm and a global max pool: without them this CNN stayed at chance on the shapes
    # kind task even with 400 real images per class (plain conv + average pool: 0.37; this: 0.70).
    nn = torch.nn

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 64), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(64, classes),
    )


# What a batch may be turned by, for a task whose class does not change with it: the shapes'
# kind is the same after a quarter turn, a mirror or another order of the colour channels, and
# without these the CNN learns the kind from a few hundred scenes poorly (measured in
# docs/results/conditional-fewshot.md).
Augment = Literal["rotate", "flip", "channels"]
AUGMENTS = get_args(Augment)


def augmented(torch, xb, augment, g):
    """The batch with each image turned by a random quarter turn ("rotate"), mirrored half the time
    ("flip") and its colour channels in a random order ("channels"), drawn from ``g``."""
    n = len(xb)
    if "rotate" in augment:
        turns = torch.randint(0, 4, (n,), generator=g)
        xb = xb.clone()
        for k in range(1, 4):  # one call per quarter turn, not per image
            xb[turns == k] = torch.rot90(xb[turns == k], k, (2, 3))
    if "flip" in augment:
        mirror = torch.rand(n, generator=g) < 0.5
        xb = torch.where(mirror[:, None, None, None], xb.flip(3), xb)
    if "channels" in augment:
        order = torch.stack([torch.randperm(xb.shape[1], generator=g) for _ in range(n)])
        xb = torch.gather(xb, 1, order[:, :, None, None].expand_as(xb))
    return xb


def train_classifier(torch, x, y, steps: int, seed: int, classes: int, batch: int = 64, lr: float = 1e-3, augment=()):
    unknown = set(augment) - set(AUGMENTS)
    if unknown:
        raise ValueError(f"augment: unknown {sorted(unknown)} (known: {', '.join(AUGMENTS)})")
    torch.manual_seed(seed)
    net = small_classifier(torch, classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt = pixels(torch, x)
    yt = torch.from_numpy(np.asarray(y).astype(np.int64))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (min(batch, len(xt)),), generator=g)
        xb = augmented(torch, xt[idx], augment, g) if augment else xt[idx]
        loss = torch.nn.functional.cross_entropy(net(xb), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def classify(torch, net, images, batch: int = 256) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            out.append(net(pixels(torch, images[s : s + batch])).argmax(1).numpy())
    return np.concatenate(out)
