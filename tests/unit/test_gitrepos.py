"""Gitrepo specs, webhook matching and how credentials are handed to git."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import msgpack
import pytest
from pydantic import ValidationError

from controlplane.gitrepos import StoredGitRepo
from controlplane.gitsync import GitCli
from controlplane.webhook import matching, parse_listen
from protocol import admin, codec
from protocol.errors import DecodeError, InvalidNameError
from protocol.gitrepos import (
    GitCredentials,
    GitRepoSpec,
    normalize_repo_url,
    validate_repo_path,
    validate_repo_url,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/org/app.git",
        "http://10.0.0.1:3000/org/app",
        "ssh://git@github.com:22/org/app.git",
        "git://127.0.0.1:9418/app.git",
        "git@github.com:org/app.git",
    ],
)
def test_repository_urls_git_fetches_from_are_accepted(url: str) -> None:
    assert validate_repo_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///srv/app.git", "unsupported scheme 'file'"),
        ("ext::sh -c touch% /tmp/pwned", "invalid repository URL"),
        ("-uhelp", "invalid repository URL"),
        ("/srv/app.git", "invalid repository URL"),
        ("https://github.com/", "names no repository path"),
        ("https://user:hunter2@github.com/org/app.git", "holds a password"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(InvalidNameError, match=reason) as info:
        validate_repo_url(url)
    assert "hunter2" not in str(info.value)


def test_a_password_in_the_url_is_not_echoed_by_the_spec_error() -> None:
    with pytest.raises(ValidationError) as info:
        GitRepoSpec(name="app", repo="https://user:hunter2@github.com/org/app.git")
    assert "hunter2" not in str(info.value)


def test_the_same_repository_matches_across_url_spellings() -> None:
    spellings = [
        "https://github.com/Org/app.git",
        "git@GitHub.com:Org/app.git",
        "ssh://git@github.com:22/Org/app",
        "https://github.com/Org/app/",
    ]
    assert {normalize_repo_url(u) for u in spellings} == {"github.com/Org/app"}


def test_spec_rules() -> None:
    spec = GitRepoSpec(name="app", repo="https://h/x", paths=("./apps/web/", "apps/web", "."))
    assert spec.paths == ("apps/web", ".")
    assert spec.polling_interval == 15.0
    with pytest.raises(ValidationError, match="not both"):
        GitRepoSpec(name="app", repo="https://h/x", branch="main", revision="v1")
    with pytest.raises(ValidationError, match="at least 1 s"):
        GitRepoSpec(name="app", repo="https://h/x", polling_interval=0.1)
    for branch in ("-upload-pack=evil", "a..b", "a b", "x.lock"):
        with pytest.raises(ValidationError, match="branch"):
            GitRepoSpec(name="app", repo="https://h/x", branch=branch)
    for path in ("../etc", "a/../../b", "-x", "/etc"):
        with pytest.raises(InvalidNameError):
            validate_repo_path(path)
    pinned = GitRepoSpec(name="app", repo="https://h/x", revision="ABCDEF" + "0" * 34)
    assert pinned.revision == "abcdef" + "0" * 34


def test_credentials_never_show_in_repr_and_hold_one_kind() -> None:
    creds = GitCredentials(username="deploy", password="hunter2")
    assert "hunter2" not in repr(creds)
    assert creds.kind == "basic-auth"
    assert GitCredentials(ssh_private_key="KEY").kind == "ssh"
    with pytest.raises(ValidationError, match="not both"):
        GitCredentials(username="u", password="p", ssh_private_key="KEY")
    with pytest.raises(ValidationError, match="needs a password"):
        GitCredentials(username="u")


def _stored(name: str, repo: str, **fields: str) -> StoredGitRepo:
    spec = GitRepoSpec(name=name, repo=repo, **fields)
    return StoredGitRepo(spec=spec, generation=1, created_at=0.0, updated_at=0.0)


def test_a_push_matches_gitrepos_of_that_repository_and_branch() -> None:
    repos = [
        _stored("main", "git@github.com:org/app.git", branch="main"),
        _stored("dev", "https://github.com/org/app", branch="dev"),
        _stored("head", "https://github.com/org/app.git"),
        _stored("pinned", "https://github.com/org/app.git", revision="v1.2"),
        _stored("other", "https://github.com/org/other.git", branch="main"),
    ]
    push = {
        "ref": "refs/heads/main",
        "repository": {
            "clone_url": "https://github.com/org/app.git",
            "ssh_url": "git@github.com:org/app.git",
            "default_branch": "main",
        },
    }
    assert matching(repos, push) == ["head", "main", "pinned"]
    push_dev = {**push, "ref": "refs/heads/dev"}
    assert matching(repos, push_dev) == ["dev", "pinned"]
    gitlab = {"ref": "refs/heads/main", "project": {"git_http_url": "https://github.com/org/app"}}
    assert matching(repos, gitlab) == ["head", "main", "pinned"]
    assert matching(repos, {"ref": "refs/heads/main"}) == []


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen(":9000") == ("0.0.0.0", 9000)
    assert parse_listen("[::1]:80") == ("::1", 80)


def test_https_credentials_reach_git_through_askpass_files_only(tmp_path: Path) -> None:
    cli = GitCli(tmp_path, timeout=5)
    creds = GitCredentials(username="deploy", password="hunter2")
    with cli._auth_env(creds) as env:
        assert "hunter2" not in " ".join(env.values())
        askpass = Path(env["GIT_ASKPASS"])
        for path in (env["SHOAL_GIT_USERNAME_FILE"], env["SHOAL_GIT_PASSWORD_FILE"]):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        run_env = {**os.environ, **env}
        ask = [str(askpass)]
        user = subprocess.run(
            [*ask, "Username for 'https://h': "], env=run_env, capture_output=True, check=True
        )
        password = subprocess.run(
            [*ask, "Password for 'https://deploy@h': "],
            env=run_env,
            capture_output=True,
            check=True,
        )
        assert (user.stdout, password.stdout) == (b"deploy", b"hunter2")
    assert not askpass.parent.exists()  # removed after the command


def test_an_ssh_key_reaches_git_as_a_private_file(tmp_path: Path) -> None:
    cli = GitCli(tmp_path, timeout=5)
    creds = GitCredentials(
        ssh_private_key="-----BEGIN KEY-----\nabc", known_hosts="h ssh-ed25519 AAAA"
    )
    with cli._auth_env(creds) as env:
        command = shlex.split(env["GIT_SSH_COMMAND"])
        key = Path(command[command.index("-i") + 1])
        assert key.read_text().endswith("abc\n")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert "StrictHostKeyChecking=yes" in command
        assert "abc" not in env["GIT_SSH_COMMAND"]
    assert not key.exists()


def test_a_malformed_secret_request_does_not_echo_the_secret() -> None:
    for credentials in ("hunter2-pass", {"username": "u", "password": ["hunter2-pass"]}):
        data = msgpack.packb([1, "git_secret_set", {"name": "x", "credentials": credentials}])
        with pytest.raises(DecodeError) as info:
            codec.decode(data, admin.GitSecretSet)
        assert "hunter2" not in str(info.value)
