"""Gitrepos against real git servers, a real nats-server and the control plane.

The repositories are served by ``git daemon`` (and git's smart HTTP behind
basic auth for credentials); the test pushes commits as a developer would and
watches what an operator sees: the gitrepo's status, the bundles and their
deployment IDs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import structlog
from nats.aio.client import Client
from pydantic import SecretStr

from controlplane.embedded import EmbeddedNats
from controlplane.server import ControlPlane
from controlplane.settings import ServerSettings
from protocol import admin
from protocol.gitrepos import GitCredentials, GitRepoSpec
from protocol.messages import ErrorReply, RegisterReply
from protocol.states import State
from tests.integration import cp_helpers as h
from tests.integration.gitserver import GitDaemon, GitHttp

T = TypeVar("T")

WEBHOOK_SECRET = "webhook-shared-secret"
CONFIGMAP = h.CONFIGMAP
FLEET_YAML = "defaultNamespace: apps\n"
SHOAL = str(Path(sys.executable).parent / "shoal")


@pytest.fixture(autouse=True)
def _default_logging() -> None:
    """structlog as unconfigured: a test that ran ``shoal`` in-process (``main()`` configures
    logging) leaves it caching loggers on that test's closed capture stream."""
    structlog.reset_defaults()


@pytest.fixture
def cp_settings(nats_server: EmbeddedNats, tmp_path: Path) -> ServerSettings:
    return ServerSettings(
        nats_url=nats_server.url,
        shards=4,
        heartbeat_timeout=1.5,
        offline_check_interval=0.2,
        startup_grace=0.0,
        git_cache_dir=tmp_path / "git-cache",
        webhook_listen="127.0.0.1:0",
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        webhook_max_body=64 * 1024,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    server = GitDaemon(tmp_path / "served")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 8.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {result!r}")
        await asyncio.sleep(0.05)


async def add(nc: Client, name: str, url: str, **fields: Any) -> admin.GitRepoSetReply:
    spec = GitRepoSpec(name=name, repo=url, polling_interval=fields.pop("interval", 1.0), **fields)
    reply = await h.admin_call(nc, admin.GitRepoSet(spec=spec))
    assert isinstance(reply, admin.GitRepoSetReply), reply
    return reply


async def info(nc: Client, name: str) -> admin.GitRepoInfo:
    reply = await h.admin_call(nc, admin.GitRepoList(name=name))
    assert isinstance(reply, admin.GitRepoListReply), reply
    return reply.repos[0]


def deployed(
    nc: Client, name: str, commit: str
) -> Callable[[], Awaitable[admin.GitRepoInfo | None]]:
    async def check() -> admin.GitRepoInfo | None:
        current = await info(nc, name)
        return current if current.status.deployed_commit == commit else None

    return check


def failed(nc: Client, name: str, commit: str) -> Callable[[], Awaitable[admin.GitRepoInfo | None]]:
    async def check() -> admin.GitRepoInfo | None:
        current = await info(nc, name)
        return current if current.status.error_commit == commit else None

    return check


def configmap(value: str, name: str = "demo") -> str:
    return CONFIGMAP.format(name=name, value=value)


async def test_commits_become_bundles_and_a_push_rolls_out(
    control_plane: ControlPlane, nc: Client, daemon: GitDaemon, tmp_path: Path
) -> None:
    work = daemon.create("site", tmp_path / "work")
    first = work.write("config.yaml", configmap("1")).push("first")
    token = await h.create_token(nc)
    cluster = await h.register(nc, token, "shop-1", {"env": "prod"})
    assert isinstance(cluster, RegisterReply)

    reply = await add(nc, "site", work.url, branch="main")
    assert reply.created
    repo = await eventually(deployed(nc, "site", first))
    assert repo.status.commit == first
    assert repo.status.error == ""
    assert list(repo.status.bundles) == ["site"]
    labels = control_plane.fleet.bundles["site"].spec.labels
    assert (labels["shoal.dev/repo-name"], labels["shoal.dev/commit"]) == ("site", first)
    summary = (await h.bundles(nc))["site"]  # what `shoal status` shows
    assert summary.labels["shoal.dev/commit"] == first
    v1 = summary.deployment_id

    # The cluster reports the bundle Ready: the gitrepo shows it.
    await h.report(nc, cluster, {"site": (v1, State.READY)})

    async def ready() -> admin.GitRepoInfo | None:
        current = await info(nc, "site")
        return current if current.bundles and current.bundles[0].ready == 1 else None

    shown = await eventually(ready)
    assert (shown.bundles[0].deployment_id, shown.bundles[0].targeted) == (v1, 1)

    second = work.write("config.yaml", configmap("2")).push("second")
    await eventually(deployed(nc, "site", second))
    v2 = (await h.bundles(nc))["site"].deployment_id
    assert v2 != v1

    deleted = await h.admin_call(nc, admin.GitRepoDelete(name="site"))
    assert isinstance(deleted, admin.GitRepoDeleted)
    assert deleted.bundles == ("site",)
    assert "site" not in await h.bundles(nc)
    gone = await h.admin_call(nc, admin.GitRepoList(name="site"))
    assert isinstance(gone, ErrorReply)
    assert gone.code == "not_found"


async def test_a_broken_commit_is_not_deployed_and_names_the_file(
    control_plane: ControlPlane, nc: Client, daemon: GitDaemon, tmp_path: Path
) -> None:
    work = daemon.create("site", tmp_path / "work")
    work.write("a.yaml", configmap("1", "a")).write("b.yaml", configmap("1", "b"))
    good = work.push("good")
    await add(nc, "site", work.url)  # follows the remote's HEAD
    await eventually(deployed(nc, "site", good))
    before = (await h.bundles(nc))["site"]

    work.write("a.yaml", configmap("2", "a"))  # a valid change beside the broken file
    broken = work.write("b.yaml", "kind: ConfigMap\nmetadata: [unclosed\n").push("broken")
    repo = await eventually(failed(nc, "site", broken))
    assert "b.yaml" in repo.status.error
    assert repo.status.deployed_commit == good
    assert repo.status.commit == broken
    after = (await h.bundles(nc))["site"]
    assert after.deployment_id == before.deployment_id  # nothing of the commit applied

    fixed = work.write("b.yaml", configmap("2", "b")).push("fixed")
    repo = await eventually(deployed(nc, "site", fixed))
    assert repo.status.error == ""
    assert (await h.bundles(nc))["site"].deployment_id != before.deployment_id


async def test_a_removed_bundle_directory_deletes_its_bundle_and_paths_restrict(
    control_plane: ControlPlane, nc: Client, daemon: GitDaemon, tmp_path: Path
) -> None:
    work = daemon.create("apps", tmp_path / "work")
    for app in ("web", "db"):
        work.write(f"apps/{app}/fleet.yaml", FLEET_YAML)
        work.write(f"apps/{app}/config.yaml", configmap("1", app))
    work.write("scratch/notes.yaml", "this: [is not a manifest\n")  # outside --paths
    first = work.push("two apps")
    await add(nc, "fleet", work.url, branch="main", paths=("apps",))
    repo = await eventually(deployed(nc, "fleet", first))
    assert len(repo.status.bundles) == 2
    web = next(b for b in repo.status.bundles if "web" in b)
    db = next(b for b in repo.status.bundles if "db" in b)
    assert {web, db} <= set(await h.bundles(nc))
    assert control_plane.fleet.bundles[web].spec.options.default_namespace == "apps"  # fleet.yaml

    second = work.remove("apps/db").push("drop db")
    repo = await eventually(deployed(nc, "fleet", second))
    assert repo.status.bundles == (web,)
    names = set(await h.bundles(nc))
    assert web in names
    assert db not in names


async def test_webhook_push_polls_at_once_and_bad_signatures_are_refused(
    control_plane: ControlPlane, nc: Client, daemon: GitDaemon, tmp_path: Path
) -> None:
    work = daemon.create("site", tmp_path / "work")
    first = work.write("config.yaml", configmap("1")).push()
    await add(nc, "site", work.url, branch="main", interval=3600.0)
    await eventually(deployed(nc, "site", first))
    second = work.write("config.yaml", configmap("2")).push()
    assert control_plane.webhook is not None
    hook = f"http://127.0.0.1:{control_plane.webhook.port}/"
    payload = json.dumps(
        {
            "ref": "refs/heads/main",
            "after": second,
            "repository": {"clone_url": work.url, "default_branch": "main"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), payload, hashlib.sha256).hexdigest()

    async with aiohttp.ClientSession() as session:

        async def post(body: bytes, **headers: str) -> tuple[int, str]:
            async with session.post(hook, data=body, headers=headers) as response:
                return response.status, await response.text()

        status, _ = await post(
            payload, **{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + "0" * 64}
        )
        assert status == 401
        status, _ = await post(payload, **{"X-GitHub-Event": "push"})
        assert status == 401
        status, _ = await post(payload, **{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "no"})
        assert status == 401
        assert (await info(nc, "site")).status.deployed_commit == first  # nothing polled

        ping = b'{"zen": "hello"}'
        ping_sig = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), ping, hashlib.sha256).hexdigest()
        status, _ = await post(ping, **{"X-GitHub-Event": "ping", "X-Hub-Signature-256": ping_sig})
        assert status == 204
        status, _ = await post(b"x" * (65 * 1024), **{"X-GitHub-Event": "push"})
        assert status == 413

        status, text = await post(
            payload, **{"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
        )
        assert (status, json.loads(text)) == (200, {"gitrepos": ["site"]})
        await eventually(deployed(nc, "site", second), timeout=5)

        third = work.write("config.yaml", configmap("3")).push()
        gitlab = json.dumps(
            {"ref": "refs/heads/main", "project": {"git_http_url": work.url}}
        ).encode()
        status, text = await post(
            gitlab, **{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_SECRET}
        )
        assert (status, json.loads(text)) == (200, {"gitrepos": ["site"]})
        await eventually(deployed(nc, "site", third), timeout=5)

        other_branch = json.dumps(
            {"ref": "refs/heads/dev", "repository": {"clone_url": work.url}}
        ).encode()
        status, text = await post(
            other_branch,
            **{
                "X-GitHub-Event": "push",
                "X-Hub-Signature-256": "sha256="
                + hmac.new(WEBHOOK_SECRET.encode(), other_branch, hashlib.sha256).hexdigest(),
            },
        )
        assert (status, json.loads(text)) == (200, {"gitrepos": []})


async def test_a_replica_that_does_not_lead_forwards_the_webhook_to_the_leader(
    control_plane: ControlPlane,
    cp_settings: ServerSettings,
    nc: Client,
    daemon: GitDaemon,
    tmp_path: Path,
) -> None:
    work = daemon.create("site", tmp_path / "work")
    first = work.write("config.yaml", configmap("1")).push()
    await add(nc, "site", work.url, branch="main", interval=3600.0)
    await eventually(deployed(nc, "site", first))
    second_settings = cp_settings.model_copy(update={"git_cache_dir": tmp_path / "cache-2"})
    async with ControlPlane(second_settings) as follower:
        assert follower.gitrepos is not None
        assert not follower.gitrepos.leader
        assert follower.webhook is not None
        await eventually(lambda: _value("site" in follower.gitrepos.repos))  # type: ignore[union-attr]
        second = work.write("config.yaml", configmap("2")).push()
        body = json.dumps({"ref": "refs/heads/main", "repository": {"clone_url": work.url}})
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{follower.webhook.port}/webhook",
                data=body,
                headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": WEBHOOK_SECRET},
            ) as response,
        ):
            assert response.status == 200
        await eventually(deployed(nc, "site", second), timeout=5)
        assert not (tmp_path / "cache-2").exists()  # the leader fetched, not this replica


async def _value(value: T) -> T:
    return value


@pytest.fixture
async def http_git(tmp_path: Path) -> AsyncIterator[GitHttp]:
    server = GitHttp(tmp_path / "served", username="deploy", password="s3cret-Pa55word")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_credentials_fetch_over_https_and_are_never_shown(
    control_plane: ControlPlane,
    *,
    nats_server: EmbeddedNats,
    nc: Client,
    daemon: GitDaemon,
    http_git: GitHttp,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    password = "s3cret-Pa55word"
    work = daemon.create("private", tmp_path / "work")  # pushed through git://
    first = work.write("config.yaml", configmap("1")).push()
    url = http_git.url("private")  # fetched through HTTP with basic auth

    with structlog.testing.capture_logs() as logs:
        await add(nc, "private", url, branch="main")  # no credentials yet
        repo = await eventually(lambda: _failed_poll(nc, "private"))
        assert "terminal prompts disabled" in repo.status.error or "401" in repo.status.error

        wrong = GitCredentials(username="deploy", password="not-the-password")
        await h.admin_call(nc, admin.GitSecretSet(name="wrong", credentials=wrong))
        await add(nc, "private", url, branch="main", auth_secret="wrong")
        repo = await eventually(lambda: _failed_poll(nc, "private", "wrong"))
        assert "Authentication failed" in repo.status.error

        env = {**os.environ, "SHOAL_URL": nats_server.url}
        proc = await asyncio.create_subprocess_exec(
            SHOAL, "gitrepo", "secret", "set", "deploy-key", "--username", "deploy",
            "--password-stdin",
            env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate(password.encode() + b"\n")
        assert proc.returncode == 0, err
        await add(nc, "private", url, branch="main", auth_secret="deploy-key")
        await eventually(deployed(nc, "private", first))

        shown = []
        for args in (
            ["gitrepo", "show", "private"],
            ["gitrepo", "show", "private", "-o", "json"],
            ["gitrepo", "list", "-o", "yaml"],
            ["gitrepo", "secret", "list", "-o", "json"],
        ):
            proc = await asyncio.create_subprocess_exec(
                SHOAL, *args, env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            shown.append(out.decode() + err.decode())
    assert "deploy-key" in shown[3]
    assert '"username": "deploy"' in shown[3]
    assert "commit" in shown[0]
    everything = "\n".join([*shown, repr(logs), *capfd.readouterr()])
    assert password not in everything
    assert "not-the-password" not in everything
    assert any(auth.startswith("Basic ") for auth in http_git.requests)


async def _failed_poll(nc: Client, name: str, secret: str = "") -> admin.GitRepoInfo | None:
    current = await info(nc, name)
    if (
        current.spec.auth_secret != secret
        or current.generation != current.status.observed_generation
    ):
        return None
    return current if current.status.error else None


async def test_the_cli_adds_shows_and_refuses_bad_input(
    control_plane: ControlPlane,
    nats_server: EmbeddedNats,
    daemon: GitDaemon,
    tmp_path: Path,
) -> None:
    work = daemon.create("site", tmp_path / "work")
    first = work.write("config.yaml", configmap("1")).push()
    env = {**os.environ, "SHOAL_URL": nats_server.url}

    async def shoal(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            SHOAL, *args, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    code, out, err = await shoal(
        "gitrepo", "add", "site", "--repo", work.url, "--branch", "main", "--target", "env=prod"
    )
    assert code == 0, err
    assert "gitrepo/site created" in out
    assert f"commit {first[:12]} deployed: site" in out

    code, out, _ = await shoal("gitrepo", "show", "site", "-o", "json")
    shown = json.loads(out)
    assert (shown["deployed_commit"], shown["branch"], shown["error"]) == (first, "main", "")
    assert shown["targets"][0]["clusterSelector"]["matchLabels"] == {"env": "prod"}

    code, out, err = await shoal("gitrepo", "add", "nope", "--repo", work.url, "--branch", "gone")
    assert code == 1
    assert "has no branch 'gone'" in err

    code, _, err = await shoal("gitrepo", "show", "missing")
    assert (code, err.strip()) == (
        1,
        "error: no gitrepo named 'missing'; `shoal gitrepo list` shows them all",
    )
    code, _, err = await shoal("gitrepo", "add", "x", "--repo", "ftp://host/x")
    assert code == 2
    assert "unsupported scheme 'ftp'" in err
    code, _, err = await shoal("gitrepo", "add", "x", "--repo", work.url, "--interval", "soon")
    assert code == 2
    assert "invalid duration 'soon'" in err
    code, _, err = await shoal(
        "gitrepo", "add", "x", "--repo", work.url, "--branch", "main", "--revision", "v1"
    )
    assert code == 2
    assert "not allowed with argument --branch" in err

    code, out, _ = await shoal("gitrepo", "delete", "site")
    assert (code, out.splitlines()) == (0, ["gitrepo/site deleted", "bundle/site deleted"])
