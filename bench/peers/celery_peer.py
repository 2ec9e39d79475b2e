"""s7_peers' Celery run (Celery 5.2 from Debian's python3-celery), driven by
bench/scenarios/s7_peers.ts.

Setup as Celery's "Optimizing" guide advises for many short tasks
(https://docs.celeryq.dev/en/stable/userguide/optimizing.html): the prefork
pool with one process per core, a larger prefetch multiplier (short tasks),
and no gossip, mingle or heartbeat events. The durable record is the result
backend (Redis): the drain ends when every task's result is stored. It is
timed from the first result stored: Celery has no paused queue to resume,
and its worker takes seconds to start.

  python3 celery_peer.py run     (env: BENCH_REDIS_URL, PEER_QUEUE, PEER_JOBS, PEER_CONCURRENCY)
  celery -A celery_peer worker   (started by `run`)
"""
import json, os, subprocess, sys, time

from celery import Celery

REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
QUEUE = os.environ.get("PEER_QUEUE", "bench-celery")

app = Celery("celery_peer", broker=REDIS, backend=REDIS)
app.conf.update(
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=16,
    result_expires=600,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop")
def noop():
    return None


def cpu_ms():
    t = os.times()
    return (t.user + t.system) * 1000


def run():
    jobs = int(os.environ["PEER_JOBS"])
    procs = int(os.environ.get("PEER_CONCURRENCY", "2"))
    t0, c0 = time.perf_counter(), cpu_ms()
    ids = [noop.delay().id for _ in range(jobs)]
    enqueue_ms = (time.perf_counter() - t0) * 1000
    enqueue_cpu = cpu_ms() - c0

    client = app.backend.client
    keys = [app.backend.get_key_for_task(i) for i in ids]
    here = os.path.dirname(os.path.abspath(__file__))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "celery_peer", "worker", "--pool", "prefork", "-c", str(procs), "-Q", QUEUE,
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    # Celery has no paused queue to resume, and a worker takes seconds to
    # start: the drain is timed from the first result stored.
    t1 = None
    done = 0
    try:
        while done < jobs:
            if worker.poll() is not None:
                raise SystemExit("celery worker exited: " + worker.stderr.read().decode()[-2000:])
            done = 0
            for at in range(0, jobs, 2000):
                pipe = client.pipeline(transaction=False)
                for k in keys[at:at + 2000]:
                    pipe.exists(k)
                done += sum(pipe.execute())
            if t1 is None and done > 0:
                t1 = time.perf_counter()
            if done < jobs:
                time.sleep(0.05)
        drain_ms = (time.perf_counter() - t1) * 1000
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
        client.delete(*keys) if keys else None
        # Kombu's binding of the run's exchange (named after its queue) outlives the run otherwise.
        client.delete("_kombu.binding." + QUEUE, QUEUE)
    print(json.dumps({"enqueue_ms": enqueue_ms, "drain_ms": drain_ms, "cpu_ms": {"enqueue": enqueue_cpu}}), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["run"]:
    run()
