import os
import sys

from ._main import main

status = main()
sys.stdout.flush()
sys.stderr.flush()
# The mount is gone and everything is cleaned up; skip finalising trio and
# pyfuse3, which only delays the starter waiting for our exit.
os._exit(status)
