"""The report: text helpers, the markdown, the figures and the console summaries.

Everything here works from the small ``metrics`` and ``figdata`` mappings
(never per-spectrum data) and writes only into the output directory.
"""
