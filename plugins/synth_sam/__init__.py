"""Segment Anything as a labelling stage: automatic instances, prompted masks, and refinement of
the pixel head's class regions with SAM's boundaries; two backends (the segment-anything package
and transformers' SamModel) behind one config."""
