"""The files a run reads besides its config: data set files, feature-extractor weights, reference statistics.

Each is an :class:`Asset`: the places it is looked for (in order), how a file found there is
checked, the download that provides it and the one command that places it by hand. Weights and
statistics live in the project's cache, ``$GN_PLUGIN_CACHE`` or else ``~/.cache/gn_plugin``
(``eval.inception_path`` and ``eval.cache_dir`` override it); the places clean-fid itself uses
(``/tmp`` for the Inception weights, its package's ``stats/`` folder) are looked in too, so files
clean-fid fetched before are found. :func:`locate` checks an asset, :func:`fetch` downloads the
missing ones (atomically: a failed transfer leaves nothing behind), :func:`require` turns the
missing ones into one error.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import cleanfid
import numpy as np
import torch
from cleanfid import downloads_helper
from cleanfid.inception_pytorch import FID_WEIGHTS_URL
from tqdm import tqdm

from gn_plugin.config import EvalConfig
from gn_plugin.data.base import DatasetFiles, RequiredFile
from gn_plugin.errors import GnPluginError
from gn_plugin.evaluation.digits_classifier import DIGITS_CLASSIFIER_PATH

CACHE_ENV = "GN_PLUGIN_CACHE"
INCEPTION_FILE = "inception-2015-12-05.pt"
CLEANFID_STATS_URL = "https://www.cs.cmu.edu/~clean-fid/stats/"
CLEANFID_STATS_DIR = Path(cleanfid.__file__).resolve().parent / "stats"
DOWNLOAD_TIMEOUT_S = 60


def cache_dir(configured: str | None = None) -> Path:
    """``configured`` (``eval.cache_dir``), else ``$GN_PLUGIN_CACHE``, else ``~/.cache/gn_plugin``."""
    return Path(configured or os.environ.get(CACHE_ENV) or "~/.cache/gn_plugin").expanduser()


# -- checks ------------------------------------------------------------------------------------------
def file_checksum(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file's bytes."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_problem(path: str | os.PathLike, checksum: str) -> str | None:
    """Why the file does not match ``checksum`` (``md5:<hex>`` or ``sha256:<hex or its prefix>``), or None."""
    algorithm, _, expected = checksum.partition(":")
    actual = file_checksum(path, algorithm)
    return None if actual.startswith(expected) else f"{algorithm} {actual[:12]}…, expected {expected[:12]}…"


def zip_problem(path: str) -> str | None:
    """Why the file is not an intact zip archive (TorchScript files are), or None: every member's CRC is read."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"not a readable TorchScript archive ({exc})"
    return f"damaged member {broken}" if broken else None


def npz_problem(*keys: str) -> Callable[[str], str | None]:
    """A check that the file is a NumPy ``.npz`` holding ``keys``."""

    def problem(path: str) -> str | None:
        try:
            with np.load(path) as stats:
                absent = [key for key in keys if key not in stats.files]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            return f"not a readable .npz ({exc})"
        return f"has no {', '.join(absent)}" if absent else None

    return problem


# -- assets ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Asset:
    """A file a run reads: where it is looked for, how it is checked, where it comes from.

    ``paths`` are looked in, in order; a fetch writes the first. No ``paths``: nothing to fetch,
    ``note`` says what happens instead (statistics computed from the data and cached).
    ``checksum``: ``md5:<hex>`` or ``sha256:<hex or prefix>`` of the file; ``verify``: a further check,
    returning why a file is not valid. ``url`` is the file itself or, with ``extract_to``, an archive
    (checked against ``url_checksum``) extracted into that folder. ``place`` is the one command that
    puts it there by hand.
    """

    what: str
    paths: tuple[str, ...] = ()
    url: str | None = None
    checksum: str | None = None
    verify: Callable[[str], str | None] | None = None
    url_checksum: str | None = None
    extract_to: str | None = None
    place: str = ""
    note: str = ""


@dataclass(frozen=True)
class Located:
    """Where an asset was found: ``path`` when a valid file is there; otherwise ``problem`` (invalid) or missing."""

    asset: Asset
    path: str | None = None
    problem: str | None = None

    @property
    def state(self) -> str:
        """``present``, ``missing``, ``invalid`` or ``computed`` (nothing to find)."""
        if not self.asset.paths:
            return "computed"
        if self.path is not None:
            return "present"
        return "invalid" if self.problem else "missing"

    @property
    def target(self) -> str:
        """The path the run reads: where it was found, else where a fetch puts it."""
        return self.path or self.asset.paths[0]


def locate(asset: Asset) -> Located:
    """The first of ``asset.paths`` holding a valid file; else why the files found there are not valid."""
    problems = []
    for path in asset.paths:
        if not os.path.exists(path):
            continue
        problem = (checksum_problem(path, asset.checksum) if asset.checksum and os.path.isfile(path) else None) or (
            asset.verify(path) if asset.verify else None
        )
        if problem is None:
            return Located(asset, path=path)
        problems.append(f"{path}: {problem}")
    return Located(asset, problem="; ".join(problems) or None)


def download_command(url: str, path: str) -> str:
    return f"curl -L --create-dirs -o {path} {url}"


def data_asset(dataset: str, required: RequiredFile) -> Asset:
    """A data set's declared file (:class:`~gn_plugin.data.base.RequiredFile`) as an asset."""
    return Asset(
        what=f"data set {dataset}: {os.path.basename(required.path)}",
        paths=(required.path,),
        url=required.url,
        checksum=f"md5:{required.md5}" if required.md5 else None,
        url_checksum=f"md5:{required.url_md5}" if required.url_md5 else None,
        extract_to=required.extract_to,
        place=required.place or (download_command(required.url, required.path) if required.url else ""),
    )


def inception_weights(path: str | None = None, mode: str = "clean") -> Asset:
    """The Inception weights of ``eval.mode``: clean-fid's TorchScript TF-Inception (``clean``,
    ``legacy_tensorflow``) at ``path`` (``eval.inception_path``) or in the cache, then where clean-fid
    keeps it; pytorch-fid's weights (``legacy_pytorch``) in torch's hub folder, where torch finds them.
    """
    if mode == "legacy_pytorch":
        target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(FID_WEIGHTS_URL))
        return Asset(
            what="Inception weights (pytorch-fid, for eval.mode legacy_pytorch)",
            paths=(target,), url=FID_WEIGHTS_URL,
            checksum="sha256:6726825d",  # torch hub names a file after its SHA-256 prefix
            place=download_command(FID_WEIGHTS_URL, target),
        )
    if path:
        paths: tuple[str, ...] = (os.path.expanduser(path),)
    else:
        cleanfid_folder = "./" if platform.system() == "Windows" else "/tmp"
        paths = (str(cache_dir() / INCEPTION_FILE), os.path.join(cleanfid_folder, INCEPTION_FILE))
    return Asset(
        what="Inception weights (clean-fid's TorchScript TF-Inception 2015-12-05)",
        paths=paths, url=downloads_helper.inception_url, verify=zip_problem,
        place=download_command(downloads_helper.inception_url, paths[0]),
    )


def cleanfid_statistics(
    name: str, resolution: int, split: str, mode: str = "clean", *, kid: bool = False, configured_cache: str | None = None
) -> Asset:
    """clean-fid's precomputed statistics of ``name`` (FID's mean and covariance; ``kid``: KID's features).

    Looked for in the cache, then in clean-fid's ``stats/`` folder (where clean-fid downloads them).
    """
    file = f"{name}_{mode}_{split}_{resolution}{'_kid' if kid else ''}.npz".lower()
    target = str(cache_dir(configured_cache) / file)
    url = CLEANFID_STATS_URL + file
    return Asset(
        what=f"reference {'features for KID' if kid else 'statistics'} of {name} {resolution}px {split} "
        f"(clean-fid, mode {mode})",
        paths=(target, str(CLEANFID_STATS_DIR / file)), url=url,
        verify=npz_problem("feats") if kid else npz_problem("mu", "sigma"),
        place=download_command(url, target),
    )


def computed_statistics(
    name: str, resolution: int, configured_cache: str | None = None, split: str | None = None
) -> Asset:
    """Statistics no one publishes: computed from the data set (its ``split``, where not the training
    images) at the first evaluation and cached."""
    return Asset(
        what=f"reference statistics of {name} {resolution}px" + (f", split {split}" if split else ""),
        note=f"computed from the data set at the first evaluation and cached in {cache_dir(configured_cache)}",
    )


def digits_classifier() -> Asset:
    """The digits classifier's weights, shipped inside the package."""
    return Asset(
        what="digits classifier weights (shipped with gn_plugin)",
        paths=(str(DIGITS_CLASSIFIER_PATH),),
        place="python -m gn_plugin.evaluation.digits_classifier  # retrains them in seconds",
    )


def check_eval_mode(metric_space: str, mode: str) -> None:
    """``eval.mode`` chooses how Inception is fed; the digits classifier has one pipeline, so a data set
    scored by it takes the default ``clean`` only (another mode would be recorded but change nothing)."""
    if metric_space == "digits" and mode != "clean":
        raise GnPluginError(
            f"eval.mode: {mode} chooses how Inception is fed, but this data set is scored by the digits "
            "classifier, which has one pipeline; leave eval.mode at clean"
        )


def evaluation_assets(
    needs: DatasetFiles, settings: EvalConfig, dataset: str, resolution: int, split: str | None = None
) -> list[Asset]:
    """What scoring samples of a data set needs: the feature extractor's weights and the reference statistics.

    ``needs`` is the declaration (metric space and clean-fid statistics) of the images samples are
    scored against, ``dataset`` and ``resolution`` the data set's name and size, ``split`` the split
    of the reference where it is not the training images. Nothing without metrics.
    """
    if not settings.metrics:
        return []
    mode = getattr(settings, "mode", "clean")  # eval.mode, where the config has one
    check_eval_mode(needs.metric_space, mode)
    if needs.metric_space == "digits":
        return [digits_classifier()]
    assets = [inception_weights(settings.inception_path, mode)]
    if needs.cleanfid_reference is None:
        return assets + [computed_statistics(dataset, resolution, settings.cache_dir, split)]
    name, size, split = needs.cleanfid_reference
    assets.append(cleanfid_statistics(name, size, split, mode, configured_cache=settings.cache_dir))
    if "kid" in settings.metrics:
        assets.append(cleanfid_statistics(name, size, split, mode, kid=True, configured_cache=settings.cache_dir))
    return assets


# -- fetching ----------------------------------------------------------------------------------------
def download(url: str, folder: str, *, checksum: str | None = None, progress: bool = True) -> str:
    """Download ``url`` into a new temporary file in ``folder`` (its name ends like the URL's); returns it.

    The caller moves or extracts the file; on any failure nothing is left behind.
    """
    os.makedirs(folder, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix="-" + os.path.basename(url))
    try:
        with os.fdopen(handle, "wb") as file, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=os.path.basename(url), disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    file.write(chunk)
                    bar.update(len(chunk))
        problem = checksum_problem(partial, checksum) if checksum else None
        if problem:
            raise OSError(f"the download does not match its checksum: {problem}")
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return partial


def fetch_download(url: str, assets: list[Asset], *, progress: bool = True) -> None:
    """Download ``url`` once and put every asset it provides in place (the file, or the extracted archive)."""
    first = assets[0]
    folder = first.extract_to or os.path.dirname(first.paths[0])
    partial = download(url, folder, checksum=first.url_checksum, progress=progress)
    try:
        if first.extract_to:
            shutil.unpack_archive(partial, first.extract_to, filter="data")
        else:
            os.chmod(partial, 0o644)  # mkstemp creates it private
            os.replace(partial, first.paths[0])
    finally:
        Path(partial).unlink(missing_ok=True)


def fetch(assets: Iterable[Asset], *, log: Callable[[str], None] = print, progress: bool = True) -> list[Located]:
    """Download every missing or invalid asset that has a URL (one download per URL); returns them located again."""
    wanted: dict[str, list[Asset]] = {}
    for asset in assets:
        if asset.url and locate(asset).state in ("missing", "invalid"):
            wanted.setdefault(asset.url, []).append(asset)
    failures, located = [], []
    for url, provided in wanted.items():
        log(f"fetching {url}")
        try:
            fetch_download(url, provided, progress=progress)
        except Exception as exc:  # urllib, ssl, http.client, OS and archive errors alike mean "not fetched"
            failures.append(f"{url}: {one_line(exc)}")
            continue
        for item in map(locate, provided):  # downloaded, but did it provide what it should?
            located.append(item)
            if item.state != "present":
                failures.append(f"{url} did not provide {item.target} ({item.problem or 'not in the download'})")
    if failures:
        raise GnPluginError(f"could not fetch {len(failures)} of {len(wanted)} download(s): " + "; ".join(failures))
    return located


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# -- reporting ---------------------------------------------------------------------------------------
def require(assets: Iterable[Asset], fetch_hint: str) -> None:
    """Raise one error naming every missing or invalid asset (a line each), with where to fetch it from."""
    absent = [item for item in map(locate, assets) if item.state in ("missing", "invalid")]
    if not absent:
        return
    lines = [f"{len(absent)} file(s) this run reads are missing or invalid; {fetch_hint}, or place them by hand:"]
    for item in absent:
        source = f" <- {item.asset.url}" if item.asset.url else ""
        lines.append(f"  {item.state} {item.asset.what}: {item.target}{source}")
    raise GnPluginError("\n".join(lines))
