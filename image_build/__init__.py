"""What the Docker image's build needs to know that only a package index can tell.

`wheels.py` records which pinned packages ship wheels for the image's platforms (linux/amd64
and linux/arm64) and what the others need to be built from source; the tests check the
Dockerfile against that record without a network or a Docker engine.
"""
