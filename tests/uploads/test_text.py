"""The text a chat gets from an upload: extracted once (a PDF in a child process with limits),
cached on the row, refused with a stable code when a limit is hit or there is no text."""

from __future__ import annotations

import asyncio
import codecs
import resource
import signal
import sys
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from config import database
from tests.uploads.support import (
    make_inflating_pdf,
    make_pdf,
    make_pdf_sharing_one_stream,
    png_1x1,
)
from uploads import sandbox, services, storage
from uploads.extract import ExtractedText, ExtractionError
from uploads.models import Upload

#: 40 pages sharing one 200 KB stream of empty text operators: 200 KB on disk, about ten
#: CPU-seconds of pypdf (the finding's files: 10 pages x 2 MB, 300 pages x 2 MB).
HOSTILE_PAGES = 40
#: A hostile file that would keep the child busy for minutes: for the tests that stop it.
ENDLESS_PAGES = 1000
HOSTILE_STREAM_BYTES = 200_000


def store(user, name: str, content: bytes) -> Upload:
    return services.store_upload(owner=user, file=SimpleUploadedFile(name, content))


def text_of(upload: Upload) -> ExtractedText:
    return async_to_sync(services.upload_text)(upload)


def refusal(upload: Upload) -> ExtractionError:
    with pytest.raises(ExtractionError) as caught:
        text_of(upload)
    return caught.value


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class Spawns:
    """Every child the sandbox starts; ``queue`` (set by async tests) hears of each one."""

    def __init__(self) -> None:
        self.children: list[asyncio.subprocess.Process] = []
        self.queue: asyncio.Queue[asyncio.subprocess.Process] | None = None

    def __len__(self) -> int:
        return len(self.children)


@pytest.fixture
def spawns(monkeypatch) -> Spawns:
    record = Spawns()
    spawn = sandbox._spawn

    async def counting(*args, **kwargs):
        process = await spawn(*args, **kwargs)
        record.children.append(process)
        if record.queue is not None:
            record.queue.put_nowait(process)
        return process

    monkeypatch.setattr(sandbox, "_spawn", counting)
    return record


@pytest.fixture(autouse=True)
def same_priority(monkeypatch):
    """Children at the tests' priority: on a machine busy with other work, a child at nice 10
    would get a sliver of a CPU, and its wall-clock limit would come before its CPU limit."""
    monkeypatch.setattr(sandbox, "NICENESS", 0)


@pytest.fixture
def low_limits(settings):
    """Limits low enough for the hostile files to hit them in about a second."""
    settings.UPLOAD_EXTRACT_CPU_SECONDS = 1
    settings.UPLOAD_EXTRACT_WALL_SECONDS = 60.0
    settings.UPLOAD_EXTRACT_MEMORY_MB = 200


# --------------------------------------------------------------------------- ordinary files


@pytest.mark.django_db
def test_a_text_file_is_read_once_in_process_and_cached(user, spawns):
    upload = store(user, "notes.md", b"# Plan\nBuy milk.\n")
    assert Upload.objects.get(pk=upload.pk).text_state == "pending"

    assert text_of(upload).text == "# Plan\nBuy milk.\n"
    row = Upload.objects.get(pk=upload.pk)
    assert (row.text_state, row.text, row.text_error) == ("ready", "# Plan\nBuy milk.\n", "")
    assert row.text_extracted_at is not None
    assert len(spawns) == 0  # text files are cheap: no child

    # the cache answers from now on, even without the file
    storage.path_of(upload.stored_name).unlink()
    assert text_of(upload).text == "# Plan\nBuy milk.\n"


@pytest.mark.django_db
def test_text_is_capped_by_the_setting(user, settings):
    settings.ATTACHMENT_MAX_CHARS = 10
    upload = store(user, "notes.txt", b"0123456789abcdef\r\nmore\n")
    result = text_of(upload)
    assert (result.text, result.truncated) == ("0123456789", True)
    # a lower cap applies to the cached text too
    settings.ATTACHMENT_MAX_CHARS = 4
    assert (text_of(upload).text, text_of(upload).truncated) == ("0123", True)


@pytest.mark.django_db
def test_text_uses_the_detected_encoding(user):
    upload = store(user, "notes.txt", codecs.BOM_UTF16_LE + "caf\u00e9\n".encode("utf-16-le"))
    assert upload.content_type == "text/plain; charset=utf-16"
    assert text_of(upload).text == "caf\u00e9\n"


@pytest.mark.django_db
def test_a_text_file_of_blank_space_is_refused(user):
    upload = store(user, "empty.txt", b"  \n\t\n")
    error = refusal(upload)
    assert (error.code, error.message) == ("no_text", "it holds nothing but blank space")


@pytest.mark.django_db
def test_an_image_has_no_text(user, spawns):
    upload = store(user, "pixel.png", png_1x1())
    assert refusal(upload).code == "not_text"
    assert len(spawns) == 0


@pytest.mark.django_db
def test_a_pdf_is_read_by_one_child_then_from_the_cache(user, spawns):
    upload = store(user, "doc.pdf", make_pdf(["first page", "second page"]))
    first = text_of(upload)
    assert first.text == "first page\n\nsecond page"
    assert (first.pages_read, first.pages_total, first.truncated) == (2, 2, False)
    assert len(spawns) == 1
    assert spawns.children[0].returncode == 0

    again = text_of(upload)
    assert (again.text, again.truncated) == (first.text, False)
    assert len(spawns) == 1  # the cache answered


@pytest.mark.django_db
def test_a_pdf_without_text_is_refused_once(user, spawns):
    upload = store(user, "scan.pdf", make_pdf(["", ""]))
    error = refusal(upload)
    assert error.code == "no_text"
    assert "no text" in error.message
    assert refusal(upload).code == "no_text"
    assert len(spawns) == 1
    row = Upload.objects.get(pk=upload.pk)
    assert (row.text_state, row.text_error) == ("failed", "no_text")


@pytest.mark.django_db
def test_an_encrypted_pdf_is_refused_once(user, spawns):
    upload = store(user, "locked.pdf", make_pdf(["secret"], user_password="pw"))
    assert refusal(upload).code == "pdf_encrypted"
    assert refusal(upload).code == "pdf_encrypted"
    assert len(spawns) == 1


@pytest.mark.django_db
def test_pages_are_capped_as_well_as_characters(user, settings):
    settings.UPLOAD_EXTRACT_MAX_PAGES = 10
    blank = store(user, "blank.pdf", make_pdf([""] * 30))
    error = refusal(blank)
    assert error.code == "no_text"
    assert "first 10 pages (of 30" in error.message

    long = store(user, "long.pdf", make_pdf(["page one"] + [""] * 29))
    result = text_of(long)
    assert (result.text, result.truncated, result.pages_read) == ("page one", True, 10)


@pytest.mark.django_db
def test_a_missing_file_is_not_cached(user, spawns):
    upload = store(user, "doc.pdf", make_pdf(["text"]))
    path = storage.path_of(upload.stored_name)
    content = path.read_bytes()
    path.unlink()
    with pytest.raises(FileNotFoundError):
        text_of(upload)
    assert Upload.objects.get(pk=upload.pk).text_state == "pending"
    path.write_bytes(content)  # restored from a backup
    assert text_of(upload).text == "text"


# --------------------------------------------------------------------------- hostile PDFs


@pytest.mark.django_db
def test_a_pdf_that_burns_cpu_is_stopped_at_the_cpu_limit(user, spawns, low_limits):
    upload = store(
        user, "pages.pdf", make_pdf_sharing_one_stream(HOSTILE_PAGES, HOSTILE_STREAM_BYTES)
    )
    here, children = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)

    error = refusal(upload)

    assert error.code == "cpu_limit"
    assert "CPU-time limit of 1 s" in error.message
    assert spawns.children[0].returncode == -signal.SIGXCPU  # the kernel ended the child
    # The child burnt its CPU-second; this process (the web process) did not.
    used_by_children = cpu_seconds(resource.RUSAGE_CHILDREN) - children
    used_here = cpu_seconds(resource.RUSAGE_SELF) - here
    assert used_by_children >= 0.9
    assert used_here < 0.5

    # cached: the next use is refused without a second child
    again = refusal(upload)
    assert (again.code, again.message) == ("cpu_limit", error.message)
    assert len(spawns) == 1
    row = Upload.objects.get(pk=upload.pk)
    assert (row.text_state, row.text_error, row.text) == ("failed", "cpu_limit", "")
    assert row.text_extracted_at is not None


@pytest.mark.django_db
def test_a_pdf_that_inflates_is_stopped_at_the_memory_limit(user, spawns, settings):
    settings.UPLOAD_EXTRACT_CPU_SECONDS = 60
    settings.UPLOAD_EXTRACT_WALL_SECONDS = 90.0
    settings.UPLOAD_EXTRACT_MEMORY_MB = 200
    content = make_inflating_pdf(70_000_000)
    assert len(content) < 200_000  # 70 MB of content in a small file
    upload = store(user, "bomb.pdf", content)

    error = refusal(upload)

    assert error.code == "memory_limit"
    assert "memory limit of 200 MB" in error.message
    assert spawns.children[0].returncode == sandbox.EXIT_MEMORY
    assert refusal(upload).code == "memory_limit"
    assert len(spawns) == 1


@pytest.mark.django_db
def test_a_slow_pdf_is_killed_at_the_wall_clock_limit(user, spawns, settings):
    settings.UPLOAD_EXTRACT_CPU_SECONDS = 600
    settings.UPLOAD_EXTRACT_WALL_SECONDS = 1.0
    upload = store(
        user, "pages.pdf", make_pdf_sharing_one_stream(ENDLESS_PAGES, HOSTILE_STREAM_BYTES)
    )

    error = refusal(upload)

    assert error.code == "wall_limit"
    assert "time limit of 1 s" in error.message
    # killed by this process at the limit (or by its own alarm a second later)
    assert spawns.children[0].returncode in (-signal.SIGKILL, -signal.SIGALRM)
    assert refusal(upload).code == "wall_limit"
    assert len(spawns) == 1


# --------------------------------------------------------------------------- processes at once


@pytest.fixture
def hostile_upload(user) -> Upload:
    return store(
        user, "pages.pdf", make_pdf_sharing_one_stream(ENDLESS_PAGES, HOSTILE_STREAM_BYTES)
    )


@pytest.fixture
def slow_limits(settings):
    """The hostile file keeps its child busy until the test stops it."""
    settings.UPLOAD_EXTRACT_CPU_SECONDS = 600
    settings.UPLOAD_EXTRACT_WALL_SECONDS = 600.0


def row_of(upload: Upload) -> Upload:
    return Upload.objects.get(pk=upload.pk)


@pytest.mark.django_db(transaction=True)
async def test_the_event_loop_serves_while_a_child_parses(hostile_upload, spawns, slow_limits):
    spawns.queue = asyncio.Queue()
    task = asyncio.create_task(services.upload_text(hostile_upload))
    child = await spawns.queue.get()
    # The loop (and the database threads) answer while the child burns its CPU.
    row = await database.run(row_of, hostile_upload)
    assert row.text_state == "running"
    await asyncio.sleep(0)
    assert child.returncode is None and not task.done()

    # A cancelled caller (a client gone, Daphne stopping) kills the child at once and
    # leaves the file to the next use.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await child.wait() == -signal.SIGKILL
    row = await database.run(row_of, hostile_upload)
    assert (row.text_state, row.text_started) == ("pending", None)


@pytest.mark.django_db(transaction=True)
async def test_children_are_killed_when_daphne_stops(
    hostile_upload, spawns, slow_limits, monkeypatch
):
    # A sync view waits for the child in a thread, out of reach of Daphne's cancellation:
    # the child goes when the reactor begins to stop instead.
    triggers = []

    class Reactor:
        def addSystemEventTrigger(self, phase, event, callable):
            triggers.append((phase, event, callable))

    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", Reactor())
    monkeypatch.setattr(sandbox, "_reactor_hooked", False)
    spawns.queue = asyncio.Queue()
    task = asyncio.create_task(services.upload_text(hostile_upload))
    child = await spawns.queue.get()
    [(phase, event, stop)] = triggers
    assert (phase, event) == ("before", "shutdown")

    stop()  # Daphne stopping

    with pytest.raises(ExtractionError) as caught:
        await task
    assert caught.value.code == "interrupted"
    assert child.returncode == -signal.SIGKILL
    # nothing learnt about the file: not cached
    assert (await database.run(row_of, hostile_upload)).text_state == "pending"


@pytest.mark.django_db(transaction=True)
async def test_at_most_the_concurrency_setting_of_children_per_process(
    user, spawns, slow_limits, settings
):
    settings.UPLOAD_EXTRACT_CONCURRENCY = 1
    content = make_pdf_sharing_one_stream(ENDLESS_PAGES, HOSTILE_STREAM_BYTES)
    first, second = [await database.run(store, user, f"{n}.pdf", content) for n in "ab"]
    spawns.queue = asyncio.Queue()
    first_task = asyncio.create_task(services.upload_text(first))
    await spawns.queue.get()
    second_task = asyncio.create_task(services.upload_text(second))
    # the second waits for the slot, without a child...
    slot = services._slots[asyncio.get_running_loop()]
    while not slot._waiters:
        await asyncio.sleep(0)
    assert len(spawns) == 1
    # ...until the first is done
    first_task.cancel()
    await spawns.queue.get()
    assert len(spawns) == 2
    second_task.cancel()
    await asyncio.gather(first_task, second_task, return_exceptions=True)


def _hold_lease(upload: Upload, started) -> None:
    Upload.objects.filter(pk=upload.pk).update(text_state="running", text_started=started)


@pytest.mark.django_db(transaction=True)
async def test_a_process_waits_for_another_ones_extraction(user, spawns, monkeypatch):
    upload = await database.run(store, user, "doc.pdf", make_pdf(["from the other process"]))
    # another process holds the lease...
    await database.run(_hold_lease, upload, timezone.now())
    looked = asyncio.Event()
    text_row = services._text_row

    def watched(pk):
        row = text_row(pk)
        looked.set()
        return row

    monkeypatch.setattr(services, "_text_row", watched)
    task = asyncio.create_task(services.upload_text(upload))
    await looked.wait()
    looked.clear()
    await looked.wait()  # it looked twice: it is polling, not parsing
    assert len(spawns) == 0
    # ...and saves its outcome: this one takes it
    done = ExtractedText("from the other process", False, None)
    await database.run(services._save_text, upload.pk, done)
    assert (await task).text == "from the other process"
    assert len(spawns) == 0


@pytest.mark.django_db(transaction=True)
async def test_an_expired_lease_is_taken_over(user, spawns):
    upload = await database.run(store, user, "doc.pdf", make_pdf(["read again"]))
    # a process that died while extracting, long ago
    await database.run(_hold_lease, upload, timezone.now() - timedelta(hours=1))
    assert (await services.upload_text(upload)).text == "read again"
    assert len(spawns) == 1


# --------------------------------------------------------------------------- the admin


@pytest.mark.django_db
def test_forget_text_makes_the_next_use_extract_again(user, spawns):
    upload = store(user, "doc.pdf", make_pdf(["text"]))
    text_of(upload)
    assert services.forget_text(Upload.objects.filter(pk=upload.pk)) == 1
    assert row_of(upload).text_state == "pending"
    assert text_of(upload).text == "text"
    assert len(spawns) == 2
