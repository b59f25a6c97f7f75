"""Payloads through Troupe's Gearman port with Python's `gear` library (PyPI), as a user
moving from gearmand would send them: a worker on one node, a client on another.

    python3 gear_bytes.py WORKER_HOST:PORT CLIENT_HOST:PORT

Prints one line per case and, last, a JSON summary; exits 1 if any case differs.
"""
import json
import os
import sys
import threading
import time

import gear


def split(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def serve(worker):
    """Returns each job's arguments as its result, byte for byte; `fail` fails and
    `raise` throws an exception whose data is the arguments."""
    while True:
        job = worker.getJob()
        if job.name == "gear_slow":
            time.sleep(3)
            job.sendWorkComplete(b"slow")
        elif job.name == "gear_fail":
            job.sendWorkFail()
        elif job.name == "gear_raise":
            job.sendWorkException(job.arguments)
        else:
            job.sendWorkComplete(job.arguments)


def run(client, name, payload, timeout=60):
    job = gear.Job(name, payload)
    client.submitJob(job, timeout=timeout)
    end = time.time() + timeout
    while not job.complete and time.time() < end:
        time.sleep(0.01)
    return job


def main():
    worker_addr, client_addr = sys.argv[1], sys.argv[2]
    worker = gear.Worker("troupe-it-worker")
    worker.addServer(*split(worker_addr))
    worker.waitForServer()
    for f in ("gear_echo", "gear_fail", "gear_raise", "gear_slow"):
        worker.registerFunction(f)
    threading.Thread(target=serve, args=(worker,), daemon=True).start()

    client = gear.Client("troupe-it-client")
    client.addServer(*split(client_addr))
    client.waitForServer()
    time.sleep(1.0)  # the worker's functions reach the other node's board

    cases = {
        "all 256 byte values": bytes(range(256)),
        "1 MiB random": os.urandom(1 << 20),
        "JSON string": b'"quoted"',
        "integer beyond 64 bits": b"18446744073709551617",
        "1.10": b"1.10",
        "1e2": b"1e2",
        "duplicate keys": b'{"a": 1, "a": 2}',
        "empty": b"",
        "zero": b"0",
        "invalid UTF-8": b"\xff\xfe\xfd",
    }
    bad = []
    for label, payload in cases.items():
        job = run(client, "gear_echo", payload)
        got = b"".join(job.data)
        ok = job.complete and not job.failure and got == payload
        print(f"{label}: {len(payload)} bytes -> {len(got)} bytes {'ok' if ok else 'DIFFERENT'}")
        if not ok:
            bad.append(label)

    # A Troupe task gets JSON by DESIGN.md's rule, and refuses bytes that are not text.
    job = run(client, "troupe.echo", b'{"n": 1}')
    text_ok = job.complete and not job.failure and json.loads(b"".join(job.data)) == {"n": 1}
    print(f"JSON to a Troupe task: {'ok' if text_ok else 'DIFFERENT'}")
    if not text_ok:
        bad.append("JSON to a Troupe task")
    job = run(client, "troupe.echo", b"\xff\xfe")
    refused = job.complete and job.failure
    print(f"bytes to a Troupe task refused: {'ok' if refused else 'NOT REFUSED'}")
    if not refused:
        bad.append("bytes to a Troupe task")

    # WORK_FAIL reaches the client as a failure.
    job = run(client, "gear_fail", b"x")
    failed = job.complete and job.failure
    print(f"WORK_FAIL: {'ok' if failed else 'DIFFERENT'}")
    if not failed:
        bad.append("WORK_FAIL")

    # `show jobs` through gear's admin client, on the client's node, lists a job that a
    # worker on the other node holds (gear waits for the closing "." line).
    slow = gear.Job("gear_slow", b"")
    client.submitJob(slow)
    time.sleep(1.0)
    request = gear.ShowJobsAdminRequest()
    client.active_connections[0].sendAdminRequest(request, timeout=10)
    listed = slow.handle is not None and slow.handle in request.response
    print(f"show jobs lists the held job: {'ok' if listed else 'MISSING'} ({request.response!r})")
    if not listed:
        bad.append("show jobs")

    # While the worker is busy with the slow job, a job with a unique id waits: gear's
    # `show unique jobs` lists it, and `cancel job` ends it (its client sees a failure).
    waiting = gear.Job("gear_echo", b"never run", unique=b"py-unique-1")
    client.submitJob(waiting)
    request = gear.ShowUniqueJobsAdminRequest()
    client.active_connections[0].sendAdminRequest(request, timeout=10)
    listed = b"py-unique-1\n" in request.response
    print(f"show unique jobs lists the unique id: {'ok' if listed else 'MISSING'} ({request.response!r})")
    if not listed:
        bad.append("show unique jobs")
    request = gear.CancelJobAdminRequest(waiting.handle)
    client.active_connections[0].sendAdminRequest(request, timeout=10)
    end = time.time() + 10
    while not waiting.complete and time.time() < end:
        time.sleep(0.01)
    cancelled = request.response == b"OK\r\n" and waiting.complete and waiting.failure
    print(f"cancel job: {'ok' if cancelled else 'DIFFERENT'} ({request.response!r})")
    if not cancelled:
        bad.append("cancel job")

    print(json.dumps({"cases": len(cases) + 6, "different": bad}))
    client.shutdown()
    worker.shutdown()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
