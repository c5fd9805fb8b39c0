"""Vision-language models for mast cells: datasets, LoRA/QLoRA training, detection with adapters.

``formats`` (prompt, coordinate conventions, answer parsing), ``dataset``
(``finetune prepare``), ``models`` (loading from local paths, inputs and
labels), ``training`` (``finetune train``); the detectors are
``backends/detectors/vlm.py``.
"""
