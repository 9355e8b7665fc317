"""`prompt_edit`: counterfactual pairs for text-conditioned generators: the same latent and the
same sampler noise under edited prompts ("a {cls} in snow", "a {cls} at night")."""

from __future__ import annotations

from pydantic import Field, field_validator

from synth.batch import Batch
from synth.expand import (
    conditions,
    decode_children,
    drop_seg,
    interleave,
    mark,
    need_latents,
)
from synth.protocols import PluginConfig, Stage


class PromptEditConfig(PluginConfig):
    templates: list[str] = Field(min_length=1, description="Edited prompts; {cls} is the sample's class name, {prompt} its own prompt")
    keep_parent: bool = True

    @field_validator("templates")
    @classmethod
    def _placeholders(cls, v):
        for t in v:
            try:
                t.format(cls="x", prompt="y")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(f"template {t!r}: only {{cls}} and {{prompt}} can be filled ({e})") from None
        return v


class PromptEdit(Stage):
    """One child per template: the parent's latent and noise, decoded under the edited prompt;
    parent and children share a group key."""

    name = "prompt_edit"
    kind = "expand"
    Config = PromptEditConfig
    requires = frozenset({"decode", "condition:prompt"})
    scores = frozenset()
    latents = "needs"
    seg = "drops"

    def process(self, batch: Batch) -> Batch:
        gen, cfg, seed = self.context.generator, self.config, self.context.seed
        z = need_latents(batch, self.name)
        classes = self.context.classes
        rows, keys, ops, idx, prompts = [], [], [], [], []
        for r, (key, rec) in enumerate(zip(batch.keys, batch.records)):
            cond = rec.get("condition") or {}
            cls = rec.get("class")
            name = classes[cls] if cls is not None and classes else ""
            decode = rec.get("decode") or {"index": int(rec.get("index", 0)), "seed": seed}
            for j, t in enumerate(cfg.templates):
                rows.append(r)
                keys.append(f"{key}_p{j}")
                prompt = t.format(cls=name, prompt=cond.get("prompt", ""))
                ops.append({"op": "prompt_edit", "template": t, "edit": j})
                prompts.append(prompt)
                idx.append(int(decode["index"]))  # the parent's own sampler noise: only the prompt changes
        children = batch.derive(rows, keys, ops)
        for rec, prompt in zip(children.records, prompts):
            rec["condition"] = {**(rec.get("condition") or {}), "prompt": prompt}
        children.latents = z[rows].copy()
        decode_seeds = {(batch.records[r].get("decode") or {}).get("seed", seed) for r in rows}
        children.images = decode_children(gen, children.latents, conditions(children), idx, decode_seeds.pop() if len(decode_seeds) == 1 else seed)
        for rec, r, i in zip(children.records, rows, idx):
            mark(rec, batch.keys[r], i, seed)
        for key, rec in zip(batch.keys, batch.records):
            rec["group"] = rec.get("group") or key
        return drop_seg(interleave(batch, children, len(cfg.templates), cfg.keep_parent))
