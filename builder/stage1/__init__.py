"""netbuild's built-in stage 1 for the squashfs layout: init script template and assembly."""
