"""A bounded queue of video jobs run one at a time by one worker thread on the warm models.

Job life: queued -> in_progress -> completed | failed (OpenAI's Videos API statuses). A job's mp4 is
written atomically into the server's own output folder under a name made from its random id, so a
reader never sees a half-written file and no path ever comes from a client. Deleting a queued job
removes it; deleting a running one stops it at its next sampling step. On shutdown every queued job
is failed with code "cancelled" and the running one is stopped; its output is never half written.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..api import Cancelled
from .registry import ModelRegistry

log = logging.getLogger("magicdistill.serve")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the job queue is full: retry in {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    pass


@dataclass
class Job:
    id: str
    model: str
    prompt: str
    params: dict  # steps, guidance, seed, frames/seconds: passed to Pipeline.__call__
    image: object | None  # a validated PIL image, or None for the prior
    seconds: str
    size: str
    created_at: float = field(default_factory=time.time)
    status: str = "queued"
    progress: int = 0
    started_at: float | None = None
    completed_at: float | None = None
    error: dict | None = None
    path: Path | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    settings: dict | None = None

    def to_dict(self) -> dict:
        """The OpenAI Videos API video object (+ ``settings``, the sampler settings the job ran with)."""
        return {"id": self.id, "object": "video", "model": self.model, "status": self.status,
                "progress": self.progress, "created_at": int(self.created_at),
                "completed_at": int(self.completed_at) if self.completed_at else None, "expires_at": None,
                "prompt": self.prompt, "seconds": self.seconds, "size": self.size, "error": self.error,
                "remixed_from_video_id": None, "settings": self.settings}


class JobQueue:
    """``submit`` (429-style QueueFull when ``max_queued`` jobs wait), ``get``, ``list``, ``delete``, ``metrics``."""

    def __init__(self, registry: ModelRegistry, out_dir: Path, *, max_queued: int = 8, keep: int = 100):
        self.registry, self.out_dir, self.keep = registry, Path(out_dir), keep
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queued)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self._latencies: list[float] = []  # created -> completed, seconds, of completed jobs
        self._thread = threading.Thread(target=self._work, name="magicdistill-worker", daemon=True)
        self._thread.start()

    # --- client side ------------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if self._stopping.is_set():
            raise ShuttingDown("the server is shutting down: retry against another server")
        with self._lock:
            self._jobs[job.id] = job
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:
                del self._jobs[job.id]
            raise QueueFull(self.retry_after()) from None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def delete(self, job_id: str) -> bool:
        """Forget a job (stopping it if it runs) and remove its video. False: no such job."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        job.cancel.set()  # a queued job is skipped by the worker, a running one stops at its next step
        self._remove_file(job)
        return True

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean job time (10 s before any is known)."""
        mean = self.mean_latency() or 10.0
        return max(1, int(mean + 0.999))

    def mean_latency(self) -> float | None:
        with self._lock:
            return sum(self._latencies) / len(self._latencies) if self._latencies else None

    def metrics(self) -> dict:
        with self._lock:
            running = sum(j.status == "in_progress" for j in self._jobs.values())
            lat = list(self._latencies)
            counts = dict(self._counts)
        return {"queue_depth": self._queue.qsize(), "queue_capacity": self._queue.maxsize, "in_progress": running,
                "jobs_completed": counts["completed"], "jobs_failed": counts["failed"],
                "jobs_cancelled": counts["cancelled"], "mean_latency_s": sum(lat) / len(lat) if lat else None,
                "models": list(self.registry.pipelines)}

    # --- worker side ------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stopping.is_set():
                if job is not None:
                    self._cancel_queued(job)
                if job is None:
                    return
                continue
            if job.cancel.is_set():  # deleted while queued
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        job.status, job.started_at = "in_progress", time.time()

        def progress(done: int, total: int) -> None:
            if job.cancel.is_set() or self._stopping.is_set():
                raise Cancelled()
            job.progress = min(99, int(100 * done / total))

        try:
            pipe = self.registry.get(job.model)
            video = pipe(job.image, prompt=job.prompt, progress=progress, **job.params)
            job.settings = {**video.settings.__dict__, "seed": video.seed, "frames": len(video.frames),
                            "fps": video.fps}
            path = self.out_dir / f"{job.id}.mp4"
            video.save(path)  # atomic
            if job.cancel.is_set():  # deleted during the write: do not keep the file
                path.unlink(missing_ok=True)
                return
            job.path = path
            job.status, job.progress, job.completed_at = "completed", 100, time.time()
            with self._lock:
                self._counts["completed"] += 1
                self._latencies.append(job.completed_at - job.created_at)
        except Cancelled:
            job.status, job.completed_at = "failed", time.time()
            job.error = {"code": "cancelled", "message": "the job was cancelled"}
            with self._lock:
                self._counts["cancelled"] += 1
        except Exception as e:  # a failed job reports one line; the server keeps serving
            msg = (str(e).splitlines() or [type(e).__name__])[0]
            job.status, job.completed_at = "failed", time.time()
            job.error = {"code": "invalid_request" if isinstance(e, ValueError) else "generation_failed",
                         "message": msg}
            with self._lock:
                self._counts["failed"] += 1
            if not isinstance(e, ValueError):
                log.exception("job %s failed", job.id)
        finally:
            job.image = None  # the upload is no longer needed
            self._evict()

    def _cancel_queued(self, job: Job) -> None:
        job.status, job.completed_at, job.image = "failed", time.time(), None
        job.error = {"code": "cancelled", "message": "the server shut down before the job ran"}
        with self._lock:
            self._counts["cancelled"] += 1

    def _evict(self) -> None:
        """Keep at most ``keep`` finished jobs (and their files): the oldest go first."""
        with self._lock:
            done = sorted((j for j in self._jobs.values() if j.status in ("completed", "failed")),
                          key=lambda j: j.created_at)
            old = done[:max(0, len(done) - self.keep)]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            self._remove_file(j)

    @staticmethod
    def _remove_file(job: Job) -> None:
        if job.path is not None:
            job.path.unlink(missing_ok=True)
            job.path = None

    def shutdown(self, timeout: float = 30.0) -> list[str]:
        """Stop: fail every queued job as cancelled, stop the running one at its next step, wait for the
        worker. -> the ids of the jobs cancelled."""
        self._stopping.set()
        with self._lock:
            running = [j for j in self._jobs.values() if j.status == "in_progress"]
        cancelled = []
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None and not job.cancel.is_set():
                self._cancel_queued(job)
                cancelled.append(job.id)
        cancelled += [j.id for j in running]
        self._queue.put(None)
        self._thread.join(timeout)
        if cancelled:
            log.warning("shutdown: %d job(s) cancelled: %s", len(cancelled), ", ".join(cancelled))
        return cancelled


def new_job_id() -> str:
    """OpenAI-style "video_" + 32 random hex digits (unguessable: ids are the only handle on a video)."""
    return "video_" + secrets.token_hex(16)
