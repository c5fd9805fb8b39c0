"""Words for a cell: the criteria of its type, plus what was measured on its crop.

Records ingested from annotations have no free-text description; these give
them one from the morphology criteria (``../shared/docs/domain.md``) and the
crop's measurements, so text search and prompts have something true to say.
"""

from __future__ import annotations

from mastctl.kb.records import Distinguishing, Morphology

CRITERIA: dict[str, tuple[Morphology, Distinguishing, list[str]]] = {
    "explicit": (
        Morphology(cytoplasm="abundant, granular, eosinophilic", shape="round to oval cell, fried-egg pattern"),
        Distinguishing(vs_lymphocytes="visible cytoplasm around the nucleus", vs_plasma_cells="central, not eccentric, nucleus",
                       vs_fibroblasts="round, not spindle, nucleus"),
        ["fried egg", "granular pink cytoplasm"],
    ),
    "implicit": (
        Morphology(cytoplasm="pale, blurred, dirty halo", shape="round cell with an indistinct border"),
        Distinguishing(vs_lymphocytes="a halo of cytoplasm, however faint", vs_plasma_cells="central nucleus, no perinuclear hof",
                       vs_fibroblasts="plump ovoid, not spindle, nucleus"),
        ["dirty halo", "visible only once tryptase/CD117 stains it", "look near explicit mast cells"],
    ),
    "lymphocyte": (
        Morphology(cytoplasm="scant or none visible", shape="small round cell"),
        Distinguishing(vs_lymphocytes="is a lymphocyte: dense nucleus without a cytoplasm rim"),
        ["no visible cytoplasm"],
    ),
    "plasma_cell": (
        Morphology(cytoplasm="amphophilic with a perinuclear hof", shape="oval cell, clock-face chromatin"),
        Distinguishing(vs_plasma_cells="is a plasma cell: eccentric nucleus"),
        ["eccentric nucleus", "perinuclear clearing"],
    ),
    "fibroblast": (
        Morphology(cytoplasm="thin, inconspicuous", shape="spindle"),
        Distinguishing(vs_fibroblasts="is a fibroblast: elongated spindle nucleus"),
        ["spindle nucleus along collagen"],
    ),
    "eosinophil": (
        Morphology(cytoplasm="bright orange-red coarse granules", shape="round cell"),
        Distinguishing(vs_lymphocytes="abundant cytoplasm, but orange-red and with a bilobed nucleus"),
        ["bilobed nucleus", "refractile orange-red granules"],
    ),
    "other": (
        Morphology(shape="epithelial or endothelial cell"),
        Distinguishing(),
        ["not a stromal round cell"],
    ),
}


def nucleus_words(features: dict[str, float]) -> str:
    """'central, round, 6.1 µm' from the morphology features of the crop's nucleus."""
    if not features:
        return ""
    area = features.get("area_um2", 0.0)
    diameter = 2 * (area / 3.14159) ** 0.5
    elong = features.get("elongation", 1.0)
    shape = "round" if elong < 1.3 else "oval" if elong < 1.9 else "spindle"
    place = "central" if features.get("offset", 0.0) < 0.35 else "eccentric"
    lobes = ", bilobed" if features.get("lobe_partner", 0.0) > 0.5 else ""
    return f"{place}, {shape}{lobes}, about {diameter:.0f} µm"


def describe(cell_type: str, features: dict[str, float], location: str = "") -> tuple[Morphology, Distinguishing, list[str]]:
    morph, dist, insights = CRITERIA.get(cell_type, CRITERIA["other"])
    morph = morph.model_copy(update={"nucleus": nucleus_words(features) or morph.nucleus, "location": location or morph.location})
    return morph, dist.model_copy(), list(insights)


def difficulty(probabilities: dict[str, float], cell_type: str) -> str:
    """How sure the morphology model is of the annotated class: easy >= 0.8 > medium >= 0.4 > hard."""
    if not probabilities:
        return "hard"
    key = {"explicit": "mast_explicit", "implicit": "mast_implicit"}.get(cell_type, cell_type)
    p = probabilities.get(key, 0.0)
    return "easy" if p >= 0.8 else "medium" if p >= 0.4 else "hard"
