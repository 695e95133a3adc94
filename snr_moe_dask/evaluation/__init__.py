"""The evaluation: worker-side ``tasks`` (a chunk's predictions written and
summarized), the client-side ``graph`` (chunk -> combine -> finalize) and the
``summary`` that turns merged sums into metrics.json."""
