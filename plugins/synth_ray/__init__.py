"""Run synth's shard tasks on a Ray cluster: same manifest, same bytes, models loaded once per
actor. Ray is imported only when a run asks for this executor (``pip install synth-data[ray]``)."""
