"""Label quality: compare a run with human labels, calibrate thresholds, and report what a run did."""
