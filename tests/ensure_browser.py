"""Find the Chromium the browser tests drive, installing Debian's when the machine allows it.

``make test`` runs ``python -m tests.ensure_browser`` before pytest; tests/browser/conftest.py
asks :func:`find_chromium` for the same path. Where the browser comes from, first match wins:

1. ``OVERSIGHT_CHROMIUM=/path/to/chrome`` (must be an executable file);
2. ``chromium`` (or ``chromium-browser``) on PATH;
3. ``/usr/bin/chromium``.

With none of them, as root on a machine with apt-get (Debian), ``apt-get update && apt-get
install -y --no-install-recommends chromium fonts-dejavu-core`` puts one at /usr/bin/chromium.
Otherwise it stops with one line saying what to install. Playwright's own browser download is
not used: it cannot be relied on here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ENV = "OVERSIGHT_CHROMIUM"
DEBIAN_PATH = "/usr/bin/chromium"
APT_PACKAGES = ["chromium", "fonts-dejavu-core"]
HINT = (
    "make test needs Chromium for the browser tests: run `sudo apt-get install chromium`, "
    f"or set {ENV}=/path/to/chrome (or run `make test-fast`, which skips them)"
)


class BrowserMissing(RuntimeError):
    pass


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_chromium() -> str | None:
    """The Chromium to use, or None. A set but unusable ``OVERSIGHT_CHROMIUM`` raises BrowserMissing."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        if _executable(configured):
            return configured
        raise BrowserMissing(f"{ENV}={configured} is not an executable file; {HINT}")
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return DEBIAN_PATH if _executable(DEBIAN_PATH) else None


def chromium_path() -> str:
    """The Chromium to use; raises BrowserMissing with the one-line hint when there is none."""
    path = find_chromium()
    if path is None:
        raise BrowserMissing(HINT)
    return path


def _can_apt_install() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install() -> bool:
    """``apt-get update && apt-get install`` Chromium; apt's output is shown only when it fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"ensure_browser: no Chromium found; apt-get installing {' '.join(APT_PACKAGES)}", flush=True)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
    for cmd in (["apt-get", "update", "-q"], install):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            print(f"ensure_browser: `{' '.join(cmd)}` failed (exit {done.returncode})", file=sys.stderr, flush=True)
            return False
    return True


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "version unknown"
    return (out.stdout or out.stderr).strip() or "version unknown"


def main() -> int:
    try:
        path = find_chromium()
        if path is None and _can_apt_install() and _apt_install():
            path = find_chromium()
        path = path or chromium_path()
    except BrowserMissing as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"ensure_browser: {path} ({_version(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
