"""Whole slides and large images, in pieces: where the tissue is (:mod:`.tissue`), what a user drew
(:mod:`.regions`), the tiles and their execution (:mod:`.tiles`), mast-cell density and the hotspot
(:mod:`.density`), and the table of a cohort (:mod:`.cohort`). The flow that uses them for every
input is :mod:`mastctl.detection`.
"""
