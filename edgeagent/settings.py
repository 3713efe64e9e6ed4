"""Settings of the edge agent: every interval, timeout and backoff in one place.

Each field maps to an environment variable with the ``SHOAL_`` prefix
(``heartbeat_interval`` is ``SHOAL_HEARTBEAT_INTERVAL``) and the CLI maps its
flags onto the same names. Settings are passed explicitly to every object that
needs them, never read from a global, so a simulated fleet can run thousands
of agents with one shared, fast-ticking settings object in tests.
"""

from __future__ import annotations

from pydantic import Field

from protocol.settings import EnvSettings


class AgentSettings(EnvSettings):
    """All durations are in seconds."""

    # --- bus ---------------------------------------------------------------
    request_timeout: float = Field(
        default=5.0,
        description="Seconds to wait for a register/hello reply or a JetStream API reply.",
    )
    connect_timeout: float = Field(
        default=30.0,
        description="Seconds a first start (no saved identity) waits for the bus before "
        "failing; with a saved identity the agent waits forever while enforcing.",
    )
    reconnect_wait: float = Field(
        default=2.0,
        description="Seconds between reconnect attempts of an agent's own NATS "
        "connection; it reconnects forever.",
    )
    drain_timeout: float = Field(
        default=5.0, description="Seconds shutdown waits for NATS to drain."
    )
    snapshot_batch: int = Field(
        default=1000,
        description="Messages asked for per batch direct get when reading the full "
        "desired state; more are fetched in further batches.",
    )
    resync_interval: float = Field(
        default=300.0,
        description="Seconds between full re-reads of the desired state, a safety net "
        "against a lost live message; jittered by resync_jitter.",
    )
    resync_jitter: float = Field(
        default=0.2,
        description="Fraction of resync_interval added at random so a fleet does not "
        "re-read in lockstep.",
    )
    snapshot_recheck: float = Field(
        default=5.0,
        description="Seconds after a read of the full desired state that follows a new "
        "subscription (start, reconnect, class move) before it is read once more, "
        "doubled at random up to twice that: a message that reached the server just "
        "before the subscription, and the stream just after the first read, is found "
        "then rather than at the next resync.",
    )
    reconnect_check_interval: float = Field(
        default=1.0,
        description="Seconds between checks of a shared connection's reconnect counter "
        "(an agent's own connection also signals reconnects at once).",
    )
    identity_retry_max: float = Field(
        default=60.0,
        description="Longest pause between hello/register attempts while the control "
        "plane does not answer.",
    )

    # --- status ------------------------------------------------------------
    status_interval: float = Field(
        default=1.0,
        description="At most one status report per this many seconds: changes within "
        "it are batched into one report.",
    )
    status_settle: float = Field(
        default=0.25,
        description="Seconds a report waits after the first change (never longer than "
        "status_interval), so a burst of changes (WaitApplied, NotReady, Ready within a "
        "moment) goes out as one report rather than one per change.",
    )
    status_ack_timeout: float = Field(
        default=30.0,
        description="Seconds a status report waits for JetStream's acknowledgement before "
        "it is sent again. Long on purpose: when a whole fleet reports at once the "
        "stream acknowledges late, and resending sooner only adds to its load; a "
        "reconnect gives up on the wait at once.",
    )
    heartbeat_interval: float = Field(
        default=5.0,
        description="Seconds between heartbeats; the control plane marks a cluster "
        "Offline after several are missed.",
    )

    # --- reconciling -------------------------------------------------------
    apply_timeout: float = Field(
        default=120.0, description="Seconds an apply, remove or observe may take."
    )
    blob_timeout: float = Field(
        default=30.0, description="Seconds a resource blob download may take."
    )
    retry_initial: float = Field(
        default=1.0, description="First pause after a failed apply; doubles per failure."
    )
    retry_max: float = Field(
        default=60.0,
        description="Longest pause between retries of a failed apply or status report.",
    )
    observe_interval: float = Field(
        default=30.0,
        description="Seconds between readiness/drift checks of a Ready bundle.",
    )
    observe_interval_not_ready: float = Field(
        default=2.0,
        description="Seconds between readiness checks while a bundle is not Ready, so "
        "Ready is reported soon after it happens.",
    )

    # --- kubernetes backend ------------------------------------------------
    kube_field_manager: str = Field(
        default="shoal",
        description="Field manager name of shoal's server-side applies; fields another "
        "manager owns conflict with it unless the bundle sets force.",
    )
    kube_inventory_namespace: str = Field(
        default="shoal-system",
        description="Namespace of the inventory ConfigMaps (one per bundle, listing the "
        "objects shoal applied for it); created when first needed.",
    )
    kube_request_timeout: float = Field(
        default=30.0,
        description="Seconds one Kubernetes API request may take (connect and answer).",
    )
    kube_watch_timeout: float = Field(
        default=300.0,
        description="Seconds the API server keeps a drift watch open before the agent "
        "re-watches from the last resourceVersion (bounds a silently dead connection).",
    )
    kube_watch_retry_initial: float = Field(
        default=1.0,
        description="First pause before re-listing after a failed watch; doubles per "
        "failure up to kube_watch_retry_max.",
    )
    kube_watch_retry_max: float = Field(
        default=30.0, description="Longest pause between attempts to restart a drift watch."
    )
    kube_drift_debounce: float = Field(
        default=1.0,
        description="Seconds watch events for one bundle are gathered before the reconciler "
        "is woken to observe it, so a burst of edits costs one observation.",
    )
    kube_crd_timeout: float = Field(
        default=60.0,
        description="Seconds an apply waits for the bundle's CRDs to become Established "
        "before its custom resources are validated and applied.",
    )
    kube_concurrency: int = Field(
        default=8,
        description="Kubernetes API requests one apply or observation runs at once; small "
        "clusters have small API servers.",
    )

    # --- simulated backend -------------------------------------------------
    sim_readiness_delay: float = Field(
        default=0.2, description="Seconds after apply until simulated objects are ready."
    )
    sim_failure_rate: float = Field(
        default=0.0, description="Probability (0-1) that a simulated apply fails."
    )
    sim_drift_rate: float = Field(
        default=0.0,
        description="Probability (0-1) per observe that a simulated Ready bundle drifts.",
    )
    sim_seed: int | None = Field(
        default=None, description="Seed of the simulated backend's RNG (reproducible runs)."
    )
