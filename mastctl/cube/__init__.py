"""The embedding-to-embedding trainer ("3D Cubic Core") of ``mastctl cube``.

text -> teacher encoder (frozen) -> embedding -> reshaper -> 3D lattice ->
**cubic core (trained)** -> lattice -> reshaper -> embedding.

``data`` (Q->A pairs, autoencoder sets, paired embedding files), ``teachers``
(frozen encoders with an on-disk embedding cache), ``model`` (reshaper and
core, torch), ``losses``, ``train`` (loop, checkpoints, evaluation and the
identity and ridge baselines).
"""
