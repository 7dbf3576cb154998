"""Bytes only, no policy: the formats netbuild reads and writes (nar, nixhash, cpio, the codec
table in compress, initrd, bzimage, pe, kmod, kconfig).

CHUNK is the one size in which netbuild reads, hashes, copies and decompresses files, everywhere:
large enough that Python's cost per call disappears, small enough to stay in a CPU's caches. It is
also in the whole-store initrd's cache key (builder/writers/groupcache.py), as the read size the
packed bytes were made with.
"""

CHUNK = 1 << 20

# Bytes as the writers and readers pass them around: copied (bytes) or not (bytearray, memoryview).
Buffer = bytes | bytearray | memoryview
