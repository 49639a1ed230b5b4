"""Foundations every layer uses: errors, configuration checks, closed vocabularies, content keys, safe files, paths, the console, memory, device policy, skops archives."""
