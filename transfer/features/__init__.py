"""Features out: backbones, feature selections, the forward pass, the local and Ray engines, the content-keyed cache."""
