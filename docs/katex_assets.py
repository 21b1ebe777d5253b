"""MkDocs hook: KaTeX served by the site itself, so its math renders with no network at view time.

The pages' math is ``pymdownx.arithmatex`` markup (generic mode); ``docs/javascripts/katex-init.js``
typesets it in the browser with KaTeX. KaTeX's ``katex.min.js``, ``katex.min.css`` and woff2 fonts
are not committed: the first build fetches the pinned release from the npm registry
(``npm pack katex@VERSION``, checked against the pinned sha512), unpacks those files into
``build/katex-VERSION/`` (git-ignored, reused by later builds) and :func:`on_files` adds them to the
site under ``assets/katex/``.

Offline, point ``KATEX_DIST`` at a folder that already holds ``katex.min.js``, ``katex.min.css``
and ``fonts/`` (a KaTeX ``dist/``). ``python docs/katex_assets.py`` fetches without building.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VERSION = "0.16.22"
INTEGRITY = "sha512-XCHRdUw4lf3SKBaJe4EvgqIuWwkPSo9XoeO8GjQW94Bp7TWv9hNhzZjZ+OH9yf1UmLygb7DIT5GSFQiyt16zYg=="
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / f"katex-{VERSION}"
SITE_DIR = "assets/katex"


def wanted(name: str) -> bool:
    """The files of the tarball's ``dist/`` that a browser needs (woff2 is what every current browser takes)."""
    return name in ("katex.min.js", "katex.min.css") or (name.startswith("fonts/") and name.endswith(".woff2"))


def fetch(dest: Path = CACHE) -> Path:
    """Download the pinned KaTeX tarball with npm, verify it and unpack the browser files into ``dest``."""
    if shutil.which("npm") is None:
        raise RuntimeError("KaTeX for the docs: npm is not installed (or set KATEX_DIST to a KaTeX dist/ folder)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        done = subprocess.run(
            ["npm", "pack", f"katex@{VERSION}", "--pack-destination", tmp, "--prefer-offline", "--silent"],
            capture_output=True, text=True, cwd=tmp,
        )
        tarball = Path(tmp) / f"katex-{VERSION}.tgz"
        if done.returncode != 0 or not tarball.exists():
            raise RuntimeError(f"KaTeX for the docs: npm pack katex@{VERSION} failed: {done.stderr.strip()[-500:]}")
        digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if digest != INTEGRITY:
            raise RuntimeError(f"KaTeX for the docs: katex-{VERSION}.tgz has {digest}, expected {INTEGRITY}")
        staging = Path(tmp) / "dist"
        with tarfile.open(tarball) as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/dist/")
                if member.isfile() and member.name.startswith("package/dist/") and wanted(name):
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.extractfile(member).read())
                elif member.name == "package/LICENSE":
                    staging.mkdir(parents=True, exist_ok=True)
                    (staging / "LICENSE").write_bytes(archive.extractfile(member).read())
        if not (staging / "katex.min.js").exists():
            raise RuntimeError(f"KaTeX for the docs: katex-{VERSION}.tgz has no dist/katex.min.js")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest


def dist() -> Path:
    """The folder holding KaTeX's browser files: ``KATEX_DIST`` if set, else the cache, fetched if missing."""
    if os.environ.get("KATEX_DIST"):
        folder = Path(os.environ["KATEX_DIST"])
        if not (folder / "katex.min.js").exists():
            raise RuntimeError(f"KATEX_DIST={folder} has no katex.min.js")
        return folder
    if not (CACHE / "katex.min.js").exists():
        fetch()
    return CACHE


def on_files(files, config, **kwargs):
    """Add KaTeX's files to the site under ``assets/katex/``."""
    from mkdocs.structure.files import File

    folder = dist()
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and (wanted(name) or name == "LICENSE"):
            files.append(File.generated(config, f"{SITE_DIR}/{name}", abs_src_path=str(path)))
    return files


if __name__ == "__main__":
    print(fetch() if "--force" in sys.argv else dist())
