"""The settings of the classic baselines (dense SIFT, bag-of-words, Fisher vectors), apart from their code:
light to import, so that the CLI's options and the study sections take their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass, fields

from transfer.core.choices import Kernel
from transfer.core.config import choice, require

# The C values CV chooses among for SVMs on histograms and Fisher vectors: their unnormalised scale wants
# larger C than the L2-normalised CNN features' grid (`classifiers.settings.DEFAULT_C_GRID`).
HISTOGRAM_C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class SiftConfig:
    step: int = 4  # grid spacing in pixels
    sizes: tuple[float, ...] = (2.7, 4.5)  # OpenCV keypoint sizes; a descriptor spans ~6× size (2.7 ≈ 16 px)
    max_side: int = 300  # larger images are downscaled first
    # A patch whose mean gradient magnitude (grey levels per pixel) is below this keeps a descriptor
    # scaled down in proportion; 0: every descriptor at full length. Lazebnik's SIFT normalises only
    # descriptors above a norm threshold, so flat patches (sky, walls) stay near zero instead of
    # becoming unit-length noise; OpenCV always normalises, so the scale is applied afterwards.
    contrast: float = 2.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(self.sizes))
        require(self.contrast >= 0, "contrast", f"contrast must be 0 (off) or positive, got {self.contrast}")
        require(self.step >= 1, "step", f"step must be at least 1, got {self.step}")
        require(bool(self.sizes) and min(self.sizes) > 0, "sizes", f"sizes must be positive numbers, got {list(self.sizes)}")
        require(self.max_side >= 16, "max_side", f"max_side must be at least 16, got {self.max_side}")

    @classmethod
    def from_dict(cls, data: dict) -> SiftConfig:
        """From a model file; files written before the contrast setting existed computed none."""
        return cls(**{"contrast": 0.0, **data})


@dataclass(frozen=True, kw_only=True)
class VocabularyConfig:
    words: int = 1000
    sample: int = 100_000  # training descriptors drawn for k-means
    epochs: int = 10  # passes of mini-batch k-means over the sample
    seed: int = 0

    def __post_init__(self) -> None:
        # Words are stored as uint16.
        require(2 <= self.words <= 65535, "words", f"words must be between 2 and 65535, got {self.words}")
        require(self.sample >= self.words, "sample",
                f"sample must be at least words ({self.words}): k-means needs a descriptor per word, got {self.sample}")
        require(self.epochs >= 1, "epochs", f"epochs must be at least 1, got {self.epochs}")


@dataclass(frozen=True, kw_only=True)
class BowConfig:
    sift: SiftConfig = SiftConfig()
    vocabulary: VocabularyConfig = VocabularyConfig()
    pyramid: int = 0
    bands: bool = False  # also 3 horizontal bands beside the pyramid's cells
    sqrt: bool = False
    kernel: Kernel = Kernel.CHI2

    def __post_init__(self) -> None:
        require(self.pyramid in (0, 1, 2, 3), "pyramid", f"pyramid must be 0, 1, 2 or 3, got {self.pyramid}")
        require(self.pyramid >= 1 or not self.bands, "bands",
                "the 3 horizontal bands are weighted as pyramid level 1: use them with a pyramid of 1 or more levels")
        object.__setattr__(self, "kernel", choice(Kernel, self.kernel, "kernel"))

    @classmethod
    def from_dict(cls, data: dict) -> BowConfig:
        return cls(sift=SiftConfig.from_dict(data["sift"]), vocabulary=VocabularyConfig(**data["vocabulary"]),
                   pyramid=data["pyramid"], bands=data.get("bands", False), sqrt=data["sqrt"],
                   kernel=data.get("kernel", Kernel.CHI2))


# Pyramid regions as (columns, rows) grids: the whole image, its 2×2 quadrants, three horizontal strips.
PYRAMID_GRIDS = ((1, 1), (2, 2), (1, 3))


# Four keypoint sizes rather than bag-of-words' two: chosen by 5-fold CV on 15-Scene's training split
# among two, three and four sizes and grid steps 3, 4 and 5 (docs/measured-notes.md).
FISHER_SIFT = SiftConfig(sizes=(2.7, 4.5, 7.2, 11.5))


@dataclass(frozen=True, kw_only=True)
class FisherConfig:
    sift: SiftConfig = FISHER_SIFT
    components: int = 256  # Gaussians in the mixture
    pca: int = 64  # rootSIFT dimensions kept (of 128)
    sample: int = 200_000  # training descriptors drawn to fit the PCA and the mixture
    pyramid: bool = True  # regions 1×1 + 2×2 + 3×1; False: the whole image only
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.components >= 1, "components", f"components must be at least 1, got {self.components}")
        require(1 <= self.pca <= 128, "pca", f"pca must be between 1 and 128 (SIFT has 128 dimensions), got {self.pca}")
        require(self.sample >= max(self.components, self.pca), "sample",
                f"sample must be at least components ({self.components}) and pca ({self.pca}), got {self.sample}")

    @property
    def regions(self) -> int:
        grids = PYRAMID_GRIDS if self.pyramid else PYRAMID_GRIDS[:1]
        return sum(columns * rows for columns, rows in grids)

    @classmethod
    def from_dict(cls, data: dict) -> FisherConfig:
        """From a model file's settings or a stored row's config (which holds more than the settings)."""
        settings = {setting.name: data[setting.name] for setting in fields(cls) if setting.name in data}
        return cls(**{**settings, "sift": SiftConfig.from_dict(data["sift"])})
