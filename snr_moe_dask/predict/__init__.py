"""Prediction: worker-side ``tasks`` (every expert on a chunk, routed every way)
and the client-side ``graph`` of lazy per-spectrum predictions."""
