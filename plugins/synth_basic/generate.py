"""The source stage of generated data: latents from seeds, decoded by the generator."""

from __future__ import annotations

from typing import Sequence

from synth.batch import Batch
from synth.protocols import PluginConfig, SourceStage
from synth.records import sample_key
from synth.seeding import sample_seed


class GenerateConfig(PluginConfig):
    pass


class Generate(SourceStage):
    """Sample latents from (seed, index) and decode them with the manifest's generator."""

    name = "generate"
    kind = "source"
    Config = GenerateConfig
    default_source = True
    requires = frozenset({"sample", "decode"})
    scores = frozenset()
    latents = "makes"

    @classmethod
    def planned_size(cls, config, plan):
        gen = plan.generator
        info = gen.cls.static_info(gen.config, plan) if gen is not None else None
        shape = (info or {}).get("image_shape")
        return tuple(shape[:2]) if shape else None

    def produce(self, indices: Sequence[int]) -> Batch:
        gen = self.context.generator
        seed = self.context.seed
        conditions = [gen.condition(i) for i in indices]
        latents = self.context.as_stored(gen.sample_latents(indices, seed))
        images = gen.decode(latents, conditions, indices, seed)
        records = []
        for i, cond in zip(indices, conditions):
            records.append(
                {
                    "index": i,
                    "seed": seed,
                    "latent_seed": sample_seed(seed, i, "latent"),
                    "condition": cond,
                    "class": cond.get("class"),
                    "lineage": [{"op": "generate", "generator": gen.name}],
                    # decode(latent.npy, condition, [index], seed) gives this image again (synth regenerate)
                    "decode": {"index": i, "seed": seed},
                }
            )
        return Batch(keys=[sample_key(i) for i in indices], images=images, records=records, latents=latents)
