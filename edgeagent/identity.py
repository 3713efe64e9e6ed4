"""Who the agent is: first registration with a token, then hello on every start.

Registration trades a token for an identity (cluster ID, secret, shard),
which is saved at once (atomically, mode 0600) so a restart never registers a
second cluster. Later starts say hello with the secret and the current labels;
if the control plane no longer knows the cluster (``not_found``) and a token
was given, the agent registers afresh. Any other refusal is an
:class:`IdentityError` whose message tells an operator what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import structlog

from edgeagent.bus import AgentBus
from edgeagent.errors import BusRejected, HelloRejected, IdentityError, RegistrationRejected
from edgeagent.store import Identity, StateStore
from protocol import subjects
from protocol.codec import decode_any, encode
from protocol.errors import DecodeError
from protocol.messages import (
    ErrorReply,
    HelloReply,
    HelloRequest,
    RegisterReply,
    RegisterRequest,
)

log = structlog.get_logger(__name__)

NOT_FOUND = "not_found"
# Refusals that retrying cannot change; any other error code (say, "internal" while
# the control plane cannot reach JetStream) is transient and retried with backoff.
FINAL_CODES = frozenset({"unauthorized", NOT_FOUND, "invalid", "bad_request"})


def _transient(reply: ErrorReply, what: str) -> BusRejected | None:
    if reply.code in FINAL_CODES:
        return None
    return BusRejected(f"{what} failed for now ({reply.code}): {reply.error}", code=reply.code)


async def register(
    bus: AgentBus,
    *,
    token: str,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    timeout: float,
) -> Identity:
    request = RegisterRequest(
        token=token, name=name, labels=dict(labels), annotations=dict(annotations)
    )
    raw = await bus.request(subjects.REGISTER, encode(request), timeout=timeout)
    reply = _decode_reply(raw, "registration")
    if isinstance(reply, ErrorReply):
        if (transient := _transient(reply, "registration")) is not None:
            raise transient
        raise RegistrationRejected(
            f"registration of cluster {name!r} refused ({reply.code}): {reply.error}",
            code=reply.code,
        )
    if not isinstance(reply, RegisterReply):
        raise RegistrationRejected(f"unexpected reply to registration: {reply.KIND!r}")
    log.info("identity.registered", cluster=reply.cluster_id, name=name, shard=reply.shard)
    return Identity(cluster_id=reply.cluster_id, secret=reply.secret, shard=reply.shard, name=name)


async def hello(
    bus: AgentBus,
    identity: Identity,
    *,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    timeout: float,
) -> Identity:
    request = HelloRequest(
        secret=identity.secret, labels=dict(labels), annotations=dict(annotations)
    )
    raw = await bus.request(subjects.hello(identity.cluster_id), encode(request), timeout=timeout)
    reply = _decode_reply(raw, "hello")
    if isinstance(reply, ErrorReply):
        if (transient := _transient(reply, "hello")) is not None:
            raise transient
        raise HelloRejected(
            f"control plane refused cluster {identity.cluster_id} ({reply.code}): {reply.error}",
            code=reply.code,
        )
    if not isinstance(reply, HelloReply):
        raise HelloRejected(f"unexpected reply to hello: {reply.KIND!r}")
    return replace(identity, name=reply.name, shard=reply.shard)


def _decode_reply(raw: bytes, what: str) -> ErrorReply | RegisterReply | HelloReply:
    try:
        reply = decode_any(raw)
    except DecodeError as exc:
        raise BusRejected(f"malformed {what} reply: {exc}") from exc
    if not isinstance(reply, ErrorReply | RegisterReply | HelloReply):
        raise BusRejected(f"unexpected {what} reply kind {reply.KIND!r}")
    return reply


async def establish(
    bus: AgentBus,
    store: StateStore,
    *,
    token: str | None,
    name: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    timeout: float,
) -> Identity:
    """The agent's identity: hello with the saved one, else (or if forgotten) register."""
    saved = store.load_identity()
    if saved is not None:
        try:
            current = await hello(
                bus, saved, labels=labels, annotations=annotations, timeout=timeout
            )
        except HelloRejected as exc:
            if exc.code != NOT_FOUND or not token:
                raise
            log.warning("identity.forgotten", cluster=saved.cluster_id)
        else:
            if current != saved:
                store.save_identity(current)
            log.info("identity.hello", cluster=current.cluster_id, shard=current.shard)
            return current
    if not token:
        raise IdentityError(
            "this agent has no saved identity (or the control plane forgot it) and no "
            "registration token was given: pass --token with a token from "
            "'shoal token create'"
        )
    identity = await register(
        bus, token=token, name=name, labels=labels, annotations=annotations, timeout=timeout
    )
    store.save_identity(identity)
    return identity
