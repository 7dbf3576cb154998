# netbuild — make install | demo | test | bench | lint
#
# `make install` prepares a fresh Debian machine (as root, or with sudo): the system packages the
# tests and the demo boot with, and a .venv with netbuild installed editable.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# qemu-system-x86 + ipxe-qemu + ovmf: boot tests (SeaBIOS, iPXE ROMs, UEFI)
# linux-image-cloud-amd64 + busybox-static: a real kernel and init for the test closures
# nix-bin: a real Nix builds the test closures and checks the registration
# cpio, libarchive-tools, zstd, xz-utils, jq: independent readers and closureInfo's own jq program
# lz4, lzop, bzip2: every compressor the kernel knows, for `netbuild inspect`'s tests
# patchelf, binutils: ELF test programs with a chosen RUNPATH, and readelf to check ours against
# chromium: renders `netbuild size --html` headless in the tests
# kmod: modinfo/modprobe/depmod, the reference for the stage 1's module resolution
# ipxe: snponly.efi, the iPXE a UEFI machine's own PXE client loads (`netbuild boot --uefi`)
# file: the tests compare netbuild's idea of a file's type with file(1)'s
# python3, python3-venv: the .venv (a bare Debian has neither)
# systemd-boot-efi, osslsigncode, sbsigntool: netboot.efi (--uki), signed; sbverify checks the signatures
# isolinux, syslinux-common: `netbuild iso`'s BIOS loader (isolinux.bin, ldlinux.c32, the isohdpfx.bin MBR)
# mtools, dosfstools: the FAT image of its UEFI El Torito entry (mkfs.fat, mcopy)
# xorriso: the tests read the El Torito catalog and partition tables with an independent tool
# nginx, wrk: `make bench` serves the built OUT with nginx and with `netbuild serve`, loaded by wrk
#   (tests/bench_serve.py starts nginx with a configuration of its own; Debian's package also
#   enables a default site on port 80 where services are started on install)
# qemu-system-arm, qemu-efi-aarch64, u-boot-qemu: the arm64 boot tests (qemu-system-aarch64 -M virt;
#   AAVMF, its UEFI firmware, for HTTP Boot of the arm64 UKI; U-Boot's qemu_arm64 build, -bios)
# u-boot-tools: mkimage, the reference boot.scr.uimg is compared with (netbuild writes its own)
# binutils-aarch64-linux-gnu: aarch64-linux-gnu-as, which tests/unit/test_preinit.py assembles
#   builder/preinit/aarch64.S with
# (Debian's arm64 kernel, busybox-static and systemd-boot-efi are not installed: the tests fetch
#   them with apt-get download, tests/support/arm64.py)
# The names are the same on Debian 12 and 13: libarchive-c's shared library comes with
# libarchive-tools, which depends on it under either name (libarchive13, libarchive13t64).
APT_PACKAGES := qemu-system-x86 ipxe-qemu ipxe ovmf linux-image-cloud-amd64 busybox-static squashfs-tools \
	nix-bin cpio zstd xz-utils gzip libarchive-tools jq \
	lz4 lzop bzip2 patchelf binutils chromium kmod file python3 python3-venv \
	systemd-boot-efi osslsigncode sbsigntool openssl \
	isolinux syslinux-common mtools dosfstools xorriso nginx wrk \
	qemu-system-arm qemu-efi-aarch64 u-boot-qemu u-boot-tools binutils-aarch64-linux-gnu
# qemu-utils: qemu-img, with which run-qemu creates NIX_DISK_IMAGE (the VM layouts' persistence disk,
#   a qcow2 image; the guest formats it with BusyBox's mke2fs) and the tests read it back
APT_PACKAGES += qemu-utils

.PHONY: install system venv test test-other-release check lint demo bench clean

install: system venv

system:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "make: installing system packages:" $$missing; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# PYTEST_ARGS: a part of the suite, e.g. `make test PYTEST_ARGS=tests/unit` (also through
# `tests/other-release.sh test PYTEST_ARGS=…`, on the other release).
PYTEST_ARGS ?=

test: install lint
	$(BIN)/pytest -q $(PYTEST_ARGS)

# The fast lane: every test that needs neither QEMU nor Nix (well under a minute).
check: install lint
	$(BIN)/pytest -q -m "not boot and not nix and not qemu"

# The demo and the suite again on the other Debian release (12 <-> 13), in a debootstrap root kept
# under .tmp/: tests/other-release.sh says how. Root only; CI runs it after `make test`.
test-other-release:
	tests/other-release.sh demo test

demo: install
	$(BIN)/python tests/demo.py

# Builds a ≥ 1,000-path, ≥ 500 MB closure from host files with Nix, runs the anchors and netbuild
# side by side, boots the image, prints the table and keeps it in BENCHMARKS.md. Takes minutes.
bench: install
	$(BIN)/python -m compileall -q builder  # as an installed package has: start-up without compiling
	$(BIN)/python tests/bench.py --write BENCHMARKS.md

clean:
	rm -rf out .pytest_cache .ruff_cache
