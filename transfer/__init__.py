"""transfer: pretrained CNN features + classical classifiers, one study per command."""

__version__ = "0.1.0"
