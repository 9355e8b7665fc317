"""CLIP, DINOv2 (through transformers: a hub id or a local folder, safetensors, no remote code)
and Inception (torch-fidelity's FID network, from a local weights file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from synth.devices import DEVICE_PATTERN, torch_device
from synth.errors import RunError, UsageError
from synth.paths import model_ref
from synth.protocols import FeatureExtractor, PluginConfig


def _local_or_hub(ref: str, plan_or_context) -> tuple[str, bool]:
    return model_ref(ref, plan_or_context.resolve_path)


class HFConfig(PluginConfig):
    model: str = Field(description="Hub id or local folder")
    revision: str | None = None
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    batch_size: int = Field(64, ge=1)


class _HFExtractor(FeatureExtractor):
    Config = HFConfig

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        where, local = _local_or_hub(config.model, plan)
        if local and not Path(where).is_dir():
            return [f"model: no such folder {where}"]
        return []

    def _load(self, loader):
        import torch

        self.torch = torch
        self.device = torch_device(torch, self.config.device)
        where, _ = _local_or_hub(self.config.model, self.context)
        try:
            model = loader.from_pretrained(where, revision=self.config.revision, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise RunError(f"extractor {self.name!r}: cannot load {self.config.model!r}: {str(e).splitlines()[0]} (offline? a local folder works)") from None
        return model.to(self.device).eval()

    def _pixels(self, images: np.ndarray, size: int, mean, std):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        return ((x - m) / s).to(self.device)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.config.model, "revision": self.config.revision}


class ClipFeatures(_HFExtractor):
    """CLIP image embeddings (normalised), and text embeddings for clip_score."""

    name = "clip"

    def setup(self) -> None:
        from transformers import CLIPModel, CLIPTokenizer

        self.model = self._load(CLIPModel)
        where, _ = _local_or_hub(self.config.model, self.context)
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(where, revision=self.config.revision)
        except (OSError, ValueError):
            self.tokenizer = None  # image features still work; clip_score will say it needs one
        self.size = self.model.config.vision_config.image_size

    def embed(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.config.batch_size):
                x = self._pixels(images[s : s + self.config.batch_size], self.size, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
                f = self.model.get_image_features(pixel_values=x)
                f = getattr(f, "pooler_output", f)
                out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        if self.tokenizer is None:
            raise UsageError(f"extractor 'clip': {self.config.model} has no tokenizer files; clip_score needs one")
        with torch.inference_mode():
            tok = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(self.device)
            f = self.model.get_text_features(**tok)
            f = getattr(f, "pooler_output", f)
            return torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()


class DinoFeatures(_HFExtractor):
    """DINOv2 image embeddings (the CLS token)."""

    name = "dinov2"

    def setup(self) -> None:
        from transformers import AutoModel

        self.model = self._load(AutoModel)
        self.size = int(getattr(self.model.config, "image_size", 224))

    def embed(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.config.batch_size):
                x = self._pixels(images[s : s + self.config.batch_size], self.size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
                out.append(self.model(pixel_values=x).last_hidden_state[:, 0].float().cpu().numpy())
        return np.concatenate(out)


class InceptionConfig(PluginConfig):
    weights: str = Field(description="torch-fidelity's pt_inception-2015-12-05 weights file (downloaded once elsewhere)")
    feature: str = Field("2048", description="Which layer: 2048 (FID's), 768, 192 or 64")
    device: str = Field("auto", pattern=DEVICE_PATTERN)
    batch_size: int = Field(64, ge=1)


class InceptionFeatures(FeatureExtractor):
    """The Inception-v3 network FID is defined on (torch-fidelity), from a local weights file."""

    name = "inception"
    Config = InceptionConfig

    @classmethod
    def check_plan(cls, config, plan) -> list[str]:
        if not plan.resolve_path(config.weights).is_file():
            return [f"weights: no such file {plan.resolve_path(config.weights)} (it cannot be downloaded at run time)"]
        return []

    def setup(self) -> None:
        import torch

        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise UsageError("extractor 'inception' needs torch-fidelity: pip install 'synth-data[filters]'") from None
        self.torch = torch
        self.device = torch_device(torch, self.config.device)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", [self.config.feature], feature_extractor_weights_path=str(self.context.resolve_path(self.config.weights)))
        self.net.to(self.device).eval()

    def describe(self) -> dict:
        return {"name": self.name, "feature": self.config.feature}

    def embed(self, images: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for s in range(0, len(images), self.config.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[s : s + self.config.batch_size])).permute(0, 3, 1, 2).to(self.device)
                out.append(self.net(x)[0].float().cpu().numpy())
        return np.concatenate(out)
