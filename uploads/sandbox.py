"""PDF text extraction in a child process with CPU-time, memory and wall-clock limits.

pypdf is pure Python: a hostile PDF of a few kilobytes (pages sharing one large content
stream, a stream that inflates a thousandfold) keeps it busy for minutes and grows it by
hundreds of megabytes. In a thread of the web process that CPU is taken from every other
request (and the GIL with it), nothing can stop the thread, and the process cannot exit
until it ends. So the parsing runs here, in a child (``python -m uploads.sandbox``) that:

* lowers its own limits before it reads a byte of the PDF: ``RLIMIT_CPU`` (the kernel ends it with
  SIGXCPU), ``RLIMIT_AS`` (an allocation beyond it is a ``MemoryError``, reported as exit
  status ``EXIT_MEMORY``), no core files, ``nice`` 10, and ``alarm()`` a second after the
  wall-clock limit (so it ends even if its parent is gone);
* reads the PDF from its standard input (the parent opens the stored file; the child is
  given no path, no environment beyond ``PATH``/``PYTHONPATH`` and no other descriptor);
* writes one JSON object to its standard output: the text, or an ``ExtractionError``.

The parent (``extract_pdf``) waits with asyncio's subprocess API: no thread is held while a
PDF is parsed, the event loop keeps serving, and a cancelled caller (a client gone, a
SIGTERM) kills the child at once. It kills the child itself at the wall-clock limit, reads
at most a bounded amount of output, and turns every way the child can end into an
``ExtractionError`` with a stable code: ``cpu_limit``, ``memory_limit``, ``wall_limit``,
``extraction_failed`` (a crash, or output that makes no sense), or pypdf's own
(``pdf_invalid``, ``pdf_encrypted``). Only ``spawn_failed`` (the child could not be
started: the machine is out of processes or memory) and ``interrupted`` (``kill_children``,
the process exiting) say nothing about the file.

No Django here: the child imports only this module, ``uploads.extract`` and pypdf.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from uploads.extract import ExtractedText, ExtractionError

__all__ = ["EXIT_MEMORY", "Limits", "extract_pdf", "kill_children"]

#: The child's exit status when an allocation failed (``RLIMIT_AS``).
EXIT_MEMORY = 3
#: Where ``python -m uploads.sandbox`` is found: the project folder.
PROJECT_DIR = Path(__file__).resolve().parent.parent
READ_CHUNK = 64 * 1024
#: Priority of the child: the web process's requests come first. (On a machine busy with
#: other work this stretches the child's wall-clock time: its CPU limit still holds.)
NICENESS = 10

_children: set[asyncio.subprocess.Process] = set()
_stopped: set[asyncio.subprocess.Process] = set()  # killed by kill_children()


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_seconds: int
    wall_seconds: float
    memory_bytes: int

    def __post_init__(self) -> None:
        if self.cpu_seconds < 1 or self.wall_seconds <= 0 or self.memory_bytes < 1:
            raise ValueError(f"invalid limits: {self}")


# --------------------------------------------------------------------------- the parent


async def extract_pdf(
    file: IO[bytes], *, max_chars: int, max_pages: int, limits: Limits
) -> ExtractedText:
    """The text of the PDF open as ``file``, extracted by a child within ``limits``.

    Raises ``ExtractionError``; never blocks the event loop. The child reads ``file``
    through its own copy of the descriptor (which shares the file position): leave ``file``
    alone until this returns.
    """
    request = json.dumps(
        {
            "max_chars": max_chars,
            "max_pages": max_pages,
            "limits": _asdict(limits),
            "niceness": NICENESS,
        }
    )
    _kill_children_on_reactor_shutdown()
    try:
        process = await _spawn(
            sys.executable,
            "-B",  # no .pyc written by a process that parses hostile input
            "-s",
            "-m",
            "uploads.sandbox",
            request,
            stdin=file,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=PROJECT_DIR,
            env=_child_environment(),
        )
    except OSError as exc:
        raise ExtractionError(
            "spawn_failed", f"the text extractor could not be started: {exc}"
        ) from exc
    _children.add(process)
    try:
        try:
            output = await asyncio.wait_for(
                _read_output(process, _output_cap(max_chars)), timeout=limits.wall_seconds
            )
        except TimeoutError:
            raise _wall_limit(limits) from None
        if process in _stopped:
            raise ExtractionError("interrupted", "the server stopped while reading it")
        return _outcome(process.returncode, output, limits)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            # Reaps the child (were this wait cancelled too, the child is already dead).
            await process.wait()
        _children.discard(process)
        _stopped.discard(process)


def kill_children() -> int:
    """SIGKILL every child still parsing (a process exiting); returns how many.

    Their callers get ``interrupted``: nothing was learnt about those files.
    """
    killed = 0
    for process in list(_children):
        if process.returncode is None:
            _stopped.add(process)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
                killed += 1
    return killed


atexit.register(kill_children)
_reactor_hooked = False


def _kill_children_on_reactor_shutdown() -> None:
    """Under Daphne, kill the children as soon as the server begins to stop.

    Cancelling a request does not always reach the coroutine waiting for a child: a sync
    view waits for it in a thread (``async_to_sync``), and Daphne then waits for that view
    until the child ends on its own. Twisted's "before shutdown" triggers run when Daphne
    stops (after ``chat.lifecycle``'s drain), so that is when the children go (their callers
    get ``interrupted``). Only a reactor already installed is used; none is installed here.
    """
    global _reactor_hooked
    if _reactor_hooked:
        return
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    _reactor_hooked = True
    reactor.addSystemEventTrigger("before", "shutdown", kill_children)


async def _spawn(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
    # One place that starts children (the tests count them).
    return await asyncio.create_subprocess_exec(*args, **kwargs)


def _child_environment() -> dict[str, str]:
    # Nothing of the web process's environment (secrets, database URLs) reaches the child.
    path = [str(PROJECT_DIR)]
    if inherited := os.environ.get("PYTHONPATH"):
        path.append(inherited)
    return {"PATH": os.environ.get("PATH", os.defpath), "PYTHONPATH": os.pathsep.join(path)}


def _output_cap(max_chars: int) -> int:
    # JSON with ensure_ascii: at most 12 bytes per character (an escaped surrogate pair).
    return 12 * max_chars + 64 * 1024


async def _read_output(process: asyncio.subprocess.Process, cap: int) -> bytes:
    assert process.stdout is not None
    chunks: list[bytes] = []
    size = 0
    while chunk := await process.stdout.read(READ_CHUNK):
        size += len(chunk)
        if size > cap:
            raise ExtractionError("extraction_failed", "the text extractor wrote too much")
        chunks.append(chunk)
    await process.wait()
    return b"".join(chunks)


def _wall_limit(limits: Limits) -> ExtractionError:
    return ExtractionError(
        "wall_limit",
        f"reading its text took longer than the time limit of {limits.wall_seconds:g} s",
    )


def _outcome(returncode: int | None, output: bytes, limits: Limits) -> ExtractedText:
    if returncode == -signal.SIGXCPU:
        raise ExtractionError(
            "cpu_limit",
            f"reading its text needed more than the CPU-time limit of {limits.cpu_seconds} s",
        )
    if returncode == EXIT_MEMORY:
        raise ExtractionError(
            "memory_limit",
            "reading its text needed more than the memory limit of "
            f"{limits.memory_bytes // (1024 * 1024)} MB",
        )
    if returncode == -signal.SIGALRM:
        raise _wall_limit(limits)
    if returncode != 0:
        how = (
            f"signal {-returncode}"
            if returncode is not None and returncode < 0
            else f"exit status {returncode}"
        )
        raise ExtractionError(
            "extraction_failed", f"the text extractor stopped unexpectedly ({how})"
        )
    try:
        answer = json.loads(output)
        if "error" in answer:
            raise ExtractionError(str(answer["error"]), str(answer["message"]))
        return ExtractedText(
            text=str(answer["text"]),
            truncated=bool(answer["truncated"]),
            chars_total=_int_or_none(answer["chars_total"]),
            pages_read=_int_or_none(answer["pages_read"]),
            pages_total=_int_or_none(answer["pages_total"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ExtractionError(
            "extraction_failed", f"the text extractor's answer makes no sense: {exc}"
        ) from None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _asdict(limits: Limits) -> dict[str, Any]:
    return {
        "cpu_seconds": limits.cpu_seconds,
        "wall_seconds": limits.wall_seconds,
        "memory_bytes": limits.memory_bytes,
    }


# --------------------------------------------------------------------------- the child


def _limit_self(limits: Limits, niceness: int) -> None:
    """Lower this process's limits (never above the hard limits it inherited)."""
    # The kernel's signals must end this process: an ignored or blocked disposition would
    # have been inherited from the parent through exec.
    for signum in (signal.SIGXCPU, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGXCPU, signal.SIGALRM})
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump a core
    # SIGXCPU at the soft limit ends the process; SIGKILL a second later, were it caught.
    _lower(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)
    # Not every system enforces RLIMIT_AS (macOS refuses it): the CPU and wall limits remain.
    with contextlib.suppress(ValueError, OSError):
        _lower(resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)
    signal.alarm(math.ceil(limits.wall_seconds) + 1)
    with contextlib.suppress(OSError):
        os.nice(niceness)


def _lower(which: int, soft: int, hard: int) -> None:
    _, inherited = resource.getrlimit(which)
    if inherited != resource.RLIM_INFINITY:
        hard = min(hard, inherited)
    resource.setrlimit(which, (min(soft, hard), hard))


def _child(argv: list[str]) -> int:
    request = json.loads(argv[0])
    _limit_self(Limits(**request["limits"]), int(request["niceness"]))
    # pypdf logs a warning for every oddity of a broken file: nobody reads them here.
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    try:
        from uploads.extract import extract_pdf as extract

        with os.fdopen(0, "rb") as file:
            result = extract(
                file, max_chars=int(request["max_chars"]), max_pages=int(request["max_pages"])
            )
        answer: dict[str, Any] = {
            "text": result.text,
            "truncated": result.truncated,
            "chars_total": result.chars_total,
            "pages_read": result.pages_read,
            "pages_total": result.pages_total,
        }
    except MemoryError:
        os._exit(EXIT_MEMORY)
    except ExtractionError as exc:
        answer = {"error": exc.code, "message": exc.message}
    try:
        sys.stdout.buffer.write(json.dumps(answer).encode("ascii"))
        sys.stdout.buffer.flush()
    except MemoryError:
        os._exit(EXIT_MEMORY)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
