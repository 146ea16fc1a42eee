"""Tests of detection_eval: NAB scorer, corpus files, detectors, simulator harness."""
