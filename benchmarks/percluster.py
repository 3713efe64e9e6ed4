"""The ablation's publisher: a per-cluster control plane, in a process of its own.

The real control plane runs as its own process during the rollout, so the
one-message-per-cluster ablation must too: publishing from the harness
process would make the publisher fight the simulated fleet for one Python
interpreter, and the ablation would look slower than the design it stands
for. This module is run as ``python -m benchmarks.percluster``; it reads one
JSON line on stdin (``url``, ``bundle``, ``deployment_id``, ``clusters``),
connects, prints ``ready``, waits for ``go`` on stdin, then publishes one
:class:`DesiredBundle` per cluster on ``shoal.v1.cluster.<id>.desired.<bundle>``
through JetStream, pipelined with ``publish_async`` (the best case for that
design), and prints the seconds the publishing took once every ack is in.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import nats

from protocol import codec, subjects
from protocol.messages import DesiredBundle

PUBLISH_TIMEOUT = 120.0
READY = "ready"
GO = "go"


async def publish_all(spec: dict[str, object]) -> None:
    nc = await nats.connect(servers=[str(spec["url"])], name="shoal-bench-percluster")
    try:
        js = nc.jetstream(timeout=PUBLISH_TIMEOUT)
        bundle = str(spec["bundle"])
        deployment = str(spec["deployment_id"])
        clusters = [str(c) for c in spec["clusters"]]  # type: ignore[attr-defined]
        print(READY, flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != GO:
            return
        started = time.perf_counter()
        for cluster in clusters:
            payload = codec.encode(
                DesiredBundle(bundle=bundle, rev=time.time_ns(), deployment_id=deployment)
            )
            await js.publish_async(
                subjects.cluster_desired(cluster, bundle), payload, wait_stall=PUBLISH_TIMEOUT
            )
        await asyncio.wait_for(js.publish_async_completed(), PUBLISH_TIMEOUT)
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    finally:
        await nc.close()


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    asyncio.run(publish_all(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
