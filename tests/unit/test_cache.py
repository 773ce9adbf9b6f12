"""The operator's cache: resourceVersion order, tombstones, and relisting a missed deletion."""

from __future__ import annotations

from typing import Any

from valet.k8s.cache import Cache, Kind


def pod(name: str, rv: int, node: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv), **extra},
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Running"},
    }


def test_an_older_event_never_undoes_a_newer_write() -> None:
    cache = Cache()
    cache.observe(Kind.POD, pod("p", 5, "n1"))
    assert cache.observe(Kind.POD, pod("p", 4, None)) is False
    assert cache.pods["ns/p"].node == "n1"


def test_a_deleted_object_does_not_come_back_from_a_late_event() -> None:
    cache = Cache()
    cache.observe(Kind.POD, pod("p", 5, "n1"))
    cache.observe(Kind.POD, pod("p", 6, "n1"), deleted=True)
    assert cache.observe(Kind.POD, pod("p", 5, "n1")) is False
    assert "ns/p" not in cache.pods


def test_relist_forgets_what_the_listing_lacks_but_keeps_what_is_newer() -> None:
    cache = Cache()
    cache.observe(Kind.POD, pod("ghost", 3, "n1", deletionTimestamp="2026-01-01T00:00:00Z"))
    cache.observe(Kind.POD, pod("fresh", 12, "n2"))  # written after the listing was taken
    cache.observe(Kind.POD, pod("kept", 4, "n3"))
    assert cache.replace(Kind.POD, [pod("kept", 4, "n3")], "10") is True
    assert sorted(cache.pods) == ["ns/fresh", "ns/kept"]


def _job(rv: int, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm", "namespace": "ns", "resourceVersion": str(rv)},
        "spec": {
            "replicas": 1,
            "template": {"spec": {"containers": [{"name": "trainer", "image": image}]}},
        },
    }


def test_a_template_only_edit_is_kept_for_the_next_pod_without_waking_policy() -> None:
    cache = Cache()
    cache.observe(Kind.JOB, _job(1, "train:1"))
    assert cache.observe(Kind.JOB, _job(2, "train:2")) is False  # nothing policy reads
    assert cache.jobs["ns/llm"].spec.template["spec"]["containers"][0]["image"] == "train:2"


def test_the_watch_echo_of_a_write_does_not_undo_what_a_later_write_did() -> None:
    """Create answers rv 5; the bind answers no pod, so the cache notes the node itself;
    the watch's ADDED at rv 5 arrives after that and must not unbind it (a second bind
    would get 409)."""
    cache = Cache()
    cache.observe(Kind.POD, pod("p", 5, None))
    cache.patch_pod("ns/p", node="n1")
    assert cache.observe(Kind.POD, pod("p", 5, None)) is False
    assert cache.pods["ns/p"].node == "n1"
    assert cache.observe(Kind.POD, pod("p", 6, "n1")) is False  # the same as noted
    assert cache.pods["ns/p"].node == "n1"


def test_a_deletion_at_the_version_a_write_returned_is_not_an_echo() -> None:
    """A delete with grace 0 answers the object at the version its DELETED event has."""
    cache = Cache()
    cache.observe(Kind.POD, pod("p", 5, "n1"))
    cache.observe(Kind.POD, pod("p", 7, "n1", deletionTimestamp="2026-01-01T00:00:00Z"))
    assert cache.observe(Kind.POD, pod("p", 7, "n1"), deleted=True) is True
    assert "ns/p" not in cache.pods


def test_a_name_reused_after_a_deletion_without_a_version_is_seen() -> None:
    """A delete answered 404 tells the cache the pod is gone but at no version. A late event
    of the old pod stays out; a new pod of the same name (a replacement worker reuses its
    rank's first free name) comes in, with every event after it."""
    cache = Cache()
    cache.observe(Kind.POD, pod("w-1-0", 5, "dead-host"))
    cache.observe(Kind.POD, {"metadata": {"namespace": "ns", "name": "w-1-0"}}, deleted=True)
    assert cache.observe(Kind.POD, pod("w-1-0", 5, "dead-host")) is False
    assert cache.observe(Kind.POD, pod("w-1-0", 40, None)) is True
    cache.observe(Kind.POD, pod("w-1-0", 41, "spare"))
    assert cache.pods["ns/w-1-0"].node == "spare"
