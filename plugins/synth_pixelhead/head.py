"""The pixel head: an ensemble of small per-pixel MLPs over a generator's feature pyramid.

Training reads pixels from a bounded fp16 bank (see bank.py). Labelling never builds the
full-resolution feature map: the first layer is linear and so is bilinear upsampling, so each
MLP's first layer runs on every pyramid level at its own resolution and only its 128-channel
output is upsampled. Input standardisation is folded into that layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synth.seeding import sample_seed


def build_member(torch, in_ch: int, hidden: list[int], num_classes: int):
    nn = torch.nn
    layers, prev = [], in_ch
    for width in hidden:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


@dataclass
class Ensemble:
    members: list  # torch nn.Sequential, eval mode
    mean: np.ndarray  # (C,) input standardisation
    std: np.ndarray
    num_classes: int

    def to(self, device) -> "Ensemble":
        self.members = [m.to(device) for m in self.members]
        return self

    # -- persistence ----------------------------------------------------------------------------
    def state(self) -> dict:
        import torch

        out = {"mean": torch.from_numpy(self.mean.astype(np.float32)), "std": torch.from_numpy(self.std.astype(np.float32))}
        for m, member in enumerate(self.members):
            for k, v in member.state_dict().items():
                out[f"member{m}.{k}"] = v.detach().cpu().contiguous()
        return out

    @classmethod
    def from_state(cls, state: dict, hidden: list[int], num_classes: int, ensemble: int) -> "Ensemble":
        import torch

        mean, std = state["mean"].numpy(), state["std"].numpy()
        members = []
        for m in range(ensemble):
            member = build_member(torch, len(mean), hidden, num_classes)
            prefix = f"member{m}."
            member.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            members.append(member.eval())
        return cls(members, mean, std, num_classes)

    # -- labelling ----------------------------------------------------------------------------
    def _first_layer(self, member, pyramid: list, size: tuple[int, int]):
        """Pre-activation of the first Linear at (B, width, H, W), computed per pyramid level."""
        import torch
        import torch.nn.functional as F

        lin = member[0]
        w = lin.weight / torch.from_numpy(self.std).to(lin.weight)  # fold (x - mean) / std
        b = lin.bias - w @ torch.from_numpy(self.mean).to(lin.weight)
        out, c0 = None, 0
        for f in pyramid:
            c = f.shape[1]
            part = torch.einsum("oc,bchw->bohw", w[:, c0 : c0 + c].to(f), f)
            part = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
            out = part if out is None else out + part
            c0 += c
        return out + b.to(out).view(1, -1, 1, 1)

    def predict(self, pyramid: list, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel labels (B, H, W) by majority vote and Jensen-Shannon uncertainty (B, H, W)."""
        import torch

        votes = mean_p = mean_h = None
        with torch.inference_mode():
            for member in self.members:
                x = self._first_layer(member, pyramid, size)
                bsz, _, h, w = x.shape
                x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
                logits = member[1:](x)  # BatchNorm in eval mode is per-pixel affine
                p = torch.softmax(logits.float(), dim=1)
                onehot = torch.nn.functional.one_hot(p.argmax(1), self.num_classes).float()
                votes = onehot if votes is None else votes + onehot
                mean_p = p if mean_p is None else mean_p + p
                ent = entropy(p)
                mean_h = ent if mean_h is None else mean_h + ent
            n = len(self.members)
            mean_p, mean_h = mean_p / n, mean_h / n
            js = (entropy(mean_p) - mean_h).clamp_min(0)
            # majority vote; ties go to the class with the higher mean probability
            labels = (votes + 1e-3 * mean_p).argmax(1)
        shape = (bsz, h, w)
        return labels.view(shape).cpu().numpy(), js.view(shape).cpu().numpy()


def entropy(p):
    """Shannon entropy (nats) over the last axis' classes: rows of probabilities (N, K)."""
    import torch

    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)


def js_divergence(member_probs: np.ndarray) -> np.ndarray:
    """Generalised Jensen-Shannon divergence of M distributions (M, ..., K): H(mean) - mean(H).

    The formula DatasetGAN intends, on probabilities (the original computed it on logits).
    """
    p = np.asarray(member_probs, dtype=np.float64)
    h = lambda q: -(q * np.log(np.clip(q, 1e-12, None))).sum(-1)  # noqa: E731
    return np.maximum(h(p.mean(0)) - h(p).mean(0), 0.0)


def image_uncertainty(js: np.ndarray, top_fraction: float) -> np.ndarray:
    """Per image (B,): the mean of its top ``top_fraction`` pixel scores (DatasetGAN's rule)."""
    flat = js.reshape(len(js), -1)
    k = max(1, int(math.ceil(flat.shape[1] * top_fraction)))
    top = -np.sort(-flat, axis=1)[:, :k]
    return top.mean(1)


def pixel_weights(labels: np.ndarray, num_classes: int, balance: float) -> np.ndarray | None:
    """Per-pixel sampling weights so class c is drawn in proportion to count_c ** (1 - balance):
    0 keeps the pixels' own frequencies (None: uniform), 1 draws every present class equally."""
    if balance == 0:
        return None
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = counts[labels] ** -balance
    return w / w.sum()


def train_ensemble(
    bank, num_classes: int, hidden: list[int], ensemble: int, steps: int, batch: int, lr: float, seed: int, progress=None, device="cpu", balance: float = 0.0
) -> tuple[Ensemble, dict]:
    """Train ``ensemble`` MLPs on the bank's pixels; each member's randomness from (seed, member).

    Members start from the same CPU-seeded weights on any device; the bank stays in host memory
    and only each step's pixels move to ``device``. ``balance`` re-weights which pixels batches
    draw (see pixel_weights): small objects are otherwise drowned by the background."""
    import torch

    mean, std = bank.moments()
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)
    n = len(bank)
    weights = pixel_weights(bank.labels[:n].astype(np.int64), num_classes, balance)
    weights_t = None if weights is None else torch.from_numpy(weights)
    members, accs = [], []
    for m in range(ensemble):
        torch.manual_seed(sample_seed(seed, m, "pixelhead-member"))
        gen = torch.Generator().manual_seed(sample_seed(seed, m, "pixelhead-batches"))
        member = build_member(torch, bank.channels, hidden, num_classes).to(device)
        opt = torch.optim.Adam(member.parameters(), lr=lr)
        member.train()
        for step in range(steps):
            if weights_t is None:
                idx = torch.randint(0, n, (min(batch, n),), generator=gen).numpy()
            else:
                idx = torch.multinomial(weights_t, batch, replacement=True, generator=gen).numpy()
            x, y = bank.rows(idx)
            x = (torch.from_numpy(x).to(device).float() - mean_t) / std_t
            loss = torch.nn.functional.cross_entropy(member(x), torch.from_numpy(y).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress:
                progress(m * steps + step + 1, ensemble * steps)
        member.eval()
        members.append(member)
        accs.append(_accuracy(torch, member, bank, mean_t, std_t))
    return Ensemble(members, mean, std, num_classes), {"train_pixel_accuracy": [round(a, 4) for a in accs]}


def _accuracy(torch, member, bank, mean_t, std_t, limit: int = 32768, chunk: int = 4096) -> float:
    """Training-pixel accuracy on up to ``limit`` bank rows, a chunk at a time (bounded memory)."""
    idx = np.unique(np.linspace(0, len(bank) - 1, min(len(bank), limit)).astype(np.int64))
    right = 0
    with torch.inference_mode():
        for i in range(0, len(idx), chunk):
            x, y = bank.rows(idx[i : i + chunk])
            pred = member((torch.from_numpy(x).to(mean_t.device).float() - mean_t) / std_t).argmax(1).cpu().numpy()
            right += int((pred == y).sum())
    return right / len(idx)
