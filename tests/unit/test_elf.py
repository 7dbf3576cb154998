"""builder.checks.elf on real host programs, checked against binutils' readelf, and the loader's
search (RUNPATH, RPATH, $ORIGIN, SONAME) over a real directory tree made with patchelf."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from builder.checks.elf import Found, expand_origin, missing_libraries, read_elf

TRUE = Path("/bin/true")  # dynamically linked against libc.so.6 on Debian
LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")
LOADER = Path("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", *args], capture_output=True, text=True, check=True).stdout


def test_reads_what_readelf_reads() -> None:
    info = read_elf(TRUE)
    interp = re.search(r"\[Requesting program interpreter: (.+)\]", readelf("-l", str(TRUE)))
    assert interp and info.interpreter == interp[1]
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", readelf("-d", str(TRUE)))
    assert info.machine == "EM_X86_64" and info.runpath == () and info.rpath == ()
    libc = read_elf(LIBC)
    assert libc.soname == re.search(r"\(SONAME\)\s+Library soname: \[(.+)\]", readelf("-d", str(LIBC)))[1]  # type: ignore[index]


def test_static_program_needs_nothing() -> None:
    info = read_elf(Path("/bin/busybox"))
    assert info.interpreter is None and info.needed == ()


def test_origin_expansion() -> None:
    assert expand_origin("$ORIGIN/../lib", "/nix/store/x-a/bin") == "/nix/store/x-a/lib"
    assert expand_origin("${ORIGIN}/lib", "/o") == "/o/lib"
    assert expand_origin("$LIB/x", "/o") is None  # machine-dependent: not searched


def make_image(tmp_path: Path, rpath: str, *, force_rpath: bool = False) -> tuple[Path, Found]:
    """image/app/bin/prog (a patched /bin/true) and image/libs/lib/{ld-linux…, libc.so.6}."""
    image = tmp_path / "image"
    (image / "app" / "bin").mkdir(parents=True)
    (image / "libs" / "lib").mkdir(parents=True)
    prog = image / "app" / "bin" / "prog"
    shutil.copy(TRUE, prog)
    shutil.copy(LOADER, image / "libs" / "lib" / "ld-linux-x86-64.so.2")
    shutil.copy(LIBC, image / "libs" / "lib" / "libc.so.6")
    cmd = ["patchelf", "--set-interpreter", "/libs/lib/ld-linux-x86-64.so.2", "--set-rpath", rpath, str(prog)]
    subprocess.run([*cmd, *(["--force-rpath"] if force_rpath else [])], check=True)
    return image, Found("/app/bin/prog", prog)


def finder(image: Path):  # type: ignore[no-untyped-def]
    def find(path: str) -> Found | None:
        disk = image / path.lstrip("/")
        return Found(path, disk) if disk.is_file() else None

    return find


def test_runpath_with_origin_finds_libc_and_the_loader_satisfies_libc(tmp_path: Path) -> None:
    image, prog = make_image(tmp_path, "$ORIGIN/../../libs/lib")
    info = read_elf(prog.disk)
    assert info.runpath == ("$ORIGIN/../../libs/lib",)
    loader = read_elf(image / "libs" / "lib" / "ld-linux-x86-64.so.2")
    # libc.so.6 itself needs ld-linux-x86-64.so.2: the loader, already in memory, answers by SONAME.
    assert missing_libraries(prog, info, finder(image), preloaded=(loader,)) == []
    missing = missing_libraries(prog, info, finder(image))
    assert [(m.needed, m.needed_by) for m in missing] == [("ld-linux-x86-64.so.2", "/libs/lib/libc.so.6")]


def test_missing_library_names_the_searched_directories(tmp_path: Path) -> None:
    image, prog = make_image(tmp_path, "$ORIGIN/../lib:/elsewhere")
    (image / "libs" / "lib" / "libc.so.6").unlink()
    (missing,) = missing_libraries(prog, read_elf(prog.disk), finder(image))
    assert missing.needed == "libc.so.6" and missing.needed_by == "/app/bin/prog"
    assert missing.searched[:3] == ("/app/lib", "/elsewhere", "/lib/x86_64-linux-gnu")


def test_rpath_of_the_program_applies_to_its_libraries(tmp_path: Path) -> None:
    """DT_RPATH (not RUNPATH) is inherited: libc.so.6's own need is searched in the program's RPATH."""
    image, prog = make_image(tmp_path, "/libs/lib", force_rpath=True)
    info = read_elf(prog.disk)
    assert info.rpath == ("/libs/lib",) and info.runpath == ()
    assert missing_libraries(prog, info, finder(image)) == []
