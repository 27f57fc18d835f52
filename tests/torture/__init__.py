"""Fault-schedule torture (issue 8): record the FUSE operation trace of a
workload on fakefs, then replay it failing each traced operation in turn with
each errno (and a short read/write), checking after every run that the files
are right or the error is clear."""
