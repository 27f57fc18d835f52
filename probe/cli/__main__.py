import sys

from probe.cli import main

# sys.exit, not entry(): `python -m cProfile -m probe.cli ...` must still get
# to print its profile after main() returns (entry() leaves with os._exit).
sys.exit(main())
