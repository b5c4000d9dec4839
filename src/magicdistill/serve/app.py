"""The HTTP app: OpenAI's Videos API (``/v1/videos``) on warm models, ``/v1/models``, ``/health``,
``/metrics`` and the web page at ``/``.

Requests are checked before a job is queued: an unknown model, an unsupported ``size``/``seconds``, bad
extras or an upload that is too big or not an image is a 4xx with a one-line reason (OpenAI's error shape);
a full queue is a 429 with Retry-After.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request as StarletteRequest

from .jobs import Job, JobQueue, QueueFull, ShuttingDown, new_job_id
from .registry import ModelRegistry

PAGE = Path(__file__).with_name("page.html")
MAX_PIXELS = 40_000_000  # an upload's decoded size: a decompression bomb is refused before decoding
MAX_PROMPT = 4000
FORM_SLACK = 64 * 1024  # the multipart body's fields and boundaries beside the image


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None, headers: dict | None = None,
                 code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.param, self.headers, self.code = status, param, headers, code


def error_response(e: BadRequest) -> JSONResponse:
    kind = "rate_limit_error" if e.status == 429 else "invalid_request_error"
    return JSONResponse({"error": {"message": str(e), "type": kind, "param": e.param, "code": e.code}},
                        status_code=e.status, headers=e.headers)


def create_app(registry: ModelRegistry, *, queue_size: int = 8, max_upload_mb: float = 10.0,
               out_dir: str | Path | None = None, keep: int = 100) -> FastAPI:
    """The app on loaded models. ``out_dir``: where finished videos live (default: a temporary folder of the
    server's own, removed at shutdown); ``keep``: finished jobs kept (older ones and their videos are removed)."""
    own_dir = out_dir is None
    out = Path(tempfile.mkdtemp(prefix="magicdistill-serve-")) if own_dir else Path(out_dir)
    jobs = JobQueue(registry, out, max_queued=queue_size, keep=keep)
    max_upload = int(max_upload_mb * 1024 * 1024)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        jobs.shutdown()
        if own_dir:
            shutil.rmtree(out, ignore_errors=True)

    app = FastAPI(title="magicdistill", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.jobs, app.state.registry, app.state.out_dir = jobs, registry, out

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, e: BadRequest):
        return error_response(e)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text()

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(registry.pipelines), "queue_depth": jobs.metrics()["queue_depth"]}

    @app.get("/metrics")
    async def metrics():
        return jobs.metrics()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [registry.describe(n) for n in registry.pipelines]}

    @app.post("/v1/videos")
    async def create_video(request: Request):
        form = await read_form(request, max_upload)
        job = await run_in_threadpool(make_job, registry, form)  # decoding an upload must not block the loop
        try:
            jobs.submit(job)
        except QueueFull as e:
            raise BadRequest(str(e), status=429, headers={"Retry-After": str(e.retry_after)},
                             code="queue_full") from None
        except ShuttingDown as e:
            raise BadRequest(str(e), status=503, code="shutting_down") from None
        return job.to_dict()

    @app.get("/v1/videos")
    async def list_videos(limit: int = 20, after: str | None = None, order: str = "desc"):
        if order not in ("asc", "desc"):
            raise BadRequest("order must be asc or desc", param="order")
        items = jobs.list()[:: 1 if order == "desc" else -1]
        if after:
            ids = [j.id for j in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page_items = items[:max(1, min(limit, 100))]
        data = [j.to_dict() for j in page_items]
        return {"object": "list", "data": data, "has_more": len(items) > len(page_items),
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    def find(video_id: str) -> Job:
        job = jobs.get(video_id)
        if job is None:
            raise BadRequest(f"no video {video_id!r} (unknown, deleted or expired)", status=404, param="video_id",
                             code="not_found")
        return job

    @app.get("/v1/videos/{video_id}")
    async def retrieve(video_id: str):
        job = find(video_id)
        # the openai client's create_and_poll waits this long between polls (else 1 s)
        headers = {"openai-poll-after-ms": "250"} if job.status in ("queued", "in_progress") else None
        return JSONResponse(job.to_dict(), headers=headers)

    @app.get("/v1/videos/{video_id}/content")
    async def content(video_id: str, variant: str = "video"):
        job = find(video_id)
        if variant != "video":
            raise BadRequest(f"variant {variant!r} is not available: only 'video'", param="variant")
        path = job.path
        if job.status != "completed" or path is None:
            raise BadRequest(f"video {video_id} is {job.status}, not completed", status=409, code="not_ready")
        try:
            data = path.read_bytes()  # small files; read whole so a concurrent delete cannot cut a response
        except FileNotFoundError:
            raise BadRequest(f"video {video_id} was deleted", status=404, code="not_found") from None
        return Response(data, media_type="video/mp4",
                        headers={"Content-Disposition": f'attachment; filename="{video_id}.mp4"'})

    @app.delete("/v1/videos/{video_id}")
    async def delete(video_id: str):
        find(video_id)
        jobs.delete(video_id)
        return {"id": video_id, "object": "video.deleted", "deleted": True}

    return app


async def read_form(request: Request, max_upload: int) -> dict:
    """The request's fields (multipart or urlencoded), the upload as bytes; the body is read with a cap so
    an oversized upload is refused (413) without being stored."""
    limit = max_upload + FORM_SLACK
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"the request is too large: uploads are limited to {max_upload // 1024} KiB", status=413,
                         param="input_reference", code="too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the request is too large: uploads are limited to {max_upload // 1024} KiB",
                             status=413, param="input_reference", code="too_large")
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": bytes(body), "more_body": False}

    fields: dict = {}
    try:
        async with StarletteRequest(request.scope, replay).form(max_files=1, max_fields=32) as form:
            for key, value in form.multi_items():
                if hasattr(value, "read"):  # an uploaded file
                    fields[key] = await value.read()
                else:
                    fields[key] = value
    except BadRequest:
        raise
    except Exception as e:  # a malformed multipart body
        raise BadRequest(f"cannot read the form: {(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if len(fields.get("input_reference", b"") or b"") > max_upload:
        raise BadRequest(f"input_reference is too large: at most {max_upload // 1024} KiB", status=413,
                         param="input_reference", code="too_large")
    return fields


def read_image(data: bytes):
    """Validate an upload as an image -> a decoded RGB PIL image (400 with the reason otherwise)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        if im.width * im.height > MAX_PIXELS:
            raise BadRequest(f"input_reference is {im.width}x{im.height}: at most {MAX_PIXELS // 1_000_000} "
                             "megapixels", param="input_reference")
        im.load()  # decodes every byte: a truncated or corrupt file fails here
        return im.convert("RGB")
    except BadRequest:
        raise
    except Exception as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise BadRequest(f"input_reference is not a readable image ({reason})", param="input_reference") from None


def _number(fields: dict, key: str, kind, lo, hi):
    raw = fields.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    try:
        value = kind(str(raw).strip())
    except ValueError:
        raise BadRequest(f"{key} must be {'an integer' if kind is int else 'a number'}, got {raw!r}",
                         param=key) from None
    if not (lo <= value <= hi):
        raise BadRequest(f"{key} must be from {lo} to {hi}, got {value}", param=key)
    return value


def make_job(registry: ModelRegistry, fields: dict) -> Job:
    """Check a request's fields against the chosen model -> a queued Job (BadRequest naming what is wrong)."""
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt is required: describe the video", param="prompt")
    if len(prompt) > MAX_PROMPT:
        raise BadRequest(f"prompt is too long: at most {MAX_PROMPT} characters", param="prompt")
    model = fields.get("model") or None
    try:
        pipe = registry.get(model)
    except ValueError as e:
        raise BadRequest(str(e), param="model", code="model_not_found") from None
    name = model or registry.default
    info = pipe.info
    size = fields.get("size") or info.size
    if size != info.size:
        raise BadRequest(f"size {size!r} is not supported by {name}: supported: {info.size}", param="size")
    seconds_raw = fields.get("seconds")
    params: dict = {}
    if seconds_raw not in (None, ""):
        if str(seconds_raw).strip() not in registry.supported_seconds():
            raise BadRequest(f"seconds {seconds_raw!r} is not supported: supported: whole seconds from 1 to "
                             f"{registry.max_seconds} (or none: the model's {info.clip_seconds:g} s clip)",
                             param="seconds")
        params["seconds"] = int(str(seconds_raw).strip())
        seconds = str(params["seconds"])
    else:
        seconds = f"{info.clip_seconds:g}"
    steps = _number(fields, "steps", int, 1, 1000)
    guidance = _number(fields, "guidance", float, 0.0, 100.0)
    seed = _number(fields, "seed", int, 0, 2**63 - 1)
    params.update({k: v for k, v in (("steps", steps), ("guidance", guidance)) if v is not None})
    params["seed"] = seed if seed is not None else 0
    try:
        pipe.resolve(steps=steps, guidance=guidance)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    data = fields.get("input_reference")
    if isinstance(data, str) and data:
        raise BadRequest("input_reference must be an uploaded image file", param="input_reference")
    image = read_image(data) if data else None
    return Job(id=new_job_id(), model=name, prompt=prompt, params=params, image=image, seconds=seconds, size=size)
