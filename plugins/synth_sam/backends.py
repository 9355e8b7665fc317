"""The two ways to run SAM, behind one small interface.

``embed(x)``: (B, 3, S, S) input -> image embeddings, batched (the costly part, once per image).
``decode(embedding, points, labels, boxes, multimask)``: one image's embedding and P prompts ->
(P, K, S/4, S/4) mask logits and (P, K) predicted IoUs. Pre- and post-processing live in
``transform`` and are shared, so both backends see the same numbers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from synth.errors import UsageError

from .architecture import RELEASED, SamArchitecture, build_segment_anything, guess_released


def pick_device(torch, device: str):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(torch, dtype: str, device):
    if dtype == "auto":  # half precision where it is fast; CPUs stay in float32
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return getattr(torch, dtype)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: Path, where: str) -> dict:
    """A checkpoint's tensors without running its code: safetensors, or torch.load(weights_only)."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a truncated file, a pickle with code in it, not a checkpoint at all
        raise UsageError(f"{where}: {path} is not a readable SAM checkpoint ({str(e).splitlines()[0][:160]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UsageError(f"{where}: {path} holds no state dict")
    return state


class Backend:
    image_size: int
    name: str

    def __init__(self):
        self.images_embedded = 0  # the encoder's count of images, so tests can see embeddings reused

    def embed(self, x): ...

    def decode(self, embedding, points, labels, boxes, multimask: bool): ...

    def describe(self) -> dict: ...


class SegmentAnythingBackend(Backend):
    """The segment-anything package: a checkpoint file for vit_h / vit_l / vit_b (or any shape
    spelled out as an architecture), its sha256 checked before loading when given."""

    name = "segment-anything"

    def __init__(self, checkpoint: Path, arch: SamArchitecture, arch_name: str, sha256: str | None, device: str, dtype: str):
        super().__init__()
        import torch

        try:
            import segment_anything  # noqa: F401
        except ImportError:
            raise UsageError("stage 'sam': backend 'segment-anything' needs the segment-anything package: pip install 'synth-data[sam]'") from None
        if sha256 is not None:
            got = sha256_of(checkpoint)
            if got != sha256.lower():
                raise UsageError(f"checkpoint: {checkpoint} has sha256 {got[:16]}..., the manifest expects {sha256[:16]}... (a different or damaged file)")
        state = load_state_dict(checkpoint, "checkpoint")
        model = build_segment_anything(arch)
        expected = model.state_dict()
        mismatched = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
        missing = [k for k in expected if k not in state]
        if mismatched or missing:
            width = state.get("image_encoder.patch_embed.proj.weight")
            guess = guess_released(int(width.shape[0])) if width is not None else None
            what = f"it looks like {guess}" if guess else (f"{len(missing)} tensors missing, e.g. {missing[0]}" if missing else f"{mismatched[0]} is {tuple(state[mismatched[0]].shape)}, not {tuple(expected[mismatched[0]].shape)}")
            raise UsageError(f"checkpoint: {checkpoint} is not a {arch_name} SAM ({what}); set model_type to match the file")
        model.load_state_dict({k: state[k] for k in expected}, strict=True)
        self.device = pick_device(torch, device)
        self.dtype = pick_dtype(torch, dtype, self.device)
        # Half precision where the cost is (the image encoder); the prompt encoder and mask
        # decoder stay float32: they are cheap, and segment-anything's prompt encoder computes its
        # positional encoding in float32 whatever the weights are.
        self.model = model.to(self.device).eval()
        self.model.image_encoder.to(self.dtype)
        self.torch = torch
        self.image_size = arch.image_size
        self.checkpoint, self.arch_name = checkpoint, arch_name

    def embed(self, x):
        with self.torch.inference_mode():
            self.images_embedded += len(x)
            return self.model.image_encoder(x.to(self.device, self.dtype)).float()

    def decode(self, embedding, points, labels, boxes, multimask: bool):
        m = self.model
        with self.torch.inference_mode():
            pts = None if points is None else (points.to(self.device, self.torch.float32), labels.to(self.device))
            sparse, dense = m.prompt_encoder(points=pts, boxes=None if boxes is None else boxes.to(self.device, self.torch.float32), masks=None)
            low, iou = m.mask_decoder(
                image_embeddings=embedding,
                image_pe=m.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
        return low.float(), iou.float()

    def describe(self) -> dict:
        return {"backend": self.name, "checkpoint": self.checkpoint.name, "model_type": self.arch_name}


class TransformersBackend(Backend):
    """transformers' SamModel: a hub id (needs the hub cache offline) or a local folder."""

    name = "transformers"

    def __init__(self, model: str, where: str, revision: str | None, device: str, dtype: str):
        super().__init__()
        import torch
        from transformers import SamModel

        try:
            loaded = SamModel.from_pretrained(where, revision=revision, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"model: cannot load SAM {model!r}: {str(e).splitlines()[0][:200]} (offline? a local folder works)") from None
        self.device = pick_device(torch, device)
        self.dtype = pick_dtype(torch, dtype, self.device)
        self.model = loaded.to(self.device).eval()
        self.model.vision_encoder.to(self.dtype)  # half precision for the encoder only, as above
        self.torch = torch
        self.image_size = int(loaded.config.vision_config.image_size)
        self.model_id = model

    def embed(self, x):
        with self.torch.inference_mode():
            self.images_embedded += len(x)
            return self.model.get_image_embeddings(x.to(self.device, self.dtype)).float()

    def decode(self, embedding, points, labels, boxes, multimask: bool):
        f32 = self.torch.float32
        with self.torch.inference_mode():
            out = self.model(
                image_embeddings=embedding,
                input_points=None if points is None else points[None].to(self.device, f32),
                input_labels=None if labels is None else labels[None].to(self.device),
                input_boxes=None if boxes is None else boxes[None].to(self.device, f32),
                multimask_output=multimask,
            )
        return out.pred_masks[0].float(), out.iou_scores[0].float()

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_id}


def released_or_custom(model_type: str | None, architecture: SamArchitecture | None) -> tuple[SamArchitecture, str]:
    if architecture is not None:
        return architecture, "custom"
    return RELEASED[model_type], model_type
