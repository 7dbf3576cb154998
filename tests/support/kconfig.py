"""A kernel's embedded configuration as one call, over builder.formats.kconfig's two steps."""

from __future__ import annotations

from builder.formats.kconfig import KernelConfig, embedded_config_text, parse_config


def embedded_config(image: bytes, name: str) -> KernelConfig | None:
    """The IKCONFIG copy in a bzImage (or an uncompressed vmlinux), None when it has none."""
    text = embedded_config_text(image, name)
    return None if text is None else parse_config(text, f"{name} (embedded IKCONFIG)")
