"""Git sources: a GitRepo as the operator declares it, and what the control plane saw of it.

A :class:`GitRepoSpec` mirrors Fleet's ``GitRepo`` (``repo``, ``branch``,
``revision``, ``paths``, ``pollingInterval``, ``targets``,
``clientSecretName``) so a Fleet user recognises every field. The control
plane polls the repository, turns each new commit into bundles and records
what happened in a :class:`GitRepoStatus`. Credentials live apart from the
spec, in a named :class:`GitCredentials` secret the spec refers to, so that
listing or showing a gitrepo can never reveal them.

Everything here is pure validation: the URL, branch, tag, commit and path
rules are checked before anything reaches the ``git`` command line, which
also keeps option injection (a value starting with ``-``) and local
transports (``file://``, ``ext::``) out.
"""

from __future__ import annotations

import re
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.errors import InvalidNameError
from protocol.models import BundleTarget, validate_bundle_name

# Labels the control plane sets on every bundle a gitrepo creates.
REPO_LABEL = "shoal.dev/repo-name"
COMMIT_LABEL = "shoal.dev/commit"

DEFAULT_INTERVAL = 15.0  # seconds, as Fleet's default pollingInterval
MIN_INTERVAL = 1.0

URL_SCHEMES = ("https", "http", "ssh", "git")

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_SCP_RE = re.compile(
    r"^(?:[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):(?P<path>[^\s]+)\Z"
)
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def _invalid(field: str, value: str, message: str) -> InvalidNameError:
    return InvalidNameError(message, field=field, value=value)


def validate_repo_url(url: str) -> str:
    """A URL git may fetch from: https, http, ssh, git or scp-like ``user@host:path``.

    Credentials inside the URL are refused: they would show in every status,
    log line and process list. They belong in a secret (``--auth-secret``).
    """
    want = "want https://, http://, ssh://, git:// or user@host:path"
    if not url or url.startswith("-") or any(c.isspace() or ord(c) < 32 for c in url):
        raise _invalid("repo", url, f"invalid repository URL {url!r}: {want}")
    if "://" in url:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError on a bad port)
        except ValueError as exc:
            raise _invalid("repo", url, f"invalid repository URL {url!r}: {exc}") from exc
        if parts.scheme.lower() not in URL_SCHEMES:
            raise _invalid(
                "repo", url, f"unsupported scheme {parts.scheme!r} in repository URL: {want}"
            )
        if not parts.hostname:
            raise _invalid("repo", url, f"repository URL {url!r} names no host")
        if parts.password is not None:
            raise _invalid(
                "repo",
                "(redacted)",
                "the repository URL holds a password: store credentials with "
                "`shoal gitrepo secret set` and pass --auth-secret instead",
            )
        if parts.path in ("", "/"):
            raise _invalid("repo", url, f"repository URL {url!r} names no repository path")
        return url
    if _SCP_RE.match(url):
        return url
    raise _invalid("repo", url, f"invalid repository URL {url!r}: {want}")


def normalize_repo_url(url: str) -> str:
    """``host/path`` of a repository URL, lowercased host, without ``.git``: for matching.

    ``https://github.com/org/app.git``, ``git@github.com:org/app`` and
    ``ssh://git@github.com:22/org/app.git`` all give ``github.com/org/app``,
    which is how a webhook's payload is matched to gitrepos.
    """
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        host, path = (parts.hostname or "").lower(), parts.path
    else:
        match = _SCP_RE.match(url)
        if match is None:
            return url
        host, path = match["host"].lower(), match["path"]
    path = path.strip("/").removeprefix("~").strip("/")
    path = path.removesuffix(".git").rstrip("/")
    return f"{host}/{path}"


def is_commit(revision: str) -> bool:
    """Whether a revision is a full commit ID (SHA-1 or SHA-256) rather than a tag."""
    return bool(_SHA_RE.match(revision))


def validate_ref_name(value: str, *, field: str) -> str:
    """A branch or tag name as ``git check-ref-format`` would take it (roughly)."""
    if (
        not value
        or value.startswith(("-", "/", "."))
        or value.endswith(("/", ".", ".lock"))
        or _REF_FORBIDDEN.search(value)
    ):
        raise _invalid(field, value, f"invalid {field} {value!r}: not a git branch or tag name")
    return value


def validate_repo_path(value: str) -> str:
    """A directory inside the repository: relative, no ``..``; returned normalised."""
    parts = [p for p in value.strip().split("/") if p not in ("", ".")]
    if (
        value.startswith("/")
        or ".." in parts
        or _PATH_FORBIDDEN.search(value)
        or any(p.startswith("-") for p in parts)
    ):
        raise _invalid(
            "paths", value, f"invalid path {value!r}: want a directory relative to the repo root"
        )
    return "/".join(parts) or "."


class _Model(BaseModel):
    # Inputs stay out of validation errors: a URL or secret must not echo into a reply.
    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="ignore", hide_input_in_errors=True
    )


class GitRepoSpec(_Model):
    """A git repository whose commits become bundles (Fleet's ``GitRepo.spec``).

    Neither ``branch`` nor ``revision`` follows the remote's default branch
    (its ``HEAD``). ``revision`` is a tag or a full commit ID. ``paths`` are
    the directories bundles are read from (none: the whole repository).
    """

    name: str
    repo: str
    branch: str = ""
    revision: str = ""
    paths: tuple[str, ...] = ()
    polling_interval: float = Field(default=DEFAULT_INTERVAL, alias="pollingInterval")
    targets: tuple[BundleTarget, ...] = ()
    auth_secret: str = Field(default="", alias="clientSecretName")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return validate_bundle_name(value)

    @field_validator("repo")
    @classmethod
    def _valid_repo(cls, value: str) -> str:
        return validate_repo_url(value)

    @field_validator("branch")
    @classmethod
    def _valid_branch(cls, value: str) -> str:
        return validate_ref_name(value, field="branch") if value else value

    @field_validator("revision")
    @classmethod
    def _valid_revision(cls, value: str) -> str:
        if not value or is_commit(value.lower()):
            return value.lower()
        return validate_ref_name(value, field="revision")

    @field_validator("paths")
    @classmethod
    def _valid_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(validate_repo_path(p) for p in value))

    @field_validator("polling_interval")
    @classmethod
    def _valid_interval(cls, value: float) -> float:
        if not value >= MIN_INTERVAL:
            raise ValueError(f"polling interval must be at least {MIN_INTERVAL:g} s, got {value}")
        return value

    @field_validator("auth_secret")
    @classmethod
    def _valid_secret(cls, value: str) -> str:
        return validate_secret_name(value) if value else value

    @model_validator(mode="after")
    def _branch_or_revision(self) -> Self:
        if self.branch and self.revision:
            raise ValueError("give a branch to follow or a revision to pin, not both")
        return self

    @property
    def ref_text(self) -> str:
        """What is followed, for people: a branch, a pinned revision, or the default branch."""
        if self.revision:
            return f"revision {self.revision}"
        return f"branch {self.branch}" if self.branch else "default branch (HEAD)"


class GitRepoStatus(_Model):
    """What the control plane saw and did; written only by the leader replica.

    ``commit`` is the last commit the remote showed; ``deployed_commit`` the
    one whose bundles are deployed. A commit that could not be turned into
    bundles leaves the deployed version alone and sets ``error`` (naming the
    file and cause) and ``error_commit``; a repository that could not be
    reached sets ``error`` with an empty ``error_commit``.
    """

    commit: str = ""
    deployed_commit: str = ""
    deployed_generation: int = 0
    observed_generation: int = 0
    last_poll_at: float | None = None
    deployed_at: float | None = None
    bundles: tuple[str, ...] = ()
    # Bundles being applied right now: ours even if the leader dies half-way.
    applying: tuple[str, ...] = ()
    error: str = ""
    error_commit: str = ""
    error_generation: int = 0
    warnings: tuple[str, ...] = ()


def validate_secret_name(name: str) -> str:
    try:
        return validate_bundle_name(name)
    except InvalidNameError:
        raise _invalid(
            "auth_secret",
            name,
            f"invalid secret name {name!r}: want 1-63 lowercase letters, digits or '-'",
        ) from None


class GitCredentials(_Model):
    """HTTPS basic auth (``username``/``password``) or an SSH private key.

    The fields holding secrets are left out of ``repr`` and (as every input
    here) of validation errors, so neither a log line nor an error reply can
    carry them.
    """

    username: str = ""
    password: str = Field(default="", repr=False)
    ssh_private_key: str = Field(default="", repr=False)
    known_hosts: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.ssh_private_key and (self.username or self.password):
            raise ValueError("a git secret holds a username/password or an SSH key, not both")
        if not self.ssh_private_key and not self.password:
            raise ValueError("a git secret needs a password (or token) or an SSH key")
        return self

    @property
    def kind(self) -> str:
        return "ssh" if self.ssh_private_key else "basic-auth"
