"""Initrd layouts: how the closure is laid out in the initrd (recipe field `layout`)."""
