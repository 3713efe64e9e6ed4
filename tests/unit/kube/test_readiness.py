"""Readiness of live objects, as the agent reports it per resource.

The fixtures are objects as the API server returns them (managed fields,
defaults, controller-written status), at the moments a user would look at:
mid-rollout, stuck, failed, done.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edgeagent.kube.readiness import assess, describe

pytestmark = pytest.mark.kube

Obj = dict[str, Any]

MANAGED_FIELDS = [
    {
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
        "manager": "shoal",
        "operation": "Apply",
        "time": "2024-05-02T09:14:03Z",
    }
]


def deployment(
    *,
    replicas: int | None = 3,
    generation: int = 4,
    observed: int = 4,
    total: int = 3,
    updated: int = 3,
    available: int = 3,
    progressing: Obj | None = None,
) -> Obj:
    spec: Obj = {
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
        },
        "template": {
            "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "ghcr.io/acme/shop-web:1.4.2",
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                    }
                ],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "generation": generation,
            "resourceVersion": "88121",
            "uid": "5c1d8f0e-8a43-4b0e-9d7e-0d2b1d6f3a11",
            "creationTimestamp": "2024-05-02T09:14:03Z",
            "annotations": {"deployment.kubernetes.io/revision": "4"},
            "managedFields": MANAGED_FIELDS,
        },
        "spec": spec,
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                progressing
                or {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": 'ReplicaSet "web-7d9c8b6f5" has successfully progressed.',
                },
            ],
        },
    }


DEADLINE_EXCEEDED = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "web-6f4d9c7b8" has timed out progressing.',
}


class TestDeployment:
    def test_complete_rollout_is_ready(self) -> None:
        assert assess(deployment()) is None

    def test_new_pods_not_yet_created(self) -> None:
        obj = deployment(updated=1, total=4, available=3)
        assert assess(obj) == "Deployment rollout: 1 of 3 replicas updated"

    def test_old_pods_still_terminating(self) -> None:
        obj = deployment(total=4, updated=3, available=3)
        assert assess(obj) == "Deployment rollout: waiting for 1 old replica(s) to terminate"

    def test_updated_pods_not_yet_available(self) -> None:
        obj = deployment(available=2)
        assert assess(obj) == "Deployment rollout: 2 of 3 updated replicas available"

    def test_spec_change_not_yet_seen_by_controller(self) -> None:
        # Status still describes generation 4 perfectly, but the user applied 5.
        obj = deployment(generation=5, observed=4)
        assert assess(obj) == "Deployment controller has not yet observed generation 5"

    def test_freshly_created_without_status_is_not_ready(self) -> None:
        obj = deployment(generation=1)
        del obj["status"]
        assert assess(obj) == "Deployment controller has not yet observed generation 1"

    def test_progress_deadline_exceeded_is_a_failure(self) -> None:
        obj = deployment(updated=1, total=4, progressing=DEADLINE_EXCEEDED)
        assert assess(obj) == (
            "Deployment rollout failed: progress deadline exceeded: ProgressDeadlineExceeded: "
            'ReplicaSet "web-6f4d9c7b8" has timed out progressing.'
        )

    def test_ignored_condition_is_treated_as_absent(self) -> None:
        obj = deployment(updated=1, total=4, progressing=DEADLINE_EXCEEDED)
        ignore = [{"type": "Progressing", "status": "False"}]
        assert assess(obj, ignore_conditions=ignore) == (
            "Deployment rollout: 1 of 3 replicas updated"
        )
        done = deployment(progressing=DEADLINE_EXCEEDED)
        assert assess(done, ignore_conditions=ignore) is None

    def test_ignore_entry_must_match_every_key(self) -> None:
        obj = deployment(progressing=DEADLINE_EXCEEDED)
        ignore = [{"type": "Progressing", "status": "True"}, {}]
        assert assess(obj, ignore_conditions=ignore) is not None

    def test_replicas_default_to_one(self) -> None:
        assert assess(deployment(replicas=None, total=1, updated=1, available=1)) is None
        waiting = deployment(replicas=None, total=1, updated=1, available=0)
        assert assess(waiting) == "Deployment rollout: 0 of 1 updated replicas available"

    def test_scaled_to_zero_is_ready(self) -> None:
        obj = deployment(replicas=0, total=0, updated=0, available=0)
        del obj["status"]["replicas"], obj["status"]["updatedReplicas"]
        assert assess(obj) is None

    def test_being_deleted(self) -> None:
        obj = deployment()
        obj["metadata"]["deletionTimestamp"] = "2024-05-02T10:00:00Z"
        assert assess(obj) == "Deployment is being deleted"


def statefulset(
    *,
    replicas: int = 3,
    ready: int = 3,
    updated: int = 3,
    current_revision: str = "db-5b8f7c9d4",
    update_revision: str = "db-5b8f7c9d4",
    strategy: Obj | None = None,
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "generation": 2},
        "spec": {
            "replicas": replicas,
            "serviceName": "db",
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": strategy
            or {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        },
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": replicas - updated
            if current_revision != update_revision
            else replicas,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
        },
    }


class TestStatefulSet:
    def test_all_replicas_ready_and_current(self) -> None:
        assert assess(statefulset()) is None

    def test_replicas_not_ready(self) -> None:
        assert assess(statefulset(ready=2)) == "StatefulSet: 2 of 3 replicas ready"

    def test_rolling_update_in_progress(self) -> None:
        obj = statefulset(updated=1, update_revision="db-7c6d5e4f3")
        assert assess(obj) == "StatefulSet rollout: 1 of 3 replicas updated"

    def test_revision_not_yet_current(self) -> None:
        obj = statefulset(update_revision="db-7c6d5e4f3")
        assert assess(obj) == "StatefulSet rollout: revision db-7c6d5e4f3 is not yet current"

    def test_partitioned_rollout_waits_only_for_the_partition(self) -> None:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
        canary_done = statefulset(updated=1, update_revision="db-7c6d5e4f3", strategy=strategy)
        assert assess(canary_done) is None
        canary_pending = statefulset(updated=0, update_revision="db-7c6d5e4f3", strategy=strategy)
        assert assess(canary_pending) == (
            "StatefulSet partitioned rollout: 0 of 1 replicas updated"
        )

    def test_on_delete_does_not_wait_for_revisions(self) -> None:
        obj = statefulset(updated=0, update_revision="db-7c6d5e4f3", strategy={"type": "OnDelete"})
        assert assess(obj) is None


def daemonset(*, desired: int = 3, updated: int = 3, available: int = 3) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "node-exporter", "namespace": "monitoring", "generation": 1},
        "spec": {"updateStrategy": {"type": "RollingUpdate"}},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": desired,
            "updatedNumberScheduled": updated,
            "numberAvailable": available,
            "numberReady": available,
            "numberMisscheduled": 0,
        },
    }


class TestDaemonSet:
    def test_every_node_runs_the_current_pod(self) -> None:
        assert assess(daemonset()) is None

    def test_update_in_progress(self) -> None:
        assert assess(daemonset(updated=1)) == "DaemonSet rollout: 1 of 3 pods updated"

    def test_pods_not_available(self) -> None:
        assert assess(daemonset(available=2)) == "DaemonSet rollout: 2 of 3 pods available"

    def test_controller_has_not_acted_yet(self) -> None:
        obj = daemonset()
        obj["status"] = {}
        assert assess(obj) == "DaemonSet controller has not yet observed generation 1"
        obj["status"] = {"observedGeneration": 1}
        assert assess(obj) == "DaemonSet has not been scheduled by its controller yet"


def job(*conditions: Obj) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate-db", "namespace": "shop", "generation": 1},
        "spec": {"backoffLimit": 6, "completions": 1, "parallelism": 1},
        "status": {"startTime": "2024-05-02T09:14:05Z", "conditions": list(conditions)},
    }


class TestJob:
    def test_complete(self) -> None:
        done = {"type": "Complete", "status": "True", "lastTransitionTime": "2024-05-02T09:15Z"}
        assert assess(job(done)) is None

    def test_failed_reports_the_message(self) -> None:
        failed = {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
        assert assess(job(failed)) == "Job failed: Job has reached the specified backoff limit"

    def test_running(self) -> None:
        assert assess(job()) == "Job running"


def pod(phase: str, *, conditions: list[Obj] | None = None, **status: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe-x7k2p", "namespace": "shop"},
        "spec": {"containers": [{"name": "probe", "image": "busybox:1.36"}]},
        "status": {"phase": phase, "conditions": conditions or [], **status},
    }


class TestPod:
    def test_running_and_ready(self) -> None:
        ready = [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
        assert assess(pod("Running", conditions=ready)) is None

    def test_succeeded(self) -> None:
        assert assess(pod("Succeeded")) is None

    def test_failed(self) -> None:
        obj = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
        assert assess(obj) == "Pod failed: The node was low on resource: memory."

    def test_crash_looping(self) -> None:
        statuses = [
            {
                "name": "probe",
                "ready": False,
                "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
            }
        ]
        obj = pod("Running", conditions=[{"type": "Ready", "status": "False"}])
        obj["status"]["containerStatuses"] = statuses
        assert assess(obj) == "Pod containers in CrashLoopBackOff: probe"

    def test_unschedulable(self) -> None:
        scheduled = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient memory.",
        }
        assert assess(pod("Pending", conditions=[scheduled])) == (
            "Pod is not scheduled: Unschedulable: 0/1 nodes are available: 1 Insufficient memory."
        )


def test_pvc() -> None:
    pvc: Obj = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "shop"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": "Pending"},
    }
    assert assess(pvc) == "PVC is Pending, not Bound"
    pvc["status"] = {"phase": "Bound", "capacity": {"storage": "1Gi"}}
    assert assess(pvc) is None


def service(kind: str, **status: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"type": kind, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]},
        "status": {"loadBalancer": status},
    }


def test_service() -> None:
    assert assess(service("ClusterIP")) is None
    assert assess(service("LoadBalancer")) == (
        "Service of type LoadBalancer has no ingress address yet"
    )
    assert assess(service("LoadBalancer", ingress=[{"ip": "192.168.1.240"}])) is None


def crd(*conditions: Obj) -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.acme.io", "generation": 1},
        "spec": {"group": "acme.io", "names": {"kind": "Widget", "plural": "widgets"}},
        "status": {"conditions": list(conditions)},
    }


def test_crd() -> None:
    accepted = {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"}
    established = {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
    assert assess(crd(accepted, established)) is None
    assert assess(crd(accepted)) == "CRD is not yet Established"
    conflict = {
        "type": "NamesAccepted",
        "status": "False",
        "reason": "PluralConflict",
        "message": '"widgets" is already in use',
    }
    assert assess(crd(conflict, established)) == (
        'CRD names not accepted: PluralConflict: "widgets" is already in use'
    )


def test_namespace() -> None:
    namespace: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}
    assert assess(namespace) is None
    namespace["status"] = {"phase": "Active"}
    assert assess(namespace) is None
    namespace["status"] = {"phase": "Terminating"}
    assert assess(namespace) == "Namespace is Terminating"


class TestGeneric:
    def test_objects_without_status_are_ready(self) -> None:
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config", "namespace": "shop"},
            "data": {"LOG_LEVEL": "info"},
        }
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader", "namespace": "shop"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }
        assert assess(config_map) is None
        assert assess(role) is None

    def knative_service(self, *conditions: Obj) -> Obj:
        # Kind "Service" in another group: readiness comes from its conditions,
        # not from the core Service rule.
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": "shop", "generation": 3},
            "spec": {"template": {"spec": {"containers": [{"image": "acme/hello"}]}}},
            "status": {"observedGeneration": 3, "conditions": list(conditions)},
        }

    def test_ready_condition_false(self) -> None:
        failed = {
            "type": "Ready",
            "status": "False",
            "reason": "RevisionFailed",
            "message": 'Revision "hello-00003" failed with message: image pull failed.',
        }
        assert assess(self.knative_service(failed)) == (
            'Ready is False: RevisionFailed: Revision "hello-00003" failed with message: '
            "image pull failed."
        )

    def test_ready_condition_true(self) -> None:
        ready = {"type": "Ready", "status": "True"}
        assert assess(self.knative_service(ready)) is None

    def test_available_condition_unknown(self) -> None:
        unknown = {"type": "Available", "status": "Unknown"}
        assert assess(self.knative_service(unknown)) == "Available is Unknown"

    def test_ignored_ready_condition(self) -> None:
        failed = {"type": "Ready", "status": "False", "reason": "RevisionFailed"}
        ignore = [{"type": "Ready", "reason": "RevisionFailed"}]
        assert assess(self.knative_service(failed), ignore_conditions=ignore) is None

    def test_stalled_and_reconciling_are_not_ready(self) -> None:
        ready = {"type": "Ready", "status": "True"}
        stalled = {"type": "Stalled", "status": "True", "reason": "InvalidSpec"}
        reconciling = {"type": "Reconciling", "status": "True", "message": "scaling up"}
        assert assess(self.knative_service(ready, stalled)) == "Stalled: InvalidSpec"
        assert assess(self.knative_service(ready, reconciling)) == "Reconciling: scaling up"
        idle = {"type": "Reconciling", "status": "False"}
        assert assess(self.knative_service(ready, idle)) is None

    def test_observed_generation_behind(self) -> None:
        obj = self.knative_service({"type": "Ready", "status": "True"})
        obj["status"]["observedGeneration"] = 2
        assert assess(obj) == "Service controller has not yet observed generation 3"


def test_malformed_status_is_read_as_absent() -> None:
    obj = deployment()
    obj["status"] = {"replicas": "three", "conditions": "none", "updatedReplicas": None}
    obj["metadata"]["generation"] = 1
    assert assess(obj) == "Deployment controller has not yet observed generation 1"
    obj["metadata"].pop("generation")
    assert assess(obj) == "Deployment rollout: 0 of 3 replicas updated"


def test_assess_does_not_modify_the_object() -> None:
    obj = deployment(progressing=DEADLINE_EXCEEDED)
    before = copy.deepcopy(obj)
    assess(obj, ignore_conditions=[{"type": "Progressing"}])
    assert obj == before


def test_describe() -> None:
    assert describe(deployment()) == "Deployment shop/web"
    assert describe(crd()) == "CustomResourceDefinition widgets.acme.io"
