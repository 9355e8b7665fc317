"""`image` attribute probe: what any image has (its brightness, mean colour and contrast), the
default when no world-specific probe is named."""

from __future__ import annotations

import numpy as np

from synth.protocols import PluginConfig, Probe

LUMA = np.array([0.299, 0.587, 0.114])


class ImageProbeConfig(PluginConfig):
    pass


class ImageProbe(Probe):
    """Brightness (mean luma), colour (mean RGB) and contrast (luma's standard deviation) of any image."""

    name = "image"
    Config = ImageProbeConfig

    def setup(self) -> None:
        self.attributes = ["brightness", "colour", "contrast"]

    def measure(self, images: np.ndarray) -> dict[str, np.ndarray]:
        x = images.astype(np.float64) / 255.0
        luma = x @ LUMA
        return {"brightness": luma.mean((1, 2)), "colour": x.mean((1, 2)), "contrast": luma.std((1, 2))}

    def changed(self, before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        c_b, c_a = before["contrast"], after["contrast"]
        return {
            "brightness": np.abs(after["brightness"] - before["brightness"]) > 0.08,
            "colour": np.linalg.norm(after["colour"] - before["colour"], axis=-1) > 0.1,
            "contrast": np.abs(c_a - c_b) > np.maximum(0.3 * c_b, 0.02),
        }
