"""How the hybrid detector combines opinions about one candidate cell.

Each opinion is a probability that the candidate is a mast cell, with a
weight saying how much that source is trusted. The fused probability is the
weighted mean in log-odds::

    logit(p) = sum_i w_i * logit(p_i) / sum_i w_i

so a weight of 0 ignores a source, equal weights average the evidence, and
doubling one source's weight doubles its pull. With weights proportional to a
source's log-odds of being right (``weight_for_accuracy``), a reliable source
outvotes an unreliable one that disagrees. Probabilities are clipped to
[0.01, 0.99] so no single source can be infinitely sure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CLIP = 0.01


@dataclass(frozen=True)
class Opinion:
    source: str  # morphology | kb | gemini | vlm
    p_mast: float  # probability that the candidate is a mast cell
    weight: float
    p_explicit: float | None = None  # P(explicit | mast), when the source says


def logit(p: float) -> float:
    p = min(max(p, CLIP), 1 - CLIP)
    return math.log(p / (1 - p))


def fuse(opinions: Sequence[Opinion]) -> float:
    """Weighted log-odds mean of P(mast); 0.5 when nothing has weight."""
    total = sum(o.weight for o in opinions if o.weight > 0)
    if total <= 0:
        return 0.5
    z = sum(o.weight * logit(o.p_mast) for o in opinions if o.weight > 0) / total
    return 1 / (1 + math.exp(-z))


def fuse_kind(opinions: Sequence[Opinion]) -> str:
    """explicit or implicit: the weighted mean of the sources' P(explicit | mast) (weighted also by their P(mast))."""
    num = den = 0.0
    for o in opinions:
        if o.p_explicit is not None and o.weight > 0:
            w = o.weight * o.p_mast
            num += w * o.p_explicit
            den += w
    return "explicit" if den == 0 or num / den >= 0.5 else "implicit"


def weight_for_accuracy(accuracy: float) -> float:
    """The weight of a source that is right with this probability: its log-odds (0 for a coin flip)."""
    return max(0.0, logit(accuracy))
