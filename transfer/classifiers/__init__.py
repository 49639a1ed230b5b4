"""Classifiers on features: linear SVMs with C chosen by CV, accuracy figures, trained heads, networks from scratch."""
