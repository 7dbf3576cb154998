"""Kept for builder/writers/segments.py, which imports codec_version from here: what was in this
module (one member compressed in one call or streamed, read back from a byte range) is now part
of the codec table, builder/formats/compress.py. Delete this file once segments.py imports
codec_version from there."""

from builder.formats.compress import codec_version

__all__ = ["codec_version"]
