"""The site's scripts and styles, and the diagram library fetched once for offline use.

Nothing third-party is committed: mermaid is pinned by version and sha512 integrity (the npm registry's
`dist.integrity`), fetched from the npm registry once into `.planner/vendor/` (ignored by git), checked, and
served by the site as its own file. No page loads a script from a CDN.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # httpx is imported by the one function that downloads: every site build imports this
    import httpx  # module, and httpx (with what it imports) took about 0.1 s of each build

MERMAID_VERSION = "11.17.2"
MERMAID_INTEGRITY = (
    "sha512-V6K3C8EBdEsPFZXSKMJe6ppQOENxuHARr9GvHX4hh47lAbhMRD9qf4oEK7LoaRQxULMa80/qt5gHO73aCleBBg=="
)
MERMAID_URL = "https://registry.npmjs.org/mermaid/-/mermaid-{version}.tgz"
MERMAID_MEMBER = "package/dist/mermaid.min.js"
VENDOR_DIR = Path(".planner") / "vendor"

# Where the site serves its own files (docs-relative).
SITE_ASSETS = "assets/planner"
MERMAID_SITE_PATH = f"{SITE_ASSETS}/mermaid.min.js"
SCRIPT_SITE_PATH = f"{SITE_ASSETS}/roadmap.js"
STYLE_SITE_PATH = f"{SITE_ASSETS}/roadmap.css"

FETCH_HINT = (
    "The diagram library is fetched once for offline use: run `planner fetch-diagrams` "
    "(needs the npm registry once), then rebuild. The diagram's source is shown below."
)


class AssetError(Exception):
    """The diagram library could not be fetched or did not match its pinned integrity."""


def mermaid_path(root: Path) -> Path:
    """Where the checked copy of mermaid lives for the project at `root`."""
    return root / VENDOR_DIR / f"mermaid-{MERMAID_VERSION}.min.js"


def packaged_text(name: str) -> str:
    """One of the site's own files shipped in planner/render/templates/ (roadmap.js, roadmap.css)."""
    return files("planner.render").joinpath("templates", name).read_text(encoding="utf-8")


def check_integrity(data: bytes, integrity: str = MERMAID_INTEGRITY) -> None:
    """Raise AssetError unless `data` matches a Subresource-Integrity style `sha512-...` digest."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise AssetError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if actual != expected:
        raise AssetError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def extract_mermaid(tarball: bytes) -> bytes:
    """The browser bundle out of the npm package tarball."""
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            member = archive.extractfile(MERMAID_MEMBER)
            if member is None:
                raise AssetError(f"{MERMAID_MEMBER} is not a file in the package")
            return member.read()
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise AssetError(f"cannot read {MERMAID_MEMBER} from the package: {exc}") from exc


def fetch_mermaid(
    root: Path,
    *,
    url: str | None = None,
    integrity: str = MERMAID_INTEGRITY,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download the pinned mermaid package, check it, and store its browser bundle; returns the file.

    Does nothing when the file is already there. Written to a temporary name and renamed, so an
    interrupted download never leaves a half file that a later build would serve.
    """
    target = mermaid_path(root)
    if target.is_file():
        return target
    import httpx

    url = url or MERMAID_URL.format(version=MERMAID_VERSION)
    try:
        limits = httpx.Timeout(timeout, connect=min(timeout, 5.0))  # fail fast when offline
        with httpx.Client(transport=transport, timeout=limits, follow_redirects=True) as client:
            response = client.get(url)
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise AssetError(f"cannot download {url}: {exc}") from exc
    check_integrity(response.content, integrity)
    script = extract_mermaid(response.content)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(script)
    tmp.replace(target)
    return target
