"""Data in: image folders as labelled splits, reading images, fetching public data sets."""
