"""The engine under long runs: what a daemon that runs for months must not accumulate.

Real components: the real local transport and upload step, the real SQLite store, real
threads, the real inbox watcher on a real folder.
"""

import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

from caseflow.core.case_model import Case, remote_name
from caseflow.casefolder import inode_of
from caseflow.core.engine import Engine
from caseflow.transports.local import LocalTransport
from caseflow.inbox import InboxWatcher
from harness import wait_for


def open_fds(database: Path) -> tuple[int, int]:
    """(every open fd of this process, those on the database and its WAL/shm files): each
    SQLite connection holds one on the database file itself."""
    fds, on_db = 0, 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        fds += 1
        on_db += target == str(database)
    return fds, on_db


class ProgressFromThreads(LocalTransport):
    """The local transport, reporting an upload's progress the way the ssh transport does
    for large files: from the threads of a pool made for that upload (one per byte range),
    which end with it. (Over ssh those threads write to the store when an upload of a large
    file takes more than a second, as every 64 MiB file does: 200 such uploads left 306
    connections and 619 fds open; this makes every upload write from them.)"""

    def upload_dir(self, local_dir, remote_path, manifest, progress=None):
        done = super().upload_dir(local_dir, remote_path, manifest)
        total = manifest.size_bytes
        with ThreadPoolExecutor(2, thread_name_prefix="range") as pool:
            list(pool.map(lambda half: progress(total * half // 2, total), (1, 2)))
        return done


def upload_many(ws, engine, uploads: int) -> list[tuple[int, int, int]]:
    """`uploads` uploads of one large-file case through the engine's own upload step (its
    progress callback writes to the store); (fds, store connections, threads) after the
    10th and the last."""
    folder = ws.drop_case("big", files={"big.bin": os.urandom(8192), "small": "s"})
    case_id = ws.store.create_case("big", str(folder), inode_of(folder), "gpu_locked", time.time(),
                                   time.time())
    row = ws.store.get(case_id)
    remote = Path(engine.transport.path(remote_name(row)))
    figures = []
    for i in range(uploads):
        Case(row, engine).upload_case(SimpleNamespace(kwargs={}))  # as in the upload step
        assert (remote / "big.bin").stat().st_size == 8192
        shutil.rmtree(remote)  # the next upload sends everything again
        if i in (9, uploads - 1):
            figures.append((*open_fds(ws.database), threading.active_count()))
    assert engine.store.get(case_id).progress_total == 8193  # the progress did arrive
    (fds_10, conns_10, _), (fds_n, conns_n, threads) = figures
    print(f"\nafter 10 uploads: {fds_10} fds, {conns_10} store connections; after {uploads}: "
          f"{fds_n} fds, {conns_n} store connections, {threads} threads")
    return figures


def test_fds_and_store_connections_stay_flat_over_1000_uploads(ws):
    engine = Engine(ws.config(), transport=ProgressFromThreads("local", str(ws.remote)))
    engine.start(workers=False)
    try:
        (fds_10, conns_10, _), (fds_n, conns_n, _) = upload_many(ws, engine, 1000)
    finally:
        engine.shutdown()
        engine.store.close()
    assert conns_n <= conns_10 + 1 and fds_n <= fds_10 + 4


def test_the_watchers_activity_map_keeps_only_what_can_still_matter(tmp_path):
    """Activity is kept per top-level folder for the quiet period; folders that left and
    activity too old to hold up a quiet period are dropped, so the map does not grow with
    every folder the inbox ever saw."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    now = [time.time()]
    watcher = InboxWatcher(inbox, clock=lambda: now[0])
    watcher.start()
    try:
        for i in range(300):
            (inbox / f"came-and-went-{i}").mkdir()
            (inbox / f"came-and-went-{i}" / "f").write_text("x")
        for i in range(20):
            (inbox / f"stays-{i}").mkdir()
            (inbox / f"stays-{i}" / "f").write_text("x")
        wait_for(lambda: watcher.last_activity("stays-19") is not None, what="the events")
        for i in range(300):
            shutil.rmtree(inbox / f"came-and-went-{i}")
        gone = set()

        def all_gone():
            gone.update(watcher.drain()[1])
            return len(gone) >= 300
        wait_for(all_gone, what="the watcher to see 300 folders go")
        now[0] += 3600  # an hour later nothing of it can hold up a quiet period
        watcher.drain()
        left = len(watcher._activity)
    finally:
        watcher.stop()
    assert left == 0, f"{left} folders' activity kept"
