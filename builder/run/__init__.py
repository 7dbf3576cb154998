"""Running an OUT directory: QEMU (boot) and an HTTP server for iPXE (serve)."""
