"""The manifest's [discover] table (register_tables): what `synth discover` explains and how."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from synth.directions import NAME_PATTERN
from synth.protocols import PluginConfig


class DiscoverConfig(PluginConfig):
    """What `synth discover` asks of a classifier: which directions in the generator's h-space
    change its decision for ``target`` most, on the images of the manifest's source."""

    classifier: dict[str, Any] = Field(description='The classifier to explain, e.g. {name = "torch", path = "models/my-classifier"}')
    target: str = Field(description="The class whose decision is explained (one of the classifier's classes)")
    samples: int = Field(64, ge=2, le=100_000, description="How many images of the source the directions are found and ranked on")
    candidates: int = Field(8, ge=1, le=64, description="Candidate directions: the top principal components of the per-image gradients of the target's log-odds in h-space")
    hspace: dict[str, Any] | list[dict[str, Any]] = Field(default_factory=dict, description='The space: {block = "mid", start = 0.0, until = 0.5, step = 1.0} (the UNet block whose output is shifted, or "condition": the conditioning its cross-attention reads; the part of the sampling steps, as shares noisiest first, it is shifted in; and its unit step as a multiple of the block\'s RMS); a list of such tables searches each space, `candidates` each, ranked together, each stepped in its own unit')
    alphas: list[float] = Field([-1.0, -0.5, 0.0, 0.5, 1.0], min_length=2, description="The steps of each strip, in units of each space's step (the block's RMS times its `step`); ranking and counterfactuals use the largest")
    show: int = Field(4, ge=1, le=64, description="How many of the ranked directions are drawn as strips and saved")
    strip_images: int = Field(6, ge=1, le=64, description="Images per strip")
    baseline: int = Field(2, ge=0, le=16, description="Random directions (seeded, unit RMS) stepped as far as the candidates, whose changes are shown beside each direction's: what any shift of that size moves (0: none)")
    probe: dict[str, Any] = Field(default_factory=lambda: {"name": "image"}, description='Attribute probes that name what each direction moves, e.g. {name = "shapes"}')
    localise: bool = Field(False, description="Judge each direction where the classifier looks: in each image, the shift is kept only at the fewest places of a block that hold 90% of the image's squared gradient of the target's log-odds, grown by one place (ACE localises its counterfactuals likewise), so the ranking, the names, the flip rate and MNAC see what the classifier reads and not what else the direction moves; the strips and the saved direction stay the direction everywhere. No effect in a conditioning's space (it has no places)")
    save_as: str | None = Field(None, pattern=NAME_PATTERN, description="Name prefix of the saved directions (default: the dataset's name); each is saved as PREFIX-TARGET-RANK")

    @model_validator(mode="after")
    def _steps(self):
        if max(abs(a) for a in self.alphas) == 0:
            raise ValueError("alphas: at least one step must be non-zero")
        for space in self.spaces():
            step = space.get("step", 1.0)
            if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 100:
                raise ValueError(f"hspace.step: {step!r} must be a number in (0, 100] (the space's unit step in its block's RMS)")
        blocks = [str(s.get("block") or "mid") for s in self.spaces()]
        if not blocks or len(set(blocks)) < len(blocks):
            raise ValueError(f"hspace: each space is searched once; blocks {blocks}")
        return self

    def spaces(self) -> list[dict[str, Any]]:
        """The h-space options of each space searched, in order."""
        return list(self.hspace) if isinstance(self.hspace, list) else [self.hspace]

    def steps(self) -> list[float]:
        """Each space's unit step, as a multiple of its block's RMS."""
        return [float(s.get("step", 1.0)) for s in self.spaces()]

    def generator_options(self) -> list[dict[str, Any]]:
        """Each space's options as the generator's h-space takes them (without discover's step)."""
        return [{k: v for k, v in s.items() if k != "step"} for s in self.spaces()]

    def reach(self) -> float:
        """The counterfactual step: the largest of the strip's steps."""
        return max(abs(a) for a in self.alphas)
