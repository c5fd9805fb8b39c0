"""YAML read safely: plain data only, no aliases, bounded size.

``yaml.safe_load`` never runs code, but it still expands aliases: nine lines
of ``&a [*b, *b, ...]`` ("billion laughs") grow into gigabytes before any
validation sees them. mastctl's YAML (profiles, ``-O`` values, record files)
never needs an alias, so one is an error, reported with its line.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_YAML_BYTES = 8 * 1024 * 1024


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed: write the value out in full", event.start_mark)
        return super().compose_node(parent, index)


def load(text: str) -> Any:
    """Parse one YAML document of plain data; raises yaml.YAMLError (aliases and huge texts included)."""
    if len(text) > MAX_YAML_BYTES:
        raise yaml.YAMLError(f"the document is {len(text) / 1e6:.1f} MB; YAML here is limited to "
                             f"{MAX_YAML_BYTES // (1024 * 1024)} MB")
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)


def compose(text: str) -> Any:
    """The node tree (for line numbers), with the same refusals as :func:`load`."""
    return yaml.compose(text, Loader=_NoAliasLoader)
