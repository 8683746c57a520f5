"""framefold's benchmark suite: ``python -m bench`` (``make bench``) measures six figures
on this machine and writes bench/RESULTS.md with PNG plots; ``--quick`` runs them at
tiny sizes. One module per figure: stitch_kernel (1), memory (2), orchestration (3,
with fakegpu), throughput (4), peer (5), redundancy (6); suite runs them and writes the
report. plan_catalog.py is a separate script (validating and planning large catalogs).
"""
