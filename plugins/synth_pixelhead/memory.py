"""What labelling with the pixel head holds in memory, said before it starts.

Per image: the feature pyramid at the UNet's own resolutions (in the generator's dtype), and, per
ensemble member in turn, the first layer's output brought to full resolution (the running sum,
one level's upsampled part, and its per-pixel copy: three maps of hidden[0] float32 channels),
the later layers' activations (two copies each) and the class probabilities, votes and their
means. For Stable Diffusion at 512 px (five blocks, three timesteps, fp16) that is about 520 MiB,
nearly all of it the full-resolution first-layer maps. The UNet's own working memory while it
computes the features comes on top, as does the model."""

from __future__ import annotations

from synth.errors import UsageError

MiB, GiB = 2**20, 2**30


def labelling_bytes(shapes: list[tuple[int, int, int]], dtype_bytes: int, size: tuple[int, int], hidden: list[int], classes: int) -> int:
    """Bytes one image takes while the head labels it (see the module's note)."""
    pixels = size[0] * size[1]
    pyramid = sum(c * h * w for c, h, w in shapes) * dtype_bytes
    first = 3 * hidden[0] * pixels * 4
    later = 2 * sum(hidden[1:]) * pixels * 4
    outputs = 4 * classes * pixels * 4
    return pyramid + first + later + outputs


def check(per_image: int, batch: int, limit_gb: float | None, size: tuple[int, int]) -> str:
    """The report line; a one-line refusal when a batch would exceed ``limit_gb``."""
    total = per_image * batch
    mib = per_image / MiB
    line = f"labelling takes about {mib:.{1 if mib < 10 else 0}f} MiB per {size[1]}x{size[0]} image, {total / GiB:.2f} GiB per feature_batch of {batch}"
    if limit_gb is not None and total > limit_gb * GiB:
        fits = int(limit_gb * GiB // per_image)
        fix = f"set feature_batch = {fits}" if fits >= 1 else "even one image does not fit: use fewer blocks or timesteps, or a smaller image"
        raise UsageError(f"stage 'pixelhead'.max_memory_gb: {line}, over max_memory_gb = {limit_gb:g}; {fix}")
    return line
