"""netbuild: a Nix store-path closure packed into the files a machine netboots from (README.md).

The words the code uses for the pieces of an initrd, each for one thing only:

- entry: one cpio record (a file, directory, symlink or device, with its name and mode).
- archive: one newc cpio archive, its entries up to its TRAILER!!! (builder/formats/cpio.py).
- codec: a compression the kernel can unpack an initrd from (zstd, gzip, xz, lzma, bzip2, lz4 in
  its legacy frame format, lzo), or none; one object each in the codec table,
  builder/formats/compress.py. A codec's own unit is its stream: one zstd frame, one gzip member,
  one xz stream, ….
- member: one piece of an initrd file as the kernel reads it: a plain archive, or one stream of
  one codec holding whole entries (usually one archive). Members lie back to back with NUL padding
  allowed between them; builder/formats/initrd.py walks them, its Member describes one, and
  manifest.json's initrd.members lists them.
- frame: a member as the whole-store writer has just cut, compressed and checked it, before it
  has a place in the initrd: its sizes and digests (builder/writers/frames.py; a cache entry's meta
  lists its "frames"). Placed at an offset of the initrd it is described as a Member. Not to be
  confused with a zstd frame, which is that codec's stream.
- group: a run of store paths in path order, about 2 MiB, whose boundaries each path decides alone
  (builder/writers/grouping.py): what one thread packs and one cache entry holds, cut into one or
  more frames.
- segment: one group's frames back to back, as packed. The whole-store initrd is the skeleton's
  member, then the segments in path order, then the registration's member
  (builder/writers/initrd.py).
- blob: a segment kept in a file as bytes nobody parses: a TempBlob while it is packed
  (builder/tempblob.py), the first part of a cache entry once kept (builder/cache.py).
- owned directory: a build's scratch (OUT's staging copy, the cache's temporary files) under an
  flock held while the build lives, so that the next build can remove a killed one's
  (builder/owned.py).
- budget: the bounds of every reader of an initrd it did not make — plain bytes per member, name
  and link target sizes, entries per archive (builder/formats/streams.py and cpio.py); reaching one
  is an error saying "limit reached".
"""
