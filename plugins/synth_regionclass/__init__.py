"""Each region's class decided by the region as a whole: a small classifier trained on the
labelled examples' instances (their silhouettes, or their pixels too) classes every region an
earlier labeller drew, with that labeller's pixel votes as a prior. A pixel labeller sees a few
pixels at a time and learns a shape's identity from a handful of instances; a shape's outline
says it at once."""

from synth.plugins import public_api

# The plugin's public names (what bench scripts and users import); everything else is internal.
_PUBLIC = {
    "RegionClassConfig": ".config",
    "instances": ".crops",
    "train_classifiers": ".model",
    "classify_regions": ".model",
}
__all__ = sorted(_PUBLIC)
__getattr__ = public_api(__name__, _PUBLIC)
