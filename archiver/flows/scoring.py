"""Anomaly scoring in a second process, while the run writes its next batch.

Scoring a batch's newly finished jobs costs about as much CPU as parsing and writing them
(flows.anomalies), and it ran in the batch's own transaction: a long ingest or first sync
kept one core busy and left the other to the database, or idle. From the batch that brings
its jobs to `SyncOptions.scoring_worker_after`, a run hands the scoring to a `ScoringWorker`:
a process of its own (a new interpreter: it shares no connection, lock or thread with the run)
with its own read-only connection to the archive and its own `Scorer`. The run sends each
batch's written runs once their transaction committed; the worker reads their packages'
history, scores them and sends the verdicts back; the run stores them with its next batch.

Crash safety stays what it was: the jobs a batch finished are listed in unscored_jobs in the
batch's own transaction and taken off in the transaction that stores their verdicts, so a run
killed in between, or a worker that fails, leaves them listed, and the end of this run or the
next one scores them in the run's own process (`anomalies.score_unscored`). Every wait for the
worker ends at the run's deadline and at SIGTERM (the stop event); the worker ends when the
run ends, and by itself when the run's process is gone.

A verdict still reads the history as the archive holds it when it is computed: a batch's
baselines may include a later batch's jobs already committed (an ingest of a file not in time
order), as a re-score's would.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import Connection

from archiver import anomaly, database
from archiver.anomaly import Run
from archiver.collector import collector_eased
from archiver.errors import ConfigError
from archiver.flows.anomalies import Scored, Scorer
from archiver.store import Archive, describe_error

log = logging.getLogger(__name__)

# The worker's first lines: an isolated interpreter (-I: no PYTHON* variables, no script or
# working folder on its path) that takes the run's sys.path from its input before it imports
# anything of the archiver, so it runs the archiver the run imported (a checkout, a venv, an
# installed package) and nothing else of the run's (a script without a main guard stays unrun).
BOOTSTRAP = ("import sys; from multiprocessing.connection import Connection; "
             "inbox = Connection(int(sys.argv[1]), writable=False); sys.path[:] = inbox.recv(); "
             "from archiver.flows.scoring import main; main(inbox, int(sys.argv[2]))")
IN_FLIGHT = 8        # batches sent and not yet answered: the run waits for one before sending more
POLL_SECONDS = 0.5   # how often a wait looks at the stop event, the deadline and the worker's life
GONE = None          # what the receiver hands on once the worker's output ended
STARTUP = -1         # the number of the answer of a worker that could not start
EXIT_SECONDS = 5.0    # a worker told to end that has not ended this long after is killed
START_SECONDS = 60.0  # a worker that has answered nothing this long after its first batch is judged stuck


SETTING = "ARCHIVER_SCORING_WORKER"   # auto (the default), off, or the jobs a run scores itself first
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"


def available_cpus() -> int:
    """The CPUs this process may use: those it may run on, fewer under a CPU quota (a pod or a
    systemd service limited to one CPU sees every CPU of its machine, but gets one CPU's time)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        cpus = os.cpu_count() or 1
    quota = cpu_quota(CGROUP_ROOT, PROC_CGROUP)
    return max(1, min(cpus, int(quota))) if quota is not None else cpus


def cpu_quota(root: str, proc_cgroup: str) -> float | None:
    """CPUs' worth of time the tightest CPU quota on the way from this process's cgroup up to
    the root allows (cgroup v2 `cpu.max`, v1's CFS quota and period); None without a quota, or
    where none can be read. Every level binds: a systemd service gets its own `CPUQuota=` or its
    slice's, whichever is smaller, and a container sees its limit as its root's."""
    own_v2, own_v1 = own_cgroups(proc_cgroup)
    readings = [lambda folder=folder: read_small(f"{root}{folder}/cpu.max").split()
                for folder in lineage(own_v2)]
    readings += [lambda base=f"{root}/cpu{folder}": [read_small(f"{base}/cpu.cfs_quota_us"),
                                                     read_small(f"{base}/cpu.cfs_period_us")]
                 for folder in lineage(own_v1)]
    quotas = []
    for reading in readings:
        try:
            found = _quota(*reading()[:2])
        except (OSError, TypeError):   # no such file, or not "quota period"
            continue
        if found is not None:
            quotas.append(found)
    return min(quotas, default=None)


def lineage(path: str) -> list[str]:
    """A cgroup's path and those of its ancestors, the root's ("") last."""
    parts = [part for part in path.split("/") if part]
    return ["/" + "/".join(parts[:depth]) for depth in range(len(parts), 0, -1)] + [""]


def own_cgroups(proc_cgroup: str) -> tuple[str, str]:
    """This process's cgroup v2 path and its v1 `cpu` controller's ("" for the root)."""
    own_v2 = own_v1 = ""
    try:
        for line in read_small(proc_cgroup, 4096).splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and not controllers:
                own_v2 = path.rstrip("/")
            elif "cpu" in controllers.split(","):
                own_v1 = path.rstrip("/")
    except (OSError, ValueError):
        pass
    return own_v2, own_v1


def _quota(quota: str, period: str) -> float | None:
    try:
        allowed, per = int(quota), int(period)
    except ValueError:   # "max": no quota
        return None
    return allowed / per if allowed > 0 and per > 0 else None


def read_small(path: str, most: int = 256) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read(most).strip()


def worker_default(environ: Mapping[str, str] | None = None) -> int | None:
    """SyncOptions.scoring_worker_after: a worker takes over the scoring from the batch that
    brings a run's jobs to this many (its start, about half a second on the other core, only
    pays off on a long run); None with one CPU, where the two would only take turns.

    ARCHIVER_SCORING_WORKER overrides it: `off` keeps the scoring in the run's process (a
    container tight on memory: the worker is a second interpreter, about 70-90 MiB), a number
    of jobs sets the threshold (a worker then starts even on one CPU), `auto` is the default."""
    given = (os.environ if environ is None else environ).get(SETTING, "")
    value = given.strip().lower()
    if value in ("", "auto"):
        return 2000 if available_cpus() >= 2 else None
    if value == "off":
        return None
    if value.isascii() and value.isdigit():
        return int(value)
    raise ConfigError(f"{SETTING}={given[:40]!r} is not auto, off or a number of jobs")


class WorkerGone(Exception):
    """The worker ended, failed to start or stopped answering: the run scores on by itself."""


@dataclasses.dataclass(frozen=True)
class Task:
    number: int
    fresh: list[Run]
    finished: list[int]
    inserted: list[int]


@dataclasses.dataclass(frozen=True)
class Verdicts:
    number: int
    scored: Scored | None
    error: str | None = None   # why scoring this batch failed (describe_error: no URL, no key)
    finished: tuple[int, ...] = ()


class ScoringWorker:
    """The run's side of the worker: send batches, take answers, end it.

    The worker is a new interpreter on two pipes of its own (BOOTSTRAP; not multiprocessing's
    spawn, which imports the caller's main module again in the child: a script calling
    ingest() without a main guard would run twice). The run's batches go
    down through a thread of their own and the answers come up through another, so neither
    side ever blocks on a full pipe; the run takes the answers when it asks, each wait bounded."""

    def __init__(self, url: str, account: str | None, thresholds: anomaly.Thresholds):
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", BOOTSTRAP, str(down_r), str(up_w)],
                pass_fds=(down_r, up_w), stdin=subprocess.DEVNULL,
                start_new_session=True)   # Ctrl-C is the run's to handle: it ends the worker
        except BaseException:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise
        finally:
            if hasattr(self, "process"):
                os.close(down_r)
                os.close(up_w)
        self.inbox = Connection(up_r, writable=False)
        self.outbox = Connection(down_w, readable=False)
        self.queue: queue.Queue = queue.Queue()     # to send
        self.answers: queue.Queue = queue.Queue()   # received (GONE when the worker's output ended)
        for target, name in ((self._send_all, "sender"), (self._receive_all, "receiver")):
            threading.Thread(target=target, name=f"archiver-scoring-{name}", daemon=True).start()
        # the modules the run imported, found where it found them (BOOTSTRAP); then the URL (a
        # password in it) goes down the pipe, never on a command line
        self.queue.put(list(sys.path))
        self.queue.put((url, account, thresholds))
        self.sent = self.received = 0
        self.waiting: dict[int, list[int]] = {}   # batch number -> its finished jobs

    def _send_all(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                self.outbox.send(item)
        except OSError:   # the worker is gone: answers_ready says so
            pass
        finally:
            self.outbox.close()   # the worker reads the end of its input and ends

    def _receive_all(self) -> None:
        """Read every answer as it comes (so the worker never waits on a full pipe for the run
        to ask), until the worker's output ends."""
        try:
            while True:
                self.answers.put(self.inbox.recv())
        except (EOFError, OSError):
            self.answers.put(GONE)
        except Exception as exc:   # an answer that does not unpickle: the worker is of no more use
            self.answers.put(GONE)
            log.debug("an answer of the scoring process could not be read", exc_info=exc)

    @property
    def in_flight(self) -> int:
        return self.sent - self.received

    def send(self, fresh: Sequence[Run], finished: Sequence[int], inserted: Sequence[int]) -> None:
        if self.process.poll() is not None:
            raise WorkerGone(f"the scoring process ended (exit code {self.process.returncode})")
        self.sent += 1
        self.waiting[self.sent] = list(finished)
        self.queue.put(Task(self.sent, list(fresh), list(finished), list(inserted)))

    def answers_ready(self, wait_for: int, deadline: float | None, stop: threading.Event | None
                      ) -> Iterator[Verdicts]:
        """The answers that arrived, in the order the batches were sent, waiting until at most
        `wait_for` batches are in flight; a wait ends early (its batches left in flight) at the
        run's deadline or stop. Raises WorkerGone when the worker died or stopped answering."""
        quiet_since = time.monotonic()
        while self.in_flight:
            must_wait = self.in_flight > wait_for
            if must_wait and ((stop is not None and stop.is_set())
                              or (deadline is not None and time.monotonic() >= deadline)):
                return
            timeout = POLL_SECONDS if must_wait else 0.0
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - time.monotonic()))
            try:
                answer = self.answers.get(timeout=timeout) if timeout else self.answers.get_nowait()
            except queue.Empty:
                if not must_wait:
                    return
                if self.received == 0 and time.monotonic() - quiet_since > START_SECONDS:
                    raise WorkerGone(f"the scoring process answered nothing in {START_SECONDS:.0f} s") from None
                continue
            if answer is GONE:
                self.answers.put(GONE)   # for any later wait
                try:
                    code = self.process.wait(timeout=POLL_SECONDS * 4)
                except subprocess.TimeoutExpired:
                    code = None
                raise WorkerGone(f"the scoring process ended (exit code {code})")
            if answer.number == STARTUP:
                raise WorkerGone(f"the scoring process could not open the archive: {answer.error}")
            quiet_since = time.monotonic()
            self.received += 1
            finished = self.waiting.pop(answer.number, [])
            yield dataclasses.replace(answer, finished=tuple(finished), scored=None if answer.scored is None
                                      else dataclasses.replace(answer.scored, finished=finished))

    def close(self, hurry: bool = False) -> None:
        """End the worker: its input closed, so it ends by itself once its batch is scored (the
        run does not wait for that: a thread reaps it, and kills it if it has not ended within a
        moment); in a `hurry` (a stop or the deadline) killed at once. It holds nothing the run
        needs, and writes nothing."""
        self.queue.put(None)
        if hurry:
            self.process.kill()
            self.process.wait()
        else:
            threading.Thread(target=self._reap, name="archiver-scoring-reaper", daemon=True).start()

    def _reap(self) -> None:
        try:
            self.process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # the receiver ends with the worker's output (it holds the pipe's read end until then)


def work(inbox: Connection, outbox: Connection) -> None:
    """The worker process: score each batch it is sent with a Scorer of its own, over a
    read-only connection, until its input ends (the run closed it, or the run is gone)."""
    try:
        url, account, thresholds = inbox.recv()
    except EOFError:
        return
    try:
        archive = Archive(database.open_engine(url, create=False, read_only=True), account)
    except Exception as exc:   # said to the run (masked), not as a traceback on stderr
        outbox.send(Verdicts(STARTUP, None, describe_error(exc)))
        return
    scorer = Scorer(archive, thresholds)
    try:
        with collector_eased():   # as in the run: the kept runs are walked by every full pass
            while True:
                try:
                    task = inbox.recv()
                except EOFError:
                    return
                outbox.send(score_task(archive, scorer, task))
    except BrokenPipeError:   # the run is gone
        return
    finally:
        archive.close()


def score_task(archive: Archive, scorer: Scorer, task: Task) -> Verdicts:
    try:
        with archive.engine.connect() as conn:
            scored = scorer.score(conn, task.fresh, task.finished, task.inserted)
            conn.rollback()
        return Verdicts(task.number, dataclasses.replace(scored, finished=[]))   # the run knows them
    except Exception as exc:
        return Verdicts(task.number, None, describe_error(exc))


def main(inbox: Connection, output_fd: int) -> None:
    """The worker's entry (BOOTSTRAP): its input is open, its sys.path the run's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    work(inbox, Connection(output_fd, readable=False))
