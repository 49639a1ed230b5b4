"""Classic baselines beside deep features: dense SIFT, bag-of-words, Fisher vectors."""
