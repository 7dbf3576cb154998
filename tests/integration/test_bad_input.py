"""Bad input: one `error: …` line naming what is wrong, a non-zero exit, no traceback, OUT untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.nix

FAKE = "/nix/store/" + "0" * 32 + "-not-on-disk"


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_mode, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(directory.rglob("*"))
    }


def breakages(info: list[dict], toplevel: str) -> list[tuple[str, object, str]]:
    """(name, closure document, text the error line must contain) for each kind of bad input."""
    by_path = {e["path"]: e for e in info}
    leaf = next(p for p, e in by_path.items() if e["references"] == [] and p != toplevel)
    referrer = next(p for p, e in by_path.items() if leaf in e["references"] and p != leaf)
    victim = next(p for p in by_path if p != toplevel)

    def edited(**changes: dict) -> list[dict]:
        return [dict(e, **changes.get(e["path"], {})) for e in info]

    return [
        ("malformed-json", '[{"path": ', "malformed JSON"),
        ("reference-missing", [e for e in info if e["path"] != leaf], f"{referrer} references {leaf}"),
        (
            "invalid-store-path",
            [*info, {"path": "/nix/store/not-a-hash-x", "references": []}],
            "'/nix/store/not-a-hash-x' is not a valid store path",
        ),
        ("absent-store-path", [*info, {"path": FAKE, "references": []}], f"{FAKE} does not exist on disk"),
        (
            "wrong-nar-hash",
            edited(**{victim: {"narHash": "sha256-" + "A" * 43 + "="}}),
            f"{victim}: NAR hash mismatch",
        ),
        (
            "wrong-nar-size",
            edited(**{victim: {"narSize": by_path[victim]["narSize"] + 8}}),
            f"{victim}: NAR size mismatch",
        ),
        ("not-a-closure", {"hello": "world"}, "not a closure"),
    ]


def test_each_bad_input_is_one_error_line_and_out_is_untouched(
    tmp_path: Path, system_closure, run_netbuild
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out))
    before = snapshot(out)
    for name, doc, expected in breakages(system_closure.path_info, system_closure.toplevel):
        closure = tmp_path / f"{name}.json"
        closure.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        proc = run_netbuild(str(closure), "-o", str(out), check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode != 0, name
        assert stderr.count("\n") == 1 and stderr.startswith("error: "), f"{name}: {stderr!r}"
        assert expected in stderr, f"{name}: {stderr!r}"
        assert "Traceback" not in stderr
        assert snapshot(out) == before, f"{name} changed OUT"
        leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".out.")]
        assert leftovers == [], f"{name} left {leftovers}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["/no/such/closure.json"], "error: /no/such/closure.json: no such file"),
        (["{closure}", "--compress", "brotli"], "error: Invalid value for '--compress'"),
        (["{closure}", "--recipe", "nope"], "error: unknown recipe 'nope'"),
        (["{closure}", "--toplevel", FAKE], f"error: --toplevel {FAKE} is not in the closure"),
        (["{closure}", "--kernel", "{closure}"], "x86 bzImage"),
        (["{closure}", "--kernel", "/bin/busybox"], "not an x86 bzImage"),
    ],
)
def test_bad_options_are_one_error_line(tmp_path: Path, system_closure, run_netbuild, args, expected) -> None:  # type: ignore[no-untyped-def]
    args = [a.replace("{closure}", str(system_closure.closure_json)) for a in args]
    proc = run_netbuild(*args, "-o", str(tmp_path / "out"), check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode != 0 and stderr.count("\n") == 1 and expected in stderr, stderr
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_directory_it_did_not_make(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(out), check=False)
    assert proc.returncode != 0 and "was not made by netbuild" in proc.stderr.decode()
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1


def test_an_interrupted_build_leaves_out_as_it_was(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--compress", "gzip:1")
    before = snapshot(out)
    # xz at level 9 keeps the build busy long enough to be caught with its staging directory present.
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", str(system_closure.closure_json), "-o", str(out), "--compress", "xz:9"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not any(p.startswith(".out.tmp-") for p in os.listdir(tmp_path)):
        assert proc.poll() is None, "the build ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0 and stderr.decode() == "error: interrupted\n"
    assert snapshot(out) == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.")] == []



@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--init", "{content}/dir with space/file with space.txt"], "contains white space or control characters"),
        (["--init", "{content}/text/refs.txt"], "is not executable"),
        (["--append", "foo=${net0/mac}"], "--append contains '${'"),
        (["--base-url", "http://x/\nshell\n#"], "--base-url 'http://x/\\nshell\\n#' is not a URL"),
        (["--store-root", "/no/such/root"], "--store-root /no/such/root: there is no /no/such/root/nix/store"),
        (["--append", "x" * 3000], "accepts at most 2047"),
    ],
)
def test_unbootable_settings_are_refused(tmp_path: Path, system_closure, run_netbuild, extra, expected) -> None:  # type: ignore[no-untyped-def]
    content = system_closure.path_named("-content")
    args = [a.replace("{content}", content) for a in extra]
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "out"), *args, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert expected in stderr, stderr
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == []


def test_unusable_outputs_are_refused_before_any_work(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    closure = str(system_closure.closure_json)
    target = tmp_path / "real"
    run_netbuild(closure, "-o", str(target))
    (tmp_path / "link").symlink_to(target)
    (tmp_path / "file").write_text("x")
    cases = [
        (["-o", "."], "is the current directory or one of its parents"),
        (["-o", str(tmp_path / "link")], f"is a symlink; pass the directory it points to ({target})"),
        (["-o", str(tmp_path / "file")], "exists and is not a directory"),
        (["-o", str(tmp_path / "file" / "out")], "a parent of it is a file, not a directory"),
    ]
    for args, expected in cases:
        proc = run_netbuild(closure, *args, cwd=tmp_path, check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode == 1 and stderr.count("\n") == 1 and expected in stderr, (args, stderr)
    assert sorted(os.listdir(tmp_path)) == ["file", "link", "real"]


def test_a_failed_write_is_one_error_line_and_out_is_untouched(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    """A full disk, simulated with a file-size limit (EFBIG), is reported, not a traceback."""
    import resource
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    run_netbuild(str(system_closure.closure_json), "-o", str(out), "--compress", "gzip:1")
    before = snapshot(out)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # stays ignored across exec: write() gets EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    proc = subprocess.run([sys.executable, "-m", "builder", str(system_closure.closure_json), "-o", str(out)],
                          capture_output=True, preexec_fn=limit_file_size, timeout=300)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1 and stderr == f"error: writing {out}: File too large\n", stderr
    assert snapshot(out) == before
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out.")] == []


def test_kernel_params_leading_out_of_the_closure_are_refused(tmp_path: Path, system_closure, run_netbuild) -> None:  # type: ignore[no-untyped-def]
    """A host file must never leak into OUT through a symlink in the toplevel."""
    root = system_closure.copy_store(tmp_path / "root")
    params = root / system_closure.toplevel.lstrip("/") / "kernel-params"
    params.unlink()
    params.symlink_to("/etc/hostname")
    proc = run_netbuild(str(system_closure.closure_json), "-o", str(tmp_path / "out"), "--store-root", str(root),
                        check=False)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"error: the toplevel's kernel-params {system_closure.toplevel}/kernel-params "
                                    "is not inside /nix/store (it leads to /etc/hostname)\n")
