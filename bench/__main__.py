"""``python -m bench [--quick] [--out DIR] [--only N …]``: the benchmark suite (bench/suite.py)."""

from bench.suite import main

raise SystemExit(main())
