"""An Ollama test double: a real HTTP server that speaks Ollama's wire protocol.

It runs aiohttp.web on its own asyncio loop in a daemon thread, so sync tests, async tests
(on any loop) and separate server processes (Daphne) all reach it over real HTTP at `.url`.
Everything it answers follows /work/shared/ollama-api.md: NDJSON streams, nanosecond timings
that match what really happened, Ollama's status codes and `{"error": ...}` bodies, the
parallel-slot queue with its 503, and the hang-up behaviour (a generation stops as soon as
the client closes the connection).

Tests drive it through the thread-safe `OllamaDouble` object::

    double.script(reply="Hello world", token_delay=0.01)     # the next generation
    double.script(error_after=2, model="llama3.2:3b")        # mid-stream error line
    double.configure(num_parallel=2, max_queue=4)            # persistent settings
    ...
    assert double.last_request("/api/chat").body["options"]["temperature"] == 0.2
    assert double.wait_until(lambda: double.last_generation.client_disconnected)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import UnionType
from typing import Any

from aiohttp import web

OLLAMA_VERSION = "0.12.6"
NDJSON = "application/x-ndjson"
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"
DEFAULT_STREAM_ERROR = "an error was encountered while running the model: unexpected EOF"
DEFAULT_STATUS_ERRORS = {
    400: "invalid request",
    404: None,  # Ollama's model-not-found message for the requested model
    500: "llama runner process has terminated: exit status 2",
    503: BUSY_MESSAGE,
}
GENERATION_PATHS = ("/api/chat", "/api/generate")
#: The context length a request gets without `num_ctx` (Ollama's OLLAMA_CONTEXT_LENGTH default).
DEFAULT_NUM_CTX = 4096
FOREVER = timedelta(days=365 * 290)

# A word-ish tokenizer that keeps whitespace: "".join(tokenize(s)) == s for every s.
TOKEN_RE = re.compile(r"\s*[\w']+|\s*[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    """Split text into word-ish tokens (leading whitespace kept) whose concatenation is text."""
    return TOKEN_RE.findall(text)


def embedding_of(model: str, text: str, length: int = 3072, dimensions: int | None = None) -> list:
    """The vector the double answers for `text` with `model`: deterministic, of unit length
    like Ollama's (cut to `dimensions` and normalised again when that is shorter)."""
    seed = int.from_bytes(hashlib.sha256(f"{full_name(model)}\0{text}".encode()).digest()[:8])
    rng = random.Random(seed)  # test vectors, not secrets
    vector = [rng.gauss(0.0, 1.0) for _ in range(length)]
    if dimensions and 0 < dimensions < length:
        vector = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def now_rfc3339(at: datetime | None = None) -> str:
    """RFC 3339 with fractional seconds in UTC, like `2023-08-04T19:22:45.499127Z`."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: Any) -> str:
    """Compact JSON like Go's encoder."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# The model catalogue
# --------------------------------------------------------------------------------------------

DEFAULT_TEMPLATE = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def full_name(name: str) -> str:
    """`llama3.2` -> `llama3.2:latest` (Ollama's default tag)."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def registry_name(name: str) -> str:
    """The fully qualified name Ollama puts in capability errors."""
    name = full_name(name)
    slashes = name.count("/")
    if slashes == 0:
        return f"registry.ollama.ai/library/{name}"
    if slashes == 1:
        return f"registry.ollama.ai/{name}"
    return name


@dataclass(frozen=True)
class ModelSpec:
    """One model the double knows about (installed or pullable)."""

    name: str
    family: str
    parameter_size: str
    quantization_level: str
    size: int
    context_length: int
    parameter_count: int
    capabilities: tuple[str, ...] = ("completion",)
    families: tuple[str, ...] | None = None
    format: str = "gguf"
    template: str = DEFAULT_TEMPLATE
    stop: tuple[str, ...] = ("<|eot_id|>",)
    modified_at: str = "2025-09-30T10:15:42.123456Z"
    embedding_length: int = 3072  # the size of the vectors /api/embed answers

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", full_name(self.name))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()

    def details(self) -> dict:
        return {
            "parent_model": "",
            "format": self.format,
            "family": self.family,
            "families": list(self.families) if self.families is not None else None,
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tag_entry(self) -> dict:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def layers(self) -> list[tuple[str, int]]:
        """(digest, size) of the blobs a pull downloads: weights, template, license, params."""
        out = []
        for i, part in enumerate(("model", "template", "license", "params")):
            digest = "sha256:" + hashlib.sha256(f"{self.name}/{part}".encode()).hexdigest()
            out.append((digest, max(self.size - 1536, 1) if i == 0 else 512))
        return out

    def show(self) -> dict:
        arch = self.family
        blob = self.layers()[0][0].replace(":", "-")
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            f"# To build a new Modelfile based on this, replace FROM with:\n# FROM {self.name}\n\n"
            f"FROM /root/.ollama/models/blobs/{blob}\n"
            f'TEMPLATE """{self.template}"""\n'
            + "".join(f"PARAMETER stop {s}\n" for s in self.stop)
        )
        return {
            "license": "",
            "modelfile": modelfile,
            "parameters": "\n".join(f'stop                           "{s}"' for s in self.stop),
            "template": self.template,
            "details": self.details(),
            "model_info": {
                "general.architecture": arch,
                "general.basename": self.name.split(":")[0],
                "general.file_type": 15,
                "general.parameter_count": self.parameter_count,
                "general.quantization_version": 2,
                f"{arch}.block_count": 28,
                f"{arch}.context_length": self.context_length,
                f"{arch}.embedding_length": self.embedding_length,
            },
            "capabilities": list(self.capabilities),
            "modified_at": self.modified_at,
        }


def default_models() -> list[ModelSpec]:
    """The models installed in a fresh double."""
    return [
        ModelSpec(
            name="llama3.2:3b",
            family="llama",
            families=("llama",),
            parameter_size="3.2B",
            quantization_level="Q4_K_M",
            size=2019393189,
            context_length=131072,
            parameter_count=3212749888,
            capabilities=("completion", "tools"),
        ),
        ModelSpec(
            name="qwen2.5:0.5b",
            family="qwen2",
            families=("qwen2",),
            parameter_size="494.03M",
            quantization_level="Q4_K_M",
            size=397821319,
            context_length=32768,
            parameter_count=494032768,
            capabilities=("completion", "tools"),
            stop=("<|im_start|>", "<|im_end|>"),
        ),
        ModelSpec(
            name="llava:7b",
            family="llama",
            families=("llama", "clip"),
            parameter_size="7B",
            quantization_level="Q4_0",
            size=4733363377,
            context_length=32768,
            parameter_count=7241732096,
            capabilities=("completion", "vision"),
            stop=("[INST]", "[/INST]"),
        ),
        ModelSpec(
            name="qwen3:0.6b",
            family="qwen3",
            families=("qwen3",),
            parameter_size="751.63M",
            quantization_level="Q4_K_M",
            size=522653767,
            context_length=40960,
            parameter_count=751632384,
            capabilities=("completion", "tools", "thinking"),
            stop=("<|im_start|>", "<|im_end|>"),
        ),
    ]


def pullable_models() -> list[ModelSpec]:
    """Models the double's pretend registry offers that are not installed at first."""
    return [
        ModelSpec(
            name="gemma3:1b",
            family="gemma3",
            families=("gemma3",),
            parameter_size="999.89M",
            quantization_level="Q4_K_M",
            size=815319791,
            context_length=32768,
            parameter_count=999885952,
            stop=("<end_of_turn>",),
        ),
        ModelSpec(
            name="smollm2:135m",
            family="llama",
            families=("llama",),
            parameter_size="134.52M",
            quantization_level="F16",
            size=270898672,
            context_length=8192,
            parameter_count=134515008,
            stop=("<|im_end|>",),
        ),
    ]


# --------------------------------------------------------------------------------------------
# Scripting and records
# --------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """Persistent behaviour (until `reset()`); scripts override it per request."""

    reply: str | None = None  # None: a deterministic reply derived from the last user message
    token_delay: float = 0.0  # seconds before each token
    prompt_delay: float = 0.0  # seconds of "prompt evaluation" before the first token
    load_duration: float = 0.0  # seconds a cold model takes to load
    num_parallel: int = 1  # generations served at once per model (OLLAMA_NUM_PARALLEL)
    max_queue: int = 512  # waiting requests beyond which 503 (OLLAMA_MAX_QUEUE)
    max_loaded_models: int = 3  # OLLAMA_MAX_LOADED_MODELS
    pull_delay: float = 0.0  # seconds between pull progress lines
    keep_alive: float = 300.0  # default keep_alive, seconds


@dataclass
class Script:
    """How the double answers the next matching generation request(s)."""

    reply: str | None = None
    tokens: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict] | None = None
    token_delay: float | None = None
    prompt_delay: float | None = None
    load_duration: float | None = None
    error_after: int | None = None
    error_message: str = DEFAULT_STREAM_ERROR
    drop_after: int | None = None
    hold_after: int | None = None
    status: int | None = None
    status_error: str | None = None
    model: str | None = None
    path: str | None = None
    times: int | None = 1
    used: int = 0
    released: bool = False  # release() was called: holds no more
    holding: list[asyncio.Event] = field(default_factory=list, repr=False)  # double's loop

    def matches(self, path: str, model: str | None) -> bool:
        if self.path is None:
            if path not in GENERATION_PATHS:
                return False
        elif self.path != path:
            return False
        return self.model is None or (model is not None and full_name(model) == self.model)


@dataclass
class RecordedRequest:
    """One HTTP request the double received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    raw_body: bytes
    body: Any  # parsed JSON, or None when absent or invalid
    time: float  # time.time() on arrival

    @property
    def json(self) -> Any:
        return self.body


@dataclass
class Generation:
    """One chat/generate request that got past validation, and what became of it."""

    id: int
    path: str
    model: str
    stream: bool
    request: RecordedRequest
    queued: bool = False  # had to wait for a slot
    status: int = 200  # 499 when the client went away while waiting
    tokens_sent: int = 0
    tokens_planned: int = 0
    content: str = ""  # the content sent so far
    done_reason: str | None = None
    completed: bool = False  # the final `done` chunk / reply was sent
    client_disconnected: bool = False  # the client hung up before the end
    dropped: bool = False  # the double aborted the connection (script drop_after)
    error: str | None = None  # mid-stream error sent (script error_after)
    held: bool = False  # paused right now by the script's hold_after, until release()
    arrived_at: float = 0.0  # time.monotonic()
    started_at: float | None = None  # got a slot
    first_token_at: float | None = None
    ended_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.ended_at is not None


@dataclass
class _Loaded:
    spec: ModelSpec
    expires_at: datetime
    last_used: float


class _Busy(Exception):
    pass


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _Slots:
    """FIFO slots of one model (asyncio side only)."""

    def __init__(self) -> None:
        self.active = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


# --------------------------------------------------------------------------------------------
# Request validation helpers (Ollama's messages)
# --------------------------------------------------------------------------------------------

INT_OPTIONS = {
    "num_keep", "seed", "num_predict", "top_k", "num_ctx", "num_batch", "num_gpu", "main_gpu",
    "num_thread", "repeat_last_n", "mirostat",
}  # fmt: skip
FLOAT_OPTIONS = {
    "temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "mirostat_tau", "mirostat_eta", "tfs_z",
}  # fmt: skip
BOOL_OPTIONS = {"numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only"}
LIST_OPTIONS = {"stop"}

_GO_TYPES = {str: "string", bool: "bool", int: "number", float: "number", list: "array"}
_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _go_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    return _GO_TYPES.get(type(value), "value")


def _check_options(options: Any) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise _BadRequest(
            f"json: cannot unmarshal {_go_type(options)} into Go struct field "
            "ChatRequest.options of type map[string]interface {}"
        )
    for key, value in options.items():
        is_num = isinstance(value, int | float) and not isinstance(value, bool)
        if key in INT_OPTIONS and not is_num:
            raise _BadRequest(f'option "{key}" must be of type integer')
        if key in FLOAT_OPTIONS and not is_num:
            raise _BadRequest(f'option "{key}" must be of type float32')
        if key in BOOL_OPTIONS and not isinstance(value, bool):
            raise _BadRequest(f'option "{key}" must be of type boolean')
        if key in LIST_OPTIONS:
            if not isinstance(value, list):
                raise _BadRequest(f'option "{key}" must be of type array')
            if not all(isinstance(v, str) for v in value):
                raise _BadRequest(f'option "{key}" must be of an array of strings')
    return options


def _parse_keep_alive(value: Any, default: float) -> float | None:
    """Seconds to keep the model loaded; math.inf for forever; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _BadRequest("json: cannot unmarshal bool into Go struct field keep_alive")
    if isinstance(value, int | float):
        return math.inf if value < 0 else float(value)
    if isinstance(value, str):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        body = text.lstrip("+-")
        if body == "0":
            return 0.0
        parts = _DURATION_RE.findall(body)
        if not body or "".join(n + u for n, u in parts) != body:
            raise _BadRequest(f'time: invalid duration "{value}"')
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts) * sign
        return math.inf if seconds < 0 else seconds
    raise _BadRequest(f"json: cannot unmarshal {_go_type(value)} into Go value of type Duration")


def _expect(
    body: dict, key: str, kind: type | UnionType | tuple[type, ...], struct: str, go_type: str
) -> Any:
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise _BadRequest(
            f"json: cannot unmarshal {_go_type(value)} into Go struct field "
            f"{struct}.{key} of type {go_type}"
        )
    return value


def _go_json_error(raw: bytes, exc: ValueError) -> str:
    """Roughly Go's encoding/json message for a syntax error."""
    pos = getattr(exc, "pos", None)
    text = raw.decode("utf-8", "replace")
    if pos is None or pos >= len(text.rstrip()):
        return "unexpected EOF"
    return f"invalid character {text[pos]!r} looking for beginning of value"


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=dumps)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status, dumps=dumps)


def _not_found(model: str) -> web.Response:
    return _json_error(404, f'model "{model}" not found, try pulling it first')


# --------------------------------------------------------------------------------------------
# The double
# --------------------------------------------------------------------------------------------


class OllamaDouble:
    """A scriptable Ollama on 127.0.0.1, served from a background thread.

    Use as a context manager, or `start()` / `stop()`. `url` is e.g. `http://127.0.0.1:40123`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        models: Iterable[ModelSpec] | None = None,
        pullable: Iterable[ModelSpec] | None = None,
        **settings: Any,
    ) -> None:
        self.host = host
        self._port = port
        self._initial_models = list(models) if models is not None else default_models()
        self._initial_pullable = list(pullable) if pullable is not None else pullable_models()
        self._initial_settings = Settings(**settings)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        # asyncio-side state (touched only on the double's loop)
        self._slots: dict[str, _Slots] = {}
        self._active: dict[int, web.Request] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None
        self._start_error: BaseException | None = None
        self._init_state()

    def _init_state(self) -> None:
        with self._lock:
            self.settings = replace(self._initial_settings)
            self._installed: dict[str, ModelSpec] = {m.name: m for m in self._initial_models}
            self._registry: dict[str, ModelSpec] = {
                m.name: m for m in [*self._initial_pullable, *self._initial_models]
            }
            self._scripts: list[Script] = []
            self._requests: list[RecordedRequest] = []
            self._generations: list[Generation] = []
            self._loaded: dict[str, _Loaded] = {}
            self._max_in_flight = self._in_flight
            self._max_queued = 0
            self._busy_rejections = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._bound_port is None:
            raise RuntimeError("the Ollama double is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._bound_port}"

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the Ollama double is not started")
        return self._bound_port

    def start(self) -> OllamaDouble:
        if self._thread is not None:
            return self
        ready = threading.Event()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="ollama-double", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Ollama double did not start within 10 s")
        if self._start_error is not None:
            self._thread = None
            raise self._start_error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = None
        self._loop = None
        self._bound_port = None

    def __enter__(self) -> OllamaDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the foreground until Ctrl-C (used by `python -m tests.ollama_double`)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._astart())
        except BaseException as exc:
            self._start_error = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._abort_active())
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _astart(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("GET", "/", self._root)
        app.router.add_route("HEAD", "/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/show", self._show)
        app.router.add_post("/api/pull", self._pull)
        app.router.add_delete("/api/delete", self._delete)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_post("/api/embeddings", self._embeddings)
        app.router.add_post("/api/create", self._create)
        app.router.add_post("/api/copy", self._copy)
        app.router.add_post("/api/push", self._push)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, backlog=4096)
        await site.start()
        self._bound_port = self._runner.addresses[0][1]

    # ---------------------------------------------------------------- scripting API (any thread)

    def script(
        self,
        *,
        reply: str | None = None,
        tokens: Sequence[str] | None = None,
        thinking: str | None = None,
        tool_calls: list[dict] | None = None,
        token_delay: float | None = None,
        prompt_delay: float | None = None,
        load_duration: float | None = None,
        error_after: int | None = None,
        error_message: str = DEFAULT_STREAM_ERROR,
        drop_after: int | None = None,
        hold_after: int | None = None,
        status: int | None = None,
        status_error: str | None = None,
        model: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> Script:
        """Queue how the next matching request is answered.

        Scripts are matched in FIFO order against each generation request (`/api/chat` and
        `/api/generate`; or exactly `path`, which may also be another endpoint for `status`),
        and against `model` when given. A script applies `times` times (None: until `reset()`).
        `tokens` wins over `reply` (which is split with `tokenize`). `error_after=N` writes an
        `{"error": error_message}` line after N tokens (status 200, no `done`); `drop_after=N`
        aborts the connection after N tokens; `hold_after=N` pauses the stream after N tokens
        until `release(script)` (a generation caught mid-reply whatever the machine's speed:
        no race against a token delay); `status` answers at once with that status and
        `{"error": status_error or Ollama's usual message}`. Delays are seconds.
        """
        new = Script(
            reply=reply,
            tokens=list(tokens) if tokens is not None else None,
            thinking=thinking,
            tool_calls=tool_calls,
            token_delay=token_delay,
            prompt_delay=prompt_delay,
            load_duration=load_duration,
            error_after=error_after,
            error_message=error_message,
            drop_after=drop_after,
            hold_after=hold_after,
            status=status,
            status_error=status_error,
            model=full_name(model) if model else None,
            path=path,
            times=times,
        )
        with self._changed:
            self._scripts.append(new)
        return new

    def release(self, script: Script) -> None:
        """Let the generations paused by `script`'s `hold_after` go on, and those that reach it
        later pass it (any thread)."""
        with self._changed:
            script.released = True
            events = list(script.holding)
        loop = self._loop
        if loop is not None:
            for event in events:
                loop.call_soon_threadsafe(event.set)

    def configure(self, **changes: Any) -> None:
        """Change persistent settings (see `Settings`) until the next `reset()`."""
        with self._changed:
            for key, value in changes.items():
                if not hasattr(self.settings, key):
                    raise TypeError(f"unknown setting {key!r}")
                setattr(self.settings, key, value)
        loop = self._loop
        if loop is not None and ("num_parallel" in changes):
            loop.call_soon_threadsafe(self._pump_all)

    def add_model(self, spec: ModelSpec, *, installed: bool = True) -> None:
        with self._changed:
            self._registry[spec.name] = spec
            if installed:
                self._installed[spec.name] = spec

    def remove_model(self, name: str) -> None:
        with self._changed:
            self._installed.pop(full_name(name), None)
            self._loaded.pop(full_name(name), None)

    def reset(self) -> None:
        """Forget scripts, records, loaded models and settings; abort streams still running."""
        loop = self._loop
        if loop is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._abort_active(), loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            self.wait_until(lambda: self._in_flight == 0, timeout=2.0)
        self._init_state()

    # ---------------------------------------------------------------- inspection API (any thread)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._requests
                if r.path == path and (method is None or r.method == method.upper())
            ]

    def last_request(self, path: str | None = None) -> RecordedRequest | None:
        with self._lock:
            for r in reversed(self._requests):
                if path is None or r.path == path:
                    return r
        return None

    @property
    def generations(self) -> list[Generation]:
        with self._lock:
            return list(self._generations)

    @property
    def last_generation(self) -> Generation | None:
        with self._lock:
            return self._generations[-1] if self._generations else None

    @property
    def in_flight(self) -> int:
        """Generations holding a slot right now."""
        return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """The most generations ever in flight at once since the last reset."""
        return self._max_in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a slot right now."""
        with self._lock:
            return sum(len(s.waiters) for s in self._slots.values())

    @property
    def max_queued(self) -> int:
        return self._max_queued

    @property
    def busy_rejections(self) -> int:
        """Requests answered 503 because the queue was full."""
        return self._busy_rejections

    @property
    def loaded_models(self) -> list[str]:
        with self._lock:
            self._expire_loaded()
            return list(self._loaded)

    @property
    def installed_models(self) -> list[str]:
        with self._lock:
            return list(self._installed)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """Block until predicate() is true (re-checked at every state change); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
        return True

    async def await_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        """`wait_until` for async tests: polls without blocking the caller's event loop."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def wait_idle(self, timeout: float = 2.0) -> bool:
        """Until every recorded generation has ended."""
        return self.wait_until(
            lambda: self._in_flight == 0 and all(g.finished for g in self._generations),
            timeout,
        )

    # ---------------------------------------------------------------- internals (double's loop)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read() if request.body_exists else b""
        body: Any = None
        if raw:
            with contextlib.suppress(ValueError):
                body = json.loads(raw)
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            body=body,
            time=time.time(),
        )
        with self._changed:
            self._requests.append(rec)
            self._changed.notify_all()
        return rec

    @staticmethod
    def _parse_body(rec: RecordedRequest, struct: str) -> dict:
        if not rec.raw_body.strip():
            raise _BadRequest("missing request body")
        if rec.body is None and rec.raw_body.strip() != b"null":
            try:
                json.loads(rec.raw_body)
            except ValueError as exc:
                raise _BadRequest(_go_json_error(rec.raw_body, exc)) from None
        if not isinstance(rec.body, dict):
            raise _BadRequest(
                f"json: cannot unmarshal {_go_type(rec.body)} into Go value of type api.{struct}"
            )
        return rec.body

    def _take_script(self, path: str, model: str | None, *, status_only: bool) -> Script | None:
        with self._lock:
            for s in self._scripts:
                if not s.matches(path, model):
                    continue
                if status_only and s.status is None:
                    return None
                s.used += 1
                if s.times is not None and s.used >= s.times:
                    self._scripts.remove(s)
                return s
        return None

    def _peek_script(self, path: str, model: str) -> Script | None:
        with self._lock:
            return next((s for s in self._scripts if s.matches(path, model)), None)

    def _status_response(self, script: Script, model: str | None) -> web.Response:
        status = script.status or 500
        message = script.status_error or DEFAULT_STATUS_ERRORS.get(status)
        if message is None:
            message = f'model "{model}" not found, try pulling it first' if model else "not found"
        return _json_error(status, message)

    def _spec(self, model: str) -> ModelSpec | None:
        with self._lock:
            return self._installed.get(full_name(model))

    def _expire_loaded(self) -> None:
        now = datetime.now(UTC)
        for name, entry in list(self._loaded.items()):
            if entry.expires_at <= now and self._slots.get(name, _Slots()).active == 0:
                del self._loaded[name]

    # ---- slots

    def _slots_for(self, name: str) -> _Slots:
        slots = self._slots.get(name)
        if slots is None:
            slots = self._slots[name] = _Slots()
        return slots

    def _try_enter(self, name: str) -> asyncio.Future[None] | None:
        """Take a slot now (None), or join the FIFO queue (a future), or raise _Busy."""
        with self._changed:
            slots = self._slots_for(name)
            if slots.active < self.settings.num_parallel and not slots.waiters:
                slots.active += 1
                return None
            waiting = sum(len(s.waiters) for s in self._slots.values())
            if waiting >= self.settings.max_queue:
                self._busy_rejections += 1
                self._changed.notify_all()
                raise _Busy
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            slots.waiters.append(fut)
            self._max_queued = max(self._max_queued, waiting + 1)
            self._changed.notify_all()
            return fut

    def _leave_queue(self, name: str, fut: asyncio.Future[None]) -> None:
        with self._changed:
            slots = self._slots_for(name)
            if fut.done() and not fut.cancelled():
                self._release(name)  # the slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    slots.waiters.remove(fut)
            self._changed.notify_all()

    def _release(self, name: str) -> None:
        with self._changed:
            self._slots_for(name).active -= 1
            self._pump(name)
            self._changed.notify_all()

    def _pump(self, name: str) -> None:
        slots = self._slots_for(name)
        while slots.waiters and slots.active < self.settings.num_parallel:
            fut = slots.waiters.popleft()
            if not fut.done():
                slots.active += 1
                fut.set_result(None)

    def _pump_all(self) -> None:
        with self._changed:
            for name in list(self._slots):
                self._pump(name)

    async def _abort_active(self) -> None:
        for request in list(self._active.values()):
            transport = request.transport
            if transport is not None:
                transport.abort()
        with self._changed:
            for slots in self._slots.values():
                for fut in slots.waiters:
                    if not fut.done():
                        fut.cancel()
        await asyncio.sleep(0)

    # ---- loading

    def _expires(self, keep_alive: float) -> datetime:
        if math.isinf(keep_alive):
            return datetime.now(UTC) + FOREVER
        return datetime.now(UTC) + timedelta(seconds=keep_alive)

    async def _ensure_loaded(self, spec: ModelSpec, load_seconds: float, keep_alive: float) -> int:
        """Load the model if cold (sleeping load_seconds); return the load time in ns."""
        lock = self._load_locks.setdefault(spec.name, asyncio.Lock())
        start = time.perf_counter_ns()
        async with lock:
            with self._lock:
                self._expire_loaded()
                cold = spec.name not in self._loaded
            if cold and load_seconds > 0:
                await asyncio.sleep(load_seconds)
            with self._changed:
                if cold:
                    self._evict_for(spec.name)
                self._loaded[spec.name] = _Loaded(spec, self._expires(keep_alive), time.monotonic())
                self._changed.notify_all()
        return time.perf_counter_ns() - start

    def _evict_for(self, name: str) -> None:
        limit = self.settings.max_loaded_models
        while len(self._loaded) >= limit > 0:
            idle = [
                (entry.last_used, n)
                for n, entry in self._loaded.items()
                if n != name and self._slots.get(n, _Slots()).active == 0
            ]
            if not idle:
                return
            del self._loaded[min(idle)[1]]

    def _unload(self, name: str) -> None:
        with self._changed:
            self._loaded.pop(name, None)
            self._changed.notify_all()

    # ---------------------------------------------------------------- handlers

    async def _root(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(text="Ollama is running", content_type="text/plain")

    async def _version(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (s := self._take_script(rec.path, None, status_only=True)) is not None:
            return self._status_response(s, None)
        return _json({"version": OLLAMA_VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (s := self._take_script(rec.path, None, status_only=True)) is not None:
            return self._status_response(s, None)
        with self._lock:
            models = [m.tag_entry() for m in self._installed.values()]
        return _json({"models": models})

    async def _ps(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (s := self._take_script(rec.path, None, status_only=True)) is not None:
            return self._status_response(s, None)
        with self._lock:
            self._expire_loaded()
            entries = sorted(self._loaded.values(), key=lambda e: -e.last_used)
            models = [
                {
                    "name": e.spec.name,
                    "model": e.spec.name,
                    "size": e.spec.size + 512 * 1024 * 1024,
                    "digest": e.spec.digest,
                    "details": e.spec.details(),
                    "expires_at": e.expires_at.isoformat().replace("+00:00", "Z"),
                    "size_vram": e.spec.size + 512 * 1024 * 1024,
                    "context_length": 4096,
                }
                for e in entries
            ]
        return _json({"models": models})

    def _model_field(self, body: dict, struct: str) -> str:
        model = _expect(body, "model", str, struct, "string") or _expect(
            body, "name", str, struct, "string"
        )
        if not model:
            raise _BadRequest("model is required")
        return model

    async def _show(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        try:
            body = self._parse_body(rec, "ShowRequest")
            model = self._model_field(body, "ShowRequest")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        spec = self._spec(model)
        if spec is None:
            return _json_error(404, f"model '{model}' not found")
        return _json(spec.show())

    async def _delete(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        try:
            body = self._parse_body(rec, "DeleteRequest")
            model = self._model_field(body, "DeleteRequest")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        with self._changed:
            spec = self._installed.pop(full_name(model), None)
            if spec is not None:
                self._loaded.pop(spec.name, None)
            self._changed.notify_all()
        if spec is None:
            return _json_error(404, f'model "{model}" not found')
        return web.Response(status=200)

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        try:
            body = self._parse_body(rec, "PullRequest")
            model = self._model_field(body, "PullRequest")
            stream = _expect(body, "stream", bool, "PullRequest", "bool")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        stream = True if stream is None else stream
        with self._lock:
            spec = self._registry.get(full_name(model))
            delay = self.settings.pull_delay
        missing = "pull model manifest: file does not exist"
        if not stream:
            if spec is None:
                return _json_error(500, missing)
            if delay:
                await asyncio.sleep(delay * 4)
            self._install(spec)
            return _json({"status": "success"})

        resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
        resp.enable_chunked_encoding()
        await resp.prepare(request)

        async def send(obj: dict) -> None:
            await resp.write((dumps(obj) + "\n").encode())
            await asyncio.sleep(delay)

        await send({"status": "pulling manifest"})
        if spec is None:
            await resp.write((dumps({"error": missing}) + "\n").encode())
            await resp.write_eof()
            return resp
        for digest, total in spec.layers():
            status = f"downloading {digest}"
            await send({"status": status, "digest": digest, "total": total})
            for fraction in (0.5, 1.0):
                await send(
                    {
                        "status": status,
                        "digest": digest,
                        "total": total,
                        "completed": int(total * fraction),
                    }
                )
        await send({"status": "verifying sha256 digest"})
        await send({"status": "writing manifest"})
        self._install(spec)
        await send({"status": "success"})
        await resp.write_eof()
        return resp

    def _install(self, spec: ModelSpec) -> None:
        with self._changed:
            self._installed[spec.name] = spec
            self._changed.notify_all()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._generation(request, chat=False)

    # ---- embeddings

    async def _embed(self, request: web.Request) -> web.Response:
        started = time.perf_counter_ns()
        rec = await self._record(request)
        struct = "EmbedRequest"
        try:
            body = self._parse_body(rec, struct)
            model = _expect(body, "model", str, struct, "string") or ""
            truncate = _expect(body, "truncate", bool, struct, "bool")
            dimensions = _expect(body, "dimensions", int, struct, "int")
            options = _check_options(body.get("options"))
            with self._lock:
                default_keep_alive = self.settings.keep_alive
                load_s = self.settings.load_duration
            keep_alive = _parse_keep_alive(body.get("keep_alive"), default_keep_alive)
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(i, str) for i in raw_input):
            inputs = list(raw_input)
        elif raw_input is None:
            inputs = []
        else:
            return _json_error(400, "invalid input type")
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        spec = self._spec(model)
        if spec is None:
            return _json_error(404, f"model '{model}' not found")
        load_ns = await self._ensure_loaded(
            spec, load_s, default_keep_alive if keep_alive is None else keep_alive
        )
        if not inputs:
            return _json({"model": model, "embeddings": []})
        window = min(int(options.get("num_ctx") or DEFAULT_NUM_CTX), spec.context_length)
        vectors, count = [], 0
        for text in inputs:
            tokens = tokenize(text)
            if len(tokens) > window:
                if truncate is False:
                    return _json_error(400, "input exceeds maximum context length")
                tokens = tokens[:window]
            count += len(tokens)
            vectors.append(
                embedding_of(spec.name, "".join(tokens), spec.embedding_length, dimensions)
            )
        return _json(
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": max(time.perf_counter_ns() - started, load_ns + 1),
                "load_duration": load_ns,
                "prompt_eval_count": count,
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        """The older /api/embeddings: one `prompt`, `{"embedding": [...]}` and nothing else."""
        rec = await self._record(request)
        struct = "EmbeddingRequest"
        try:
            body = self._parse_body(rec, struct)
            model = _expect(body, "model", str, struct, "string") or ""
            prompt = _expect(body, "prompt", str, struct, "string") or ""
            _check_options(body.get("options"))
            with self._lock:
                default_keep_alive = self.settings.keep_alive
                load_s = self.settings.load_duration
            keep_alive = _parse_keep_alive(body.get("keep_alive"), default_keep_alive)
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if not model:
            return _json_error(400, "model is required")
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        spec = self._spec(model)
        if spec is None:
            return _not_found(model)
        await self._ensure_loaded(
            spec, load_s, default_keep_alive if keep_alive is None else keep_alive
        )
        if not prompt:
            return _json({"embedding": []})
        return _json({"embedding": embedding_of(spec.name, prompt, spec.embedding_length)})

    # ---- create, copy, push (model administration besides pull and delete)

    async def _progress(
        self, request: web.Request, stream: bool | None, lines: list[dict]
    ) -> web.StreamResponse:
        if stream is False:
            return _json(lines[-1])
        resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for line in lines:
            await resp.write((dumps(line) + "\n").encode())
        await resp.write_eof()
        return resp

    async def _create(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        struct = "CreateRequest"
        try:
            body = self._parse_body(rec, struct)
            model = self._model_field(body, struct)
            source = _expect(body, "from", str, struct, "string")
            stream = _expect(body, "stream", bool, struct, "bool")
            system = _expect(body, "system", str, struct, "string")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        if not source:
            return _json_error(400, "neither 'from' or 'files' was specified")
        base = self._spec(source)
        if base is None:
            return _json_error(404, f'model "{source}" not found')
        lines = [{"status": f"using existing layer {digest}"} for digest, _ in base.layers()]
        self._install(replace(base, name=full_name(model), modified_at=now_rfc3339()))
        if system is not None:
            lines.append({"status": "creating new layer"})
        return await self._progress(
            request, stream, [*lines, {"status": "writing manifest"}, {"status": "success"}]
        )

    async def _copy(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        struct = "CopyRequest"
        try:
            body = self._parse_body(rec, struct)
            source = _expect(body, "source", str, struct, "string")
            destination = _expect(body, "destination", str, struct, "string")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if not source or not destination:
            return _json_error(400, "source and destination are required")
        if (s := self._take_script(rec.path, source, status_only=True)) is not None:
            return self._status_response(s, source)
        spec = self._spec(source)
        if spec is None:
            return _json_error(404, f'model "{source}" not found')
        self._install(replace(spec, name=full_name(destination)))
        return web.Response(status=200)

    async def _push(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        struct = "PushRequest"
        try:
            body = self._parse_body(rec, struct)
            model = self._model_field(body, struct)
            stream = _expect(body, "stream", bool, struct, "bool")
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if (s := self._take_script(rec.path, model, status_only=True)) is not None:
            return self._status_response(s, model)
        spec = self._spec(model)
        if spec is None:
            return _json_error(404, f'model "{model}" not found')
        lines: list[dict] = [{"status": "retrieving manifest"}]
        for digest, total in spec.layers():
            status = f"pushing {digest[7:19]}"
            lines.append({"status": status, "digest": digest, "total": total, "completed": total})
        return await self._progress(
            request, stream, [*lines, {"status": "pushing manifest"}, {"status": "success"}]
        )

    # ---- chat / generate

    def _validate_generation(self, rec: RecordedRequest, chat: bool) -> dict:
        struct = "ChatRequest" if chat else "GenerateRequest"
        body = self._parse_body(rec, struct)
        _expect(body, "model", str, struct, "string")
        _expect(body, "stream", bool, struct, "bool")
        if chat:
            messages = _expect(body, "messages", list, struct, "[]api.Message")
            for m in messages or []:
                if not isinstance(m, dict):
                    raise _BadRequest(
                        f"json: cannot unmarshal {_go_type(m)} into Go struct field "
                        f"{struct}.messages of type api.Message"
                    )
                _expect(m, "role", str, "Message", "string")
                _expect(m, "content", str, "Message", "string")
                _expect(m, "images", list, "Message", "[]api.ImageData")
        else:
            _expect(body, "prompt", str, struct, "string")
            _expect(body, "system", str, struct, "string")
            _expect(body, "images", list, struct, "[]api.ImageData")
            _expect(body, "context", list, struct, "[]int")
        _expect(body, "think", bool | str, struct, "api.ThinkValue")
        _expect(body, "tools", list, struct, "api.Tools")
        if not body.get("model"):
            raise _BadRequest("model is required")
        return body

    def _default_reply(self, body: dict, chat: bool, model: str) -> str:
        if chat:
            last = next(
                (
                    m.get("content") or ""
                    for m in reversed(body.get("messages") or [])
                    if m.get("role") == "user"
                ),
                "",
            )
        else:
            last = body.get("prompt") or ""
        words = last.split()
        echo = " ".join(words[:40]) + (" ..." if len(words) > 40 else "")
        text = f"This is {model} replying to: {echo}" if echo else f"This is {model}."
        if body.get("format"):
            return dumps({"reply": text})
        return text

    @staticmethod
    def _prompt_tokens(body: dict, chat: bool) -> int:
        if chat:
            texts = [m.get("content") or "" for m in body.get("messages") or []]
            images = sum(len(m.get("images") or []) for m in body.get("messages") or [])
            overhead = 4 * len(texts)
        else:
            texts = [body.get("system") or "", body.get("prompt") or ""]
            images = len(body.get("images") or [])
            overhead = 4
        return sum(len(tokenize(t)) for t in texts) + overhead + 576 * images

    async def _generation(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        arrived_ns = time.perf_counter_ns()
        rec = await self._record(request)
        try:
            body = self._validate_generation(rec, chat)
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        model: str = body["model"]
        status_script = self._take_script(rec.path, model, status_only=True)
        if status_script is not None:
            return self._status_response(status_script, model)
        spec = self._spec(model)
        if spec is None:
            return _not_found(model)
        try:
            options = _check_options(body.get("options"))
            with self._lock:
                default_keep_alive = self.settings.keep_alive
            keep_alive = _parse_keep_alive(body.get("keep_alive"), default_keep_alive)
        except _BadRequest as exc:
            return _json_error(exc.status, exc.message)
        if keep_alive is None:
            keep_alive = default_keep_alive
        stream = body.get("stream")
        stream = True if stream is None else stream

        # Load / unload without generating.
        empty = (not body.get("messages")) if chat else (not body.get("prompt"))
        if empty:
            if keep_alive == 0:
                self._unload(spec.name)
                reason = "unload"
            else:
                peek = self._peek_script(rec.path, model)
                with self._lock:
                    load_s = self.settings.load_duration
                if peek is not None and peek.load_duration is not None:
                    load_s = peek.load_duration
                await self._ensure_loaded(spec, load_s, keep_alive)
                reason = "load"
            out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
            if chat:
                out["message"] = {"role": "assistant", "content": ""}
                out["done_reason"] = reason
                out["done"] = True
            else:
                out |= {"response": "", "done": True, "done_reason": reason}
            return _json(out)

        # Capabilities.
        messages = body.get("messages") or []
        has_images = any(m.get("images") for m in messages) if chat else bool(body.get("images"))
        if has_images and "vision" not in spec.capabilities:
            return _json_error(400, f"{registry_name(model)} does not support vision")
        if body.get("tools") and "tools" not in spec.capabilities:
            return _json_error(400, f"{registry_name(model)} does not support tools")
        think = body.get("think")
        if think not in (None, False) and "thinking" not in spec.capabilities:
            return _json_error(400, f'"{model}" does not support thinking')

        script = self._take_script(rec.path, model, status_only=False) or Script()
        with self._lock:
            settings = replace(self.settings)

        # Admission: a slot now, a place in the queue, or 503.
        try:
            waiter = self._try_enter(spec.name)
        except _Busy:
            return _json_error(503, BUSY_MESSAGE)
        gen = Generation(
            id=next(self._ids),
            path=rec.path,
            model=model,
            stream=stream,
            request=rec,
            queued=waiter is not None,
            arrived_at=time.monotonic(),
        )
        with self._changed:
            self._generations.append(gen)
            self._changed.notify_all()
        self._active[gen.id] = request
        if waiter is not None:
            try:
                await waiter
            except asyncio.CancelledError:
                self._leave_queue(spec.name, waiter)
                self._active.pop(gen.id, None)
                with self._changed:
                    gen.status = 499  # Ollama logs "request canceled"
                    gen.client_disconnected = True
                    gen.ended_at = time.monotonic()
                    self._changed.notify_all()
                raise
        with self._changed:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            gen.started_at = time.monotonic()
            self._changed.notify_all()
        try:
            return await self._run_generation(
                request, body, chat, spec, script, settings, options, keep_alive, gen, arrived_ns
            )
        except (asyncio.CancelledError, ConnectionError):
            with self._changed:
                if not gen.dropped and not gen.completed:
                    gen.client_disconnected = True
                self._changed.notify_all()
            raise
        finally:
            self._active.pop(gen.id, None)
            with self._changed:
                self._in_flight -= 1
                gen.ended_at = time.monotonic()
                self._changed.notify_all()
            self._release(spec.name)

    async def _hold(self, script: Script, gen: Generation) -> None:
        """Pause a generation until `release(script)`; a client that leaves still ends it."""
        event = asyncio.Event()
        with self._changed:
            if script.released:
                return
            script.holding.append(event)
            gen.held = True
            self._changed.notify_all()
        try:
            await event.wait()
        finally:
            with self._changed:
                script.holding.remove(event)
                gen.held = False
                self._changed.notify_all()

    async def _run_generation(
        self,
        request: web.Request,
        body: dict,
        chat: bool,
        spec: ModelSpec,
        script: Script,
        settings: Settings,
        options: dict,
        keep_alive: float,
        gen: Generation,
        arrived_ns: int,
    ) -> web.StreamResponse:
        model = gen.model
        token_delay = script.token_delay if script.token_delay is not None else settings.token_delay
        prompt_delay = (
            script.prompt_delay if script.prompt_delay is not None else settings.prompt_delay
        )
        load_s = (
            script.load_duration if script.load_duration is not None else settings.load_duration
        )

        load_ns = await self._ensure_loaded(spec, load_s, keep_alive)
        prompt_start = time.perf_counter_ns()
        if prompt_delay > 0:
            await asyncio.sleep(prompt_delay)
        prompt_ns = time.perf_counter_ns() - prompt_start
        prompt_count = self._prompt_tokens(body, chat)

        # Plan the tokens: (field, text) with field "thinking" or "content".
        if script.tokens is not None:
            content_tokens = list(script.tokens)
        else:
            reply = script.reply if script.reply is not None else settings.reply
            if reply is None:
                reply = self._default_reply(body, chat, model)
            content_tokens = tokenize(reply)
        done_reason = "stop"
        stops = [s for s in options.get("stop") or [] if s]
        if stops:
            text = "".join(content_tokens)
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                kept, length = [], 0
                for tok in content_tokens:
                    if length + len(tok) > cut:
                        if cut - length > 0:
                            kept.append(tok[: cut - length])
                        break
                    kept.append(tok)
                    length += len(tok)
                content_tokens = kept
        thinking_tokens: list[str] = []
        if body.get("think") not in (None, False):
            thinking_tokens = tokenize(
                script.thinking if script.thinking is not None else "Let me think about this."
            )
        planned = [("thinking", t) for t in thinking_tokens] + [
            ("content", t) for t in content_tokens
        ]
        num_predict = options.get("num_predict")
        if isinstance(num_predict, int | float) and num_predict >= 0:
            limit = int(num_predict)
            if len(planned) > limit:
                planned = planned[:limit]
                done_reason = "length"
        gen.tokens_planned = len(planned)

        resp: web.StreamResponse | None = None
        if gen.stream:
            resp = web.StreamResponse(status=200, headers={"Content-Type": NDJSON})
            resp.enable_chunked_encoding()
            await resp.prepare(request)

        def chunk(kind: str, text: str) -> dict:
            out: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
            if chat:
                msg: dict[str, Any] = {"role": "assistant", "content": ""}
                msg[kind] = text
                out["message"] = msg
            elif kind == "content":
                out["response"] = text
            else:
                out["response"] = ""
                out["thinking"] = text
            out["done"] = False
            return out

        async def fail_midstream() -> web.StreamResponse:
            with self._changed:
                gen.error = script.error_message
                if resp is None:
                    gen.status = 500
                self._changed.notify_all()
            if resp is None:
                return _json_error(500, script.error_message)
            await resp.write((dumps({"error": script.error_message}) + "\n").encode())
            await resp.write_eof()
            return resp

        async def drop() -> web.StreamResponse:
            with self._changed:
                gen.dropped = True
                self._changed.notify_all()
            transport = request.transport
            if transport is not None:
                transport.abort()
            await asyncio.sleep(3600)  # cancelled by aiohttp as the connection is lost
            raise ConnectionResetError("dropped")

        content_parts: list[str] = []
        thinking_parts: list[str] = []
        eval_start = time.perf_counter_ns()
        for sent, (fld, text) in enumerate(planned):
            if script.error_after is not None and sent >= script.error_after:
                return await fail_midstream()
            if script.drop_after is not None and sent >= script.drop_after:
                return await drop()
            if script.hold_after is not None and sent == script.hold_after:
                await self._hold(script, gen)
            await asyncio.sleep(token_delay)
            (content_parts if fld == "content" else thinking_parts).append(text)
            if resp is not None:
                await resp.write((dumps(chunk(fld, text)) + "\n").encode())
            with self._changed:
                gen.tokens_sent = sent + 1
                if fld == "content":
                    gen.content += text
                if gen.first_token_at is None:
                    gen.first_token_at = time.monotonic()
                self._changed.notify_all()
        n = len(planned)
        if script.error_after is not None and n >= script.error_after:
            return await fail_midstream()
        if script.drop_after is not None and n >= script.drop_after:
            return await drop()
        if script.tool_calls and resp is not None:
            msg = {"role": "assistant", "content": "", "tool_calls": script.tool_calls}
            out = {"model": model, "created_at": now_rfc3339(), "message": msg, "done": False}
            await resp.write((dumps(out) + "\n").encode())
        eval_ns = max(time.perf_counter_ns() - eval_start, 1 if n else 0)

        metrics = {
            "total_duration": 0,
            "load_duration": load_ns,
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": prompt_ns,
            "eval_count": n,
            "eval_duration": eval_ns,
        }
        final: dict[str, Any] = {"model": model, "created_at": now_rfc3339()}
        if chat:
            msg = {"role": "assistant", "content": ""}
            if resp is None:
                msg["content"] = "".join(content_parts)
                if thinking_parts:
                    msg["thinking"] = "".join(thinking_parts)
                if script.tool_calls:
                    msg["tool_calls"] = script.tool_calls
            final["message"] = msg
            final["done_reason"] = done_reason
            final["done"] = True
        else:
            final["response"] = "".join(content_parts) if resp is None else ""
            if resp is None and thinking_parts:
                final["thinking"] = "".join(thinking_parts)
            final["done"] = True
            final["done_reason"] = done_reason
            prior = [c for c in body.get("context") or [] if isinstance(c, int)]
            digest = int(spec.digest[:6], 16)
            final["context"] = prior + [
                (digest + i * 7919) % 128000 for i in range(prompt_count + n)
            ]
        metrics["total_duration"] = max(
            time.perf_counter_ns() - arrived_ns, load_ns + prompt_ns + eval_ns
        )
        final |= metrics

        if keep_alive == 0:
            self._unload(spec.name)
        else:
            with self._changed:
                entry = self._loaded.get(spec.name)
                if entry is not None:
                    entry.expires_at = self._expires(keep_alive)
                    entry.last_used = time.monotonic()

        def mark_completed() -> None:
            with self._changed:
                gen.done_reason = done_reason
                gen.completed = True
                self._changed.notify_all()

        if resp is None:
            mark_completed()
            return _json(final)
        await resp.write((dumps(final) + "\n").encode())
        mark_completed()
        await resp.write_eof()
        return resp


__all__ = [
    "BUSY_MESSAGE",
    "NDJSON",
    "OLLAMA_VERSION",
    "Generation",
    "ModelSpec",
    "OllamaDouble",
    "RecordedRequest",
    "Script",
    "Settings",
    "default_models",
    "embedding_of",
    "full_name",
    "pullable_models",
    "tokenize",
]
