"""Model adapters (Florence-2, detectors, SAM, OCR) and the pool that loads each once per worker."""
