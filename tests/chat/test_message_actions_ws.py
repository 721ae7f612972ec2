"""chat.regenerate, chat.edit and chat.continue over the WebSocket: the same actions as REST,
through the same runs; a continued reply's offsets go on from its end, so resume still works.
"""

from __future__ import annotations

import pytest

from chat.models import Message
from tests.chat.test_consumer import alice, connect, frames_until_end, text_of  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def exchange(communicator, **frame) -> list[dict]:
    await communicator.send_json_to(frame)
    return await frames_until_end(communicator)


async def test_regenerate_and_edit(alice, ollama):  # noqa: F811
    communicator = await connect(alice)
    ollama.script(reply="First.")
    frames = await exchange(communicator, type="chat.send", message="Question")
    reply = frames[-1]["message"]
    conversation = frames[-1]["conversation"]

    ollama.script(reply="Second.")
    frames = await exchange(communicator, type="chat.regenerate", message=reply)
    assert frames[0]["type"] == "chat.accepted" and frames[0]["conversation"] == conversation
    assert text_of(frames) == "Second." and frames[-1]["message"] != reply

    question = (await Message.objects.aget(pk=reply)).parent_id
    ollama.script(reply="Third.")
    frames = await exchange(
        communicator, type="chat.edit", message=question, content="Question, again"
    )
    assert text_of(frames) == "Third."
    edited = await Message.objects.aget(pk=frames[0]["user_message"])
    assert (edited.content, edited.parent_id) == ("Question, again", None)
    await communicator.disconnect()


async def test_continue_goes_on_from_the_end(alice, ollama):  # noqa: F811
    communicator = await connect(alice)
    ollama.script(tokens=["one ", "two ", "three"], error_after=2)
    frames = await exchange(communicator, type="chat.send", message="Count")
    assert frames[-1]["code"] == "ollama_stream_error"
    reply = frames[-1]["message"]

    ollama.script(tokens=["three ", "four"])
    frames = await exchange(communicator, type="chat.continue", message=reply)
    tokens = [f for f in frames if f["type"] == "chat.token"]
    assert tokens[0]["offset"] == len("one two ") and tokens[0]["message"] == reply
    assert frames[-1]["type"] == "chat.done" and frames[-1]["length"] == len("one two three four")

    # A client that resumes from the start gets the whole reply, once.
    await communicator.send_json_to(
        {
            "type": "chat.resume",
            "conversation": frames[-1]["conversation"],
            "message": reply,
            "offset": 0,
        }
    )
    resumed = await frames_until_end(communicator)
    assert text_of(resumed) == "one two three four"
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "chat.regenerate"}, "invalid_frame"),
        ({"type": "chat.regenerate", "message": "7"}, "invalid_frame"),
        ({"type": "chat.edit", "message": 999999, "content": "x"}, "not_found"),
        ({"type": "chat.continue", "message": 999999}, "not_found"),
    ],
)
async def test_bad_action_frames(alice, frame, code):  # noqa: F811
    communicator = await connect(alice)
    await communicator.send_json_to(frame)
    error = await communicator.receive_json_from(timeout=5)
    assert (error["type"], error["code"]) == ("chat.error", code)
    await communicator.disconnect()


async def test_continue_after_a_stop(alice, ollama):  # noqa: F811
    communicator = await connect(alice)
    held = ollama.script(tokens=["one ", "two ", "three"], hold_after=2)
    await communicator.send_json_to({"type": "chat.send", "message": "Count"})
    frames: list[dict] = []
    while "".join(f.get("content", "") for f in frames) != "one two ":
        frames.append(await communicator.receive_json_from(timeout=5))
    conversation = frames[0]["conversation"]
    await communicator.send_json_to({"type": "chat.stop", "conversation": conversation})
    frames += await frames_until_end(communicator)
    ollama.release(held)
    assert frames[-1]["type"] == "chat.cancelled"
    reply = frames[-1]["message"]

    ollama.script(tokens=["three"])
    frames = await exchange(communicator, type="chat.continue", message=reply)
    started = next(f for f in frames if f["type"] == "chat.started")
    assert started["offset"] == len("one two ")
    assert frames[-1]["type"] == "chat.done"
    saved = await Message.objects.aget(pk=reply)
    assert (saved.status, saved.content) == ("complete", "one two three")
    await communicator.disconnect()
