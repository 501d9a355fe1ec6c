"""The distributed engine under faults: real service, real Celery workers, real brokers.

Workers run ``tests/fault_worker.py`` (``pixelmill worker`` whose render can crash, hang,
slow down and log its starts), so a test counts renders exactly and kills at the right time.

Timings these tests rely on (kombu 5.7 Redis transport, Celery 5.7):
- a message a worker holds is in the broker's ``unacked`` hash, scored with its delivery
  time; each worker sweeps it every ``unacked_restore_interval`` s (one scan per
  ``unacked_restore_throttle`` sweeps: default 10 x 10 = 100 s; the app sets the throttle to
  1 and the interval to a tenth of the visibility timeout, 1..10 s) and puts back what was
  delivered more than ``visibility_timeout`` s ago. Here: 6 s, so a dead worker's image
  comes back 6-7 s after it was delivered;
- a pool process that dies (``WorkerLostError``) gives its message back at once (acks late
  + reject on worker lost), whatever the broker;
- RabbitMQ gives a dead connection's unacknowledged messages back at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from celery_helpers import Broker, celery_env, cleanup_celery
from fault_cluster import (
    Cluster,
    assert_bucket_whole,
    assert_folder_storage_whole,
    brief,
    data_dir_leftovers,
    photos,
    send_batch,
    sha256_of,
    store_stats,
    wait_until,
)
from s3_server import S3Server
from webhook_receiver import webhook_receiver

TESTS_DIR = Path(__file__).resolve().parent
# At least the image timeout + 10 s (the settings refuse less): a redelivery never races a
# render that is still running.
VISIBILITY_TIMEOUT_S = 15.0
IMAGE_TIMEOUT_S = 5
# How long after the visibility timeout a Redis redelivery may take: one sweep (1 s here),
# the worker's poll, the render starting.
REDELIVERY_SLACK_S = 6.0

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    """Builds clusters; every process is SIGKILLed and every key and queue deleted after."""
    clusters: list[Cluster] = []
    with ExitStack() as stack:

        def make(broker: Broker, **settings: str) -> Cluster:
            env = celery_env(broker, tmp_path)
            env.update(
                PYTHONPATH=os.pathsep.join(
                    filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])
                ),
                PIXELMILL_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
                PIXELMILL_IMAGE_TIMEOUT_S=str(IMAGE_TIMEOUT_S),
                PIXELMILL_TEST_RENDER_LOG=str(tmp_path / f"renders-{len(clusters)}.log"),
            )
            env.update(settings)
            cluster = Cluster(env, tmp_path, stack)
            clusters.append(cluster)
            return cluster

        try:
            yield make
        finally:
            for cluster in clusters:
                cluster.stop_all()
                cleanup_celery(cluster.env)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("broker", "storage"), [("redis", "s3"), ("amqp", "folder")])
def test_sigkill_one_of_two_workers_mid_batch_loses_nothing(
    make_cluster: Any, request: pytest.FixtureRequest, broker: Broker, storage: str
) -> None:
    """Kill one of two workers mid-batch: counts hold at every poll, every image ends done
    once, only the killed worker's image is rendered again, storage holds nothing half-made."""
    cluster: Cluster = make_cluster(broker, PIXELMILL_TEST_RENDER_DELAY_S="0.25")
    bucket = ""
    if storage == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        bucket = s3.new_bucket()
        cluster.env.update(s3.env(bucket))
    cluster.start_service()
    victim, survivor = cluster.add_worker(), cluster.add_worker()
    images = photos(40)
    watch = send_batch(cluster.client(), images)

    watch.until(lambda s: s["completed"] >= 8)
    victim.kill()
    killed_at = time.time()
    final = watch.until_finished()

    assert final["status"] == "completed" and final["completed"] == 40, brief(final)
    assert [i["status"] for i in final["images"]] == ["done"] * 40, brief(final)
    assert {i["sha256"] for i in final["images"]} == {sha256_of(d) for d in images}
    assert store_stats(cluster.env).get("images_done") == 40
    renders = cluster.renders()
    per_sha = Counter(r.sha256 for r in renders)
    assert set(per_sha) == {sha256_of(d) for d in images}
    again = {sha for sha, n in per_sha.items() if n > 1}
    assert max(per_sha.values()) <= 2, per_sha
    first_by = {r.sha256: r.worker_pid for r in reversed(renders)}
    assert all(first_by[sha] == victim.pid for sha in again), (again, first_by)
    assert len(again) <= 1  # concurrency 1, prefetch 1: the victim held one message
    assert any(r.worker_pid == survivor.pid and r.at > killed_at for r in renders)
    if storage == "s3":
        assert_bucket_whole(request.getfixturevalue("s3_server"), bucket, set(per_sha))
        homes = [Path(cluster.env["PIXELMILL_DATA_DIR"])] + [
            w.log_path.parent for w in cluster.workers
        ]
        assert data_dir_leftovers(homes) == []
    else:
        assert_folder_storage_whole(Path(cluster.env["PIXELMILL_STORAGE"].removeprefix("file://")))


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_whole_worker_killed_its_image_is_redone_by_a_new_worker(
    make_cluster: Any, broker: Broker
) -> None:
    """SIGKILL a worker and its pool; a new worker renders the image it held: on Redis once
    the visibility timeout has run out, on RabbitMQ as soon as it is up."""
    cluster: Cluster = make_cluster(broker, PIXELMILL_TEST_RENDER_DELAY_S="1.5")
    cluster.start_service()
    first = cluster.add_worker()
    images = photos(2)
    watch = send_batch(cluster.client(), images)
    held = wait_until(cluster.renders, 30, "first render")[0]
    assert held.worker_pid == first.pid
    first.kill()
    killed_at = time.time()
    second = cluster.add_worker()
    redone = wait_until(
        lambda: [
            r for r in cluster.renders() if r.sha256 == held.sha256 and r.worker_pid == second.pid
        ],
        VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S + 30,
        "redelivery",
    )[0]
    after_delivery = redone.at - held.at
    ready_s = cluster.ready_at[second.pid] - killed_at
    print(
        f"\n{broker}: image redone {redone.at - killed_at:.1f} s after the kill, "
        f"{after_delivery:.1f} s after its first delivery (visibility timeout "
        f"{VISIBILITY_TIMEOUT_S:g} s, new worker ready {ready_s:.1f} s "
        "after the kill)"
    )
    if broker == "redis":
        assert (
            VISIBILITY_TIMEOUT_S - 0.5
            <= after_delivery
            <= VISIBILITY_TIMEOUT_S + REDELIVERY_SLACK_S
        )
    else:
        assert redone.at - killed_at <= ready_s + 3.0
    final = watch.until_finished()
    assert final["completed"] == 2 and final["failed"] == 0, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[held.sha256] == 2


def test_an_image_that_kills_its_worker_twice_fails_worker_crashed(make_cluster: Any) -> None:
    """A render that takes its pool process down runs twice, then fails ``worker_crashed``;
    the other images are done and the worker lives on to take the next batch."""
    images = photos(5)
    crasher = sha256_of(images[1])
    cluster: Cluster = make_cluster("redis", PIXELMILL_TEST_CRASH_SHAS=crasher)
    cluster.start_service()
    worker = cluster.add_worker()
    final = send_batch(cluster.client(), images).until_finished()

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[crasher]["status"] == "failed"
    assert by_sha[crasher]["error"]["code"] == "worker_crashed", by_sha[crasher]
    assert final["completed"] == 4 and final["failed"] == 1, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[crasher] == 2
    assert worker.proc.poll() is None, worker.log()
    after = send_batch(cluster.client(), photos(2)).until_finished()
    assert after["completed"] == 2, after


def test_a_hang_fails_timeout_and_the_worker_carries_on(make_cluster: Any) -> None:
    """A render that never returns fails ``timeout`` at PIXELMILL_IMAGE_TIMEOUT_S; the same
    worker renders the images behind it."""
    images = photos(4)
    hung = sha256_of(images[0])
    cluster: Cluster = make_cluster(
        "redis", PIXELMILL_IMAGE_TIMEOUT_S="2", PIXELMILL_TEST_HANG_SHAS=hung
    )
    cluster.start_service()
    worker = cluster.add_worker()
    started = time.monotonic()
    final = send_batch(cluster.client(), images).until_finished(timeout_s=30)

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[hung]["status"] == "failed"
    assert by_sha[hung]["error"]["code"] == "timeout", by_sha[hung]
    assert by_sha[hung]["renditions"] == []
    assert final["completed"] == 3 and final["failed"] == 1, brief(final)
    assert time.monotonic() - started < 20
    assert Counter(r.sha256 for r in cluster.renders())[hung] == 1
    assert worker.proc.poll() is None, worker.log()


def test_a_hang_the_soft_limit_cannot_break_fails_timeout_at_the_hard_limit(
    make_cluster: Any,
) -> None:
    """A render stuck where the soft limit's signal cannot reach (hung C code) is killed at
    the hard limit (timeout + 10 s); its image fails ``timeout``, written by the worker's
    main process, and the worker renders the next image."""
    images = photos(2)
    stuck = sha256_of(images[0])
    cluster: Cluster = make_cluster(
        "redis", PIXELMILL_IMAGE_TIMEOUT_S="1", PIXELMILL_TEST_STUCK_SHAS=stuck
    )
    cluster.start_service()
    worker = cluster.add_worker()
    final = send_batch(cluster.client(), images).until_finished(timeout_s=40)

    by_sha = {i["sha256"]: i for i in final["images"]}
    assert by_sha[stuck]["status"] == "failed", brief(final)
    assert by_sha[stuck]["error"]["code"] == "timeout", by_sha[stuck]
    assert final["completed"] == 1 and final["failed"] == 1, brief(final)
    assert Counter(r.sha256 for r in cluster.renders())[stuck] == 1
    assert worker.proc.poll() is None, worker.log()


def test_with_s3_storage_nothing_passes_through_a_shared_folder(
    make_cluster: Any, s3_server: S3Server
) -> None:
    """S3 storage, the service and each worker on their own empty data dir: the batch is
    done, every rendition and manifest is in the bucket, none in any data dir, no original
    left anywhere."""
    bucket = s3_server.new_bucket()
    cluster: Cluster = make_cluster("redis", **s3_server.env(bucket))
    cluster.start_service()
    cluster.add_worker()
    cluster.add_worker()
    images = photos(12)
    final = send_batch(cluster.client(), images).until_finished()

    assert final["completed"] == 12, brief(final)
    shas = {sha256_of(d) for d in images}
    assert_bucket_whole(s3_server, bucket, shas)
    homes = [Path(cluster.env["PIXELMILL_DATA_DIR"])] + [w.log_path.parent for w in cluster.workers]
    assert len(set(homes)) == 3
    assert data_dir_leftovers(homes) == []
    served = cluster.client().get(final["images"][0]["renditions"][0]["path"])
    assert served.status_code == 200 and served.content


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_service_restarted_mid_batch_loses_nothing(make_cluster: Any, stop: str) -> None:
    """Stop the service while workers render: they carry on; the restarted service reports
    the batch completed with exact counts and sends its webhook exactly once."""
    cluster: Cluster = make_cluster("redis", PIXELMILL_TEST_RENDER_DELAY_S="0.3")
    service = cluster.start_service()
    cluster.add_worker()
    cluster.add_worker()
    images = photos(20)
    with webhook_receiver() as receiver:
        watch = send_batch(cluster.client(), images, callback_url=receiver.url)
        watch.until(lambda s: s["completed"] >= 4)
        if stop == "sigterm":
            # After a graceful shutdown uvicorn re-raises the signal it caught.
            assert service.terminate() in (0, -signal.SIGTERM), service.log()
        else:
            service.kill()
        stopped_at = time.time()
        wait_until(
            lambda: sum(r.at > stopped_at for r in cluster.renders()) >= 3,
            30,
            "workers rendering while the service is down",
        )
        cluster.start_service()
        watch.client = cluster.client()
        final = watch.until_finished()
        unfinished = [(i["filename"], i["error"]) for i in final["images"] if i["status"] != "done"]
        assert final["status"] == "completed" and unfinished == [], unfinished
        assert [i["status"] for i in final["images"]] == ["done"] * 20
        calls = receiver.wait_for(1)
        time.sleep(1.5)  # a second delivery would come within the watcher's next rounds
        bodies = [json.loads(c.body) for c in receiver.calls]
        assert [b["batch_id"] for b in bodies] == [watch.batch_id], bodies
        assert bodies[0]["completed"] == 20 and bodies[0]["pending"] == 0, bodies[0]
        assert calls
    per_sha = Counter(r.sha256 for r in cluster.renders())
    assert set(per_sha) == {sha256_of(d) for d in images}
    assert max(per_sha.values()) == 1, per_sha
    assert store_stats(cluster.env).get("images_done") == 20


def test_a_service_starting_leaves_the_temp_files_of_rendering_workers_alone(
    make_cluster: Any,
) -> None:
    """A second service starting (or the first restarting) on a shared storage folder while
    a worker writes renditions: the worker's temp files are not swept from under it, and
    the image is done."""
    images = photos(1)
    slow = sha256_of(images[0])
    cluster: Cluster = make_cluster(
        "redis", PIXELMILL_TEST_SLOW_WRITE_SHAS=slow, PIXELMILL_TEST_WRITE_DELAY_S="0.6"
    )
    cluster.start_service()
    cluster.add_worker()
    watch = send_batch(cluster.client(), images)
    folder = Path(cluster.env["PIXELMILL_STORAGE"].removeprefix("file://")) / "renditions"
    wait_until(lambda: list(folder.rglob(".pixelmill-tmp-*")), 30, "a temp file being written")
    cluster.start_service()  # start-up sweeps temp files "a crash left behind"
    final = watch.until_finished()
    assert final["images"][0]["status"] == "done", final["images"][0]["error"]
