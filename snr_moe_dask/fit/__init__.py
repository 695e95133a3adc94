"""The fit: worker-side ``tasks`` (fold a chunk, merge, solve, train the gate)
and the client-side ``graph`` that chains them (chunk -> combine -> finalize)."""
