"""The offline diagram library: fetched once, checked against its pinned digest, never half written."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from pathlib import Path

import httpx
import pytest

from planner.render.assets import (
    MERMAID_VERSION,
    AssetError,
    check_integrity,
    fetch_mermaid,
    mermaid_path,
    packaged_text,
)


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def serving(body: bytes, seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, content=body)

    return httpx.MockTransport(handler)


def test_fetch_checks_integrity_and_stores_the_bundle_once(tmp_path: Path) -> None:
    package = tarball({"package/dist/mermaid.min.js": b"window.mermaid = {};", "package/README.md": b"x"})
    seen: list[str] = []
    path = fetch_mermaid(tmp_path, integrity=integrity(package), transport=serving(package, seen))
    assert path == mermaid_path(tmp_path) and path.read_bytes() == b"window.mermaid = {};"
    assert seen == [f"https://registry.npmjs.org/mermaid/-/mermaid-{MERMAID_VERSION}.tgz"]
    fetch_mermaid(tmp_path, integrity=integrity(package), transport=serving(package, seen))
    assert len(seen) == 1  # cached: no second download
    assert path.parent == tmp_path / ".planner" / "vendor"


def test_a_tampered_package_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    package = tarball({"package/dist/mermaid.min.js": b"evil()"})
    with pytest.raises(AssetError, match="integrity mismatch"):
        fetch_mermaid(tmp_path, integrity=integrity(b"the real one"), transport=serving(package, []))
    assert not (tmp_path / ".planner").exists()


def test_a_package_without_the_bundle_is_refused(tmp_path: Path) -> None:
    package = tarball({"package/README.md": b"no dist"})
    with pytest.raises(AssetError, match=r"package/dist/mermaid\.min\.js"):
        fetch_mermaid(tmp_path, integrity=integrity(package), transport=serving(package, []))
    assert not mermaid_path(tmp_path).exists()


def test_network_failure_is_an_asset_error(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("no route to host", request=request)

    with pytest.raises(AssetError, match="cannot download"):
        fetch_mermaid(tmp_path, transport=httpx.MockTransport(refuse))
    failing = httpx.MockTransport(lambda request: httpx.Response(404))
    with pytest.raises(AssetError, match="404"):
        fetch_mermaid(tmp_path, transport=failing)


def test_integrity_needs_sha512() -> None:
    with pytest.raises(AssetError, match="unsupported"):
        check_integrity(b"x", "sha1-abc")
    check_integrity(b"x", integrity(b"x"))


def test_site_script_uses_no_cdn() -> None:
    script = packaged_text("roadmap.js")
    assert "http" not in script and "window.mermaid" in script
