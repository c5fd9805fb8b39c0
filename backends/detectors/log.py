"""`log`: the nucleus baseline — Laplacian-of-Gaussian blobs on the hematoxylin channel.

Finds nuclei, not mast cells: every cell it reports is labelled ``other``
(use ``--all-cells``). It is the floor that real detectors must beat, and a
check of the scoring pipeline on real nuclei (the CRC set).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mastctl.cells import Cell, Detections
from mastctl.scale import working

if TYPE_CHECKING:
    from mastctl.imaging import Image
    from mastctl.profile import Profile


class LogNucleusDetector:
    name = "log"
    requires = ("scipy",)

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        radius_min_um: float = Field(3.0, gt=0, description="Smallest nucleus radius looked for.")
        radius_max_um: float = Field(5.0, gt=0, description="Largest nucleus radius looked for.")
        threshold: float = Field(0.12, gt=0, description="Scale-normalised LoG response (hematoxylin OD) a nucleus must reach.")

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        self.options = options or self.Options()

    def detect(self, image: Image) -> Detections:
        import numpy as np
        from scipy.ndimage import gaussian_laplace, maximum_filter

        from mastctl import stains

        o = self.options
        mpp = working(image.mpp)
        hema = stains.separate(image.pixels)[..., 0]
        radii = np.linspace(o.radius_min_um, o.radius_max_um, 4) / mpp
        response = np.max([-(r / math.sqrt(2)) ** 2 * gaussian_laplace(hema, r / math.sqrt(2)) for r in radii], axis=0)
        size = max(3, int(2 * o.radius_min_um / mpp) | 1)
        peaks = (response == maximum_filter(response, size=size)) & (response > o.threshold)
        rows, cols = np.nonzero(peaks)
        strength = response[rows, cols]
        cells = [
            Cell(float(c) + 0.5, float(r) + 0.5, "other", None, float(s / (s + o.threshold)), {"log_response": float(s)})
            for r, c, s in zip(rows, cols, strength)
        ]
        return Detections(image=image.info, backend=self.name, cells=cells)
