"""Looking inside: list an initrd's members and entries (inspect), compare two builds (diff), and
show which store paths take the space (size, with a self-contained HTML treemap)."""
