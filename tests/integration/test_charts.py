"""Charts fetched from archive URLs, chart repositories and OCI registries, served on 127.0.0.1.

The servers are small ``http.server`` handlers that speak what real ones
speak (an ``index.yaml`` with relative URLs; the OCI distribution API with a
bearer-token challenge), and record every request, so the tests can tell
what was downloaded and what came from the cache.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bundles.build import build_bundles
from bundles.chartdeps import with_dependencies
from bundles.charts import ChartCache, Credentials, chart_files, locate_chart
from bundles.errors import ChartNotFound, HelmError
from bundles.fetch import Limits
from bundles.helm import render_chart
from bundles.render import render_placed
from bundles.templating import ClusterContext

Reply = tuple[int, dict[str, str], bytes]
Route = Callable[["Request"], Reply]


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]


@dataclass
class Server:
    """An HTTP server on 127.0.0.1 answering from ``routes`` (path -> reply)."""

    routes: dict[str, Route | Reply] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hits(self, path: str) -> int:
        return sum(1 for r in self.requests if r.path.split("?")[0] == path)


@pytest.fixture
def serve() -> Iterator[Callable[[], Server]]:
    started: list[ThreadingHTTPServer] = []

    def start() -> Server:
        state = Server()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()})
                state.requests.append(request)
                route = state.routes.get(self.path.split("?")[0])
                headers: dict[str, str]
                if route is None:
                    status, headers, body = 404, {}, b"not found"
                elif callable(route):
                    status, headers, body = route(request)
                else:
                    status, headers, body = route
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        state.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        started.append(httpd)
        return state

    try:
        yield start
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


def chart_archive(name: str, version: str) -> bytes:
    """A packaged chart whose one ConfigMap says which version it is."""
    files = {
        "Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n",
        "values.yaml": "greeting: hello\n",
        "templates/cm.yaml": (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
            "data:\n  version: {{ .Chart.Version | quote }}\n  greeting: {{ .Values.greeting }}\n"
        ),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{name}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ok(body: bytes, content_type: str = "application/octet-stream") -> Reply:
    return (200, {"Content-Type": content_type}, body)


def rendered_version(archive: Path) -> str:
    objects = render_chart(archive, release_name="r", namespace="n").object_dicts()
    version: str = objects[0]["data"]["version"]
    return version


# -- archive URLs ------------------------------------------------------------------------------


def test_an_archive_url_is_downloaded_once_then_served_from_the_cache(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    archive = chart_archive("web", "1.4.0")
    server.routes["/dl/web-1.4.0.tgz"] = ok(archive)
    url = f"{server.url}/dl/web-1.4.0.tgz"

    first = ChartCache(tmp_path / "cache").fetch(url)
    again = ChartCache(tmp_path / "cache").fetch(url)

    assert first.downloaded and not again.downloaded
    assert first.digest == again.digest == f"sha256:{sha256(archive)}"
    assert first.archive.read_bytes() == archive
    assert server.hits("/dl/web-1.4.0.tgz") == 1
    assert rendered_version(again.archive) == "1.4.0"


def test_a_missing_archive_is_chart_not_found_with_the_status(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    url = f"{server.url}/dl/gone-1.0.0.tgz"
    with pytest.raises(ChartNotFound) as caught:
        ChartCache(tmp_path).fetch(url)
    assert "404" in str(caught.value)
    assert url in str(caught.value)


def test_an_archive_over_the_size_limit_is_refused(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    server.routes["/big.tgz"] = ok(b"x" * 10_000)
    cache = ChartCache(tmp_path, chart_limits=Limits(max_bytes=1_000))
    with pytest.raises(HelmError, match="limit"):
        cache.fetch(f"{server.url}/big.tgz")
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]  # nothing left


def test_a_server_that_stalls_times_out(serve: Callable[[], Server], tmp_path: Path) -> None:
    server = serve()

    def stall(request: Request) -> Reply:
        time.sleep(2)
        return ok(b"late")

    server.routes["/slow.tgz"] = stall
    cache = ChartCache(tmp_path, chart_limits=Limits(timeout=0.3))
    started = time.monotonic()
    with pytest.raises(HelmError, match="timed out"):
        cache.fetch(f"{server.url}/slow.tgz")
    assert time.monotonic() - started < 1.5


# -- chart repositories ------------------------------------------------------------------------


def publish(server: Server, prefix: str, versions: dict[str, bytes]) -> None:
    """A chart repository under ``prefix``: index.yaml with relative URLs, and the archives."""
    entries = []
    for version, archive in versions.items():
        server.routes[f"{prefix}/packages/web-{version}.tgz"] = ok(archive)
        entries.append(
            {
                "name": "web",
                "version": version,
                "urls": [f"packages/web-{version}.tgz"],
                "digest": sha256(archive),
                "created": "2024-05-01T10:00:00.123456789Z",
            }
        )
    index = {"apiVersion": "v1", "entries": {"web": entries}, "generated": "2024-05-01T10:00:00Z"}
    server.routes[f"{prefix}/index.yaml"] = ok(yaml.safe_dump(index).encode(), "text/yaml")


VERSIONS = ["1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "2.0.0"]


@pytest.mark.parametrize(
    ("wanted", "picked"),
    [("^1.0", "1.2.5"), ("~1.2.0", "1.2.5"), ("1.0.0", "1.0.0"), ("", "2.0.0"), ("1.x", "1.2.5")],
)
def test_a_repository_gives_the_highest_version_the_range_admits(
    serve: Callable[[], Server], tmp_path: Path, wanted: str, picked: str
) -> None:
    server = serve()
    publish(server, "/stable", {v: chart_archive("web", v) for v in VERSIONS})

    fetched = ChartCache(tmp_path).fetch("web", repo=f"{server.url}/stable", version=wanted)

    assert fetched.version == picked
    # Relative URLs resolve against the repository, path included.
    assert fetched.source == f"{server.url}/stable/packages/web-{picked}.tgz"
    assert rendered_version(fetched.archive) == picked


def test_a_range_is_resolved_again_after_the_ttl_and_downloads_only_new_versions(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    archives = {v: chart_archive("web", v) for v in ["1.0.0", "1.1.0", "1.2.0"]}
    publish(server, "", {v: archives[v] for v in ["1.0.0", "1.1.0"]})
    now = [1000.0]
    cache = ChartCache(tmp_path, index_ttl=60, clock=lambda: now[0])

    assert cache.fetch("web", repo=server.url, version="^1").version == "1.1.0"
    publish(server, "", archives)  # 1.2.0 is released
    now[0] += 30
    assert cache.fetch("web", repo=server.url, version="^1").version == "1.1.0"
    assert server.hits("/index.yaml") == 1  # within the TTL: no index fetch

    now[0] += 60
    newer = cache.fetch("web", repo=server.url, version="^1")
    assert (newer.version, newer.downloaded) == ("1.2.0", True)
    assert server.hits("/index.yaml") == 2

    pinned = cache.fetch("web", repo=server.url, version="1.1.0")
    assert not pinned.downloaded  # the index is not even read for a cached exact version
    assert server.hits("/index.yaml") == 2
    assert server.hits("/packages/web-1.1.0.tgz") == 1


def test_a_repository_without_the_chart_or_version_is_chart_not_found(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    publish(server, "", {"1.0.0": chart_archive("web", "1.0.0")})
    cache = ChartCache(tmp_path)

    with pytest.raises(ChartNotFound, match="no version matches") as caught:
        cache.fetch("web", repo=server.url, version="^2.0")
    assert caught.value.field == "helm.version"
    assert "1.0.0" in str(caught.value)  # what is available

    with pytest.raises(ChartNotFound, match="no chart named 'api'"):
        cache.fetch("api", repo=server.url, version="1.0.0")

    with pytest.raises(ChartNotFound) as caught:
        cache.fetch("web", repo=f"{server.url}/nothing-here", version="1.0.0")
    message = str(caught.value)
    assert "404" in message and "'web'" in message and "1.0.0" in message
    assert f"{server.url}/nothing-here" in message


def test_an_archive_that_does_not_match_the_index_digest_is_refused(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    publish(server, "", {"1.0.0": chart_archive("web", "1.0.0")})
    server.routes["/packages/web-1.0.0.tgz"] = ok(chart_archive("web", "6.6.6"))

    with pytest.raises(HelmError, match="digest"):
        ChartCache(tmp_path).fetch("web", repo=server.url, version="1.0.0")
    assert not list((tmp_path / "blobs").rglob("*.tgz"))


def test_basic_auth_is_sent_and_never_stored(serve: Callable[[], Server], tmp_path: Path) -> None:
    server = serve()
    publish(server, "", {"1.0.0": chart_archive("web", "1.0.0")})
    expected = "Basic " + base64.b64encode(b"ci:s3cret-pass").decode()
    for path, route in list(server.routes.items()):

        def guarded(request: Request, route: Any = route) -> Reply:
            if request.headers.get("authorization") != expected:
                return (401, {"WWW-Authenticate": 'Basic realm="charts"'}, b"")
            reply: Reply = route
            return reply

        server.routes[path] = guarded
    cache = ChartCache(tmp_path)

    with pytest.raises(HelmError, match="401") as caught:
        cache.fetch("web", repo=server.url, version="1.0.0")
    assert not isinstance(caught.value, ChartNotFound)

    credentials = Credentials("ci", "s3cret-pass")
    fetched = cache.fetch("web", repo=server.url, version="1.0.0", credentials=credentials)
    assert fetched.version == "1.0.0"
    assert "s3cret" not in repr(credentials)
    for stored in (tmp_path / "refs").iterdir():
        assert "s3cret" not in stored.read_text()


# -- OCI registries ----------------------------------------------------------------------------

CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def registry(server: Server, repository: str, versions: dict[str, bytes], token: str) -> None:
    """A registry serving Helm charts, wanting a bearer token from its own /token endpoint."""
    challenge = (
        f'Bearer realm="{server.url}/token",service="test-registry",'
        f'scope="repository:{repository}:pull"'
    )

    def authorized(reply: Reply) -> Route:
        def route(request: Request) -> Reply:
            if request.headers.get("authorization") != f"Bearer {token}":
                return (401, {"WWW-Authenticate": challenge}, b"")
            return reply

        return route

    tags = [v.replace("+", "_") for v in versions]
    server.routes[f"/v2/{repository}/tags/list"] = authorized(
        ok(json.dumps({"name": repository, "tags": tags}).encode(), "application/json")
    )
    for version, archive in versions.items():
        digest = f"sha256:{sha256(archive)}"
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.helm.config.v1+json",
                "digest": "sha256:" + "0" * 64,
                "size": 2,
            },
            "layers": [{"mediaType": CHART_LAYER, "digest": digest, "size": len(archive)}],
        }
        server.routes[f"/v2/{repository}/manifests/{version.replace('+', '_')}"] = authorized(
            ok(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        )
        server.routes[f"/v2/{repository}/blobs/{digest}"] = authorized(ok(archive))


def token_endpoint(server: Server, token: str, credentials: Credentials | None) -> None:
    def route(request: Request) -> Reply:
        if credentials and request.headers.get("authorization") != credentials.basic():
            return (401, {}, b"")
        return ok(json.dumps({"token": token}).encode(), "application/json")

    server.routes["/token"] = route


def test_an_oci_chart_is_pulled_with_a_registry_token(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    credentials = Credentials("robot", "hunter2")
    versions = {v: chart_archive("web", v) for v in ["0.9.0", "1.0.0", "1.1.0+build.7", "2.0.0"]}
    registry(server, "charts/web", versions, token="t0k3n")
    token_endpoint(server, "t0k3n", credentials)
    cache = ChartCache(tmp_path)
    ref = f"oci://127.0.0.1:{server.port}/charts/web"

    fetched = cache.fetch(ref, version="^1.0", credentials=credentials, plain_http=True)

    assert fetched.version == "1.1.0+build.7"
    assert fetched.source == f"{ref}:1.1.0_build.7"
    assert fetched.digest == f"sha256:{sha256(versions['1.1.0+build.7'])}"
    assert rendered_version(fetched.archive) == "1.1.0+build.7"
    token_requests = [r for r in server.requests if r.path.startswith("/token")]
    assert token_requests and "scope=repository%3Acharts%2Fweb%3Apull" in token_requests[0].path

    # Fleet's HelmOps spelling: repo oci://registry/path + chart name; exact versions are cached.
    again = cache.fetch(
        "web",
        repo=f"oci://127.0.0.1:{server.port}/charts",
        version="1.1.0+build.7",
        credentials=credentials,
        plain_http=True,
    )
    assert not again.downloaded
    assert server.hits(f"/v2/charts/web/blobs/{fetched.digest}") == 1


def test_an_unknown_oci_chart_is_chart_not_found(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    registry(server, "charts/web", {"1.0.0": chart_archive("web", "1.0.0")}, token="t")
    token_endpoint(server, "t", None)
    cache = ChartCache(tmp_path)

    with pytest.raises(ChartNotFound, match="404"):
        cache.fetch(f"oci://127.0.0.1:{server.port}/charts/api", version="1.0.0", plain_http=True)
    with pytest.raises(ChartNotFound, match="no tag matches"):
        cache.fetch(f"oci://127.0.0.1:{server.port}/charts/web", version="^3", plain_http=True)


def test_registry_credentials_do_not_follow_a_redirect_to_another_host(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server, storage = serve(), serve()
    archive = chart_archive("web", "1.0.0")
    registry(server, "charts/web", {"1.0.0": archive}, token="t")
    token_endpoint(server, "t", None)
    digest = f"sha256:{sha256(archive)}"
    storage.routes["/bucket/blob"] = ok(archive)
    server.routes[f"/v2/charts/web/blobs/{digest}"] = (
        307,
        {"Location": f"{storage.url}/bucket/blob"},
        b"",
    )

    fetched = ChartCache(tmp_path).fetch(
        f"oci://127.0.0.1:{server.port}/charts/web", version="1.0.0", plain_http=True
    )

    assert fetched.digest == digest
    assert [r.headers.get("authorization") for r in storage.requests] == [None]


# -- local charts and archives -----------------------------------------------------------------


def test_a_local_chart_is_found_relative_to_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "repo" / "apps" / "web"
    (bundle / "chart").mkdir(parents=True)
    (bundle / "chart" / "Chart.yaml").write_text("apiVersion: v2\nname: web\nversion: 1.0.0\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "Chart.yaml").write_text("apiVersion: v2\nname: x\nversion: 1.0.0\n")

    assert locate_chart("chart", base=bundle) == (bundle / "chart").resolve()
    assert locate_chart("./chart/", base=bundle, root=tmp_path / "repo") == (bundle / "chart")
    with pytest.raises(ChartNotFound, match="outside"):
        locate_chart("../../../outside", base=bundle, root=tmp_path / "repo")
    with pytest.raises(ChartNotFound, match=r"Chart\.yaml"):
        locate_chart("missing", base=bundle)
    with pytest.raises(HelmError, match="unsupported"):
        locate_chart("git::https://example.invalid/repo", base=bundle)


def test_chart_files_are_named_inside_the_chart_and_refuse_escapes(tmp_path: Path) -> None:
    archive = tmp_path / "web.tgz"
    archive.write_bytes(chart_archive("web", "1.0.0"))
    assert sorted(chart_files(archive)) == ["Chart.yaml", "templates/cm.yaml", "values.yaml"]

    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("web/../../etc/passwd")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(HelmError, match="refusing"):
        chart_files(evil)


# -- dependencies declared in Chart.yaml -------------------------------------------------------


def test_declared_dependencies_are_fetched_into_a_copy_of_the_chart(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    server = serve()
    publish(server, "", {v: chart_archive("web", v) for v in ["1.0.0", "1.1.0", "2.0.0"]})
    umbrella = tmp_path / "repo" / "shop"
    (umbrella / "templates").mkdir(parents=True)
    (umbrella / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n"
        f"- name: web\n  version: ^1.0.0\n  repository: {server.url}\n"
        "- name: lib\n  version: 0.1.0\n  repository: file://../lib\n"
    )
    lib = tmp_path / "repo" / "lib"
    (lib / "templates").mkdir(parents=True)
    (lib / "Chart.yaml").write_text("apiVersion: v2\nname: lib\nversion: 0.1.0\n")
    (lib / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lib\n"
    )
    cache = ChartCache(tmp_path / "cache")

    with pytest.raises(HelmError, match="web"):
        render_chart(umbrella, release_name="shop", namespace="n")
    ready = with_dependencies(umbrella, tmp_path / "work1", cache=cache)
    objects = render_chart(ready, release_name="shop", namespace="n").object_dicts()

    assert sorted(o["metadata"]["name"] for o in objects) == ["lib", "shop"]
    assert next(o for o in objects if o["metadata"]["name"] == "shop")["data"]["version"] == (
        "1.1.0"
    )
    assert not (umbrella / "charts").exists()  # the bundle's own chart is left alone

    with_dependencies(umbrella, tmp_path / "work2", cache=cache)
    assert server.hits("/packages/web-1.1.0.tgz") == 1  # the second time from the cache
    assert with_dependencies(ready, tmp_path / "work3", cache=cache) == ready


def test_build_puts_remote_charts_and_subcharts_inside_the_bundle(
    serve: Callable[[], Server], tmp_path: Path
) -> None:
    """Agents at the edge never reach the internet: everything travels in the bundle."""
    server = serve()
    publish(server, "/stable", {v: chart_archive("web", v) for v in ["1.0.0", "1.4.0", "2.0.0"]})
    repo = tmp_path / "repo"
    (repo / "remote").mkdir(parents=True)
    (repo / "remote" / "fleet.yaml").write_text(
        f"helm:\n  repo: {server.url}/stable\n  chart: web\n  version: ^1.0\n"
        "  values:\n    greeting: hi\n"
    )
    umbrella = repo / "umbrella"
    (umbrella / "templates").mkdir(parents=True)
    (umbrella / "fleet.yaml").write_text("namespace: shop\n")
    (umbrella / "Chart.yaml").write_text(
        "apiVersion: v2\nname: shop\nversion: 0.1.0\ndependencies:\n"
        f"- name: web\n  version: 2.0.0\n  repository: {server.url}/stable\n"
    )
    cache = ChartCache(tmp_path / "cache")

    built = {b.path: b for b in build_bundles(repo, base_name="site", cache=cache).bundles}

    remote, vendored = built["remote"], built["umbrella"]
    helm = remote.spec.options.helm
    assert helm is not None and helm.repo == "" and helm.chart.startswith(".charts/")
    assert helm.version == "1.4.0"  # the range, resolved when the bundle was built
    assert any(r.name.endswith("charts/web-2.0.0.tgz") for r in vendored.resources)
    downloads = len(server.requests)
    context = ClusterContext(name="shop-1")
    [cm] = render_placed(remote.resources, remote.spec.options, bundle="web", cluster=context)
    assert cm["data"] == {"version": "1.4.0", "greeting": "hi"}
    sub = render_placed(vendored.resources, vendored.spec.options, bundle="u", cluster=context)
    assert [o["data"]["version"] for o in sub] == ["2.0.0"]
    assert len(server.requests) == downloads  # rendering fetched nothing


def test_a_file_subchart_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    """A repository cannot make the builder copy a chart from elsewhere on the host."""
    secret_chart = tmp_path / "elsewhere" / "private"
    (secret_chart / "templates").mkdir(parents=True)
    (secret_chart / "Chart.yaml").write_text("apiVersion: v2\nname: private\nversion: 1.0.0\n")
    bundle = tmp_path / "repo" / "app"
    bundle.mkdir(parents=True)
    (bundle / "fleet.yaml").write_text("namespace: app\n")
    (bundle / "Chart.yaml").write_text(
        "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n"
        f"- name: private\n  version: 1.0.0\n  repository: file://{secret_chart}\n"
    )

    with pytest.raises(HelmError, match="outside the bundle"):
        build_bundles(tmp_path / "repo", cache=ChartCache(tmp_path / "cache"))
