"""Runs in one store: the results store, model files, one job per method, predictions from model files."""
