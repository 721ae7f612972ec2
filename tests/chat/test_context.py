"""The context sent to Ollama: a token budget filled with the newest messages of the branch."""

import pytest

from chat.context import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    MIN_REPLY_RESERVE,
    PastMessage,
    build_context,
    build_messages,
    estimate_tokens,
    reply_reserve,
    title_from,
)

# A text of 40 characters is 10 estimated tokens: 16 as a message, with the template's overhead.
TEN = "x" * 40
MESSAGE = 10 + MESSAGE_OVERHEAD_TOKENS
EXCHANGE = 2 * MESSAGE


def exchange(n: int, status: str = "complete") -> list[PastMessage]:
    return [PastMessage("user", f"q{n}", "complete"), PastMessage("assistant", f"a{n}", status)]


def sized(n: int, *, user: str = TEN, reply: str = TEN, **reply_fields) -> list[PastMessage]:
    """Exchange `n`, each message ten estimated tokens unless told otherwise."""
    return [
        PastMessage("user", f"{n}{user[1:]}", "complete"),
        PastMessage(
            "assistant", f"{n}{reply[1:]}", reply_fields.pop("status", "complete"), **reply_fields
        ),
    ]


def contents(messages: list[dict]) -> list[str]:
    return [m["content"][:1] if m["role"] != "system" else "S" for m in messages]


def test_estimate_is_characters_over_four_rounded_up():
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


# --------------------------------------------------------------------------- the budget


def test_the_history_is_cut_exactly_at_the_budget():
    history = [m for n in range(1, 6) for m in sized(n)]
    room_for_two = MESSAGE + 2 * EXCHANGE  # the new message and two exchanges
    fits = build_context(
        system_prompt="", history=history, new_message=TEN, window=room_for_two + 100, reserve=100
    )
    assert contents(fits.messages) == ["4", "4", "5", "5", "x"]
    assert fits.report.tokens_estimated == room_for_two
    assert (fits.report.messages_sent, fits.report.messages_dropped) == (5, 6)
    assert fits.report.window == room_for_two + 100
    assert not fits.report.over_budget

    one_short = build_context(
        system_prompt="", history=history, new_message=TEN, window=room_for_two + 99, reserve=100
    )
    assert contents(one_short.messages) == ["5", "5", "x"]
    assert one_short.report.tokens_estimated == MESSAGE + EXCHANGE
    assert one_short.report.messages_dropped == 8


def test_everything_is_sent_when_it_fits():
    history = [m for n in range(1, 4) for m in sized(n)]
    context = build_context(
        system_prompt="Be brief.", history=history, new_message=TEN, window=4096, reserve=1024
    )
    assert context.messages[0] == {"role": "system", "content": "Be brief."}
    assert len(context.messages) == 1 + 6 + 1
    assert context.report.messages_dropped == 0
    system = estimate_tokens("Be brief.") + MESSAGE_OVERHEAD_TOKENS
    assert context.report.tokens_estimated == system + 3 * EXCHANGE + MESSAGE


def test_going_back_stops_at_the_first_exchange_that_does_not_fit():
    big = "y" * 400  # 100 tokens
    history = [*sized(1), *sized(2, user=big), *sized(3)]
    context = build_context(
        system_prompt="", history=history, new_message=TEN, window=1000, reserve=1000 - 100
    )
    # Exchange 1 would fit in what is left, but the history is sent without a gap.
    assert contents(context.messages) == ["3", "3", "x"]
    assert context.report.messages_dropped == 4


def test_the_system_prompt_and_the_new_message_are_kept_past_the_budget():
    system = "s" * 4000
    context = build_context(
        system_prompt=system, history=sized(1), new_message=TEN, window=512, reserve=128
    )
    assert context.messages == [
        {"role": "system", "content": system},
        {"role": "user", "content": TEN},
    ]
    report = context.report
    assert report.over_budget
    assert report.tokens_estimated == 1000 + MESSAGE_OVERHEAD_TOKENS + MESSAGE
    assert (report.messages_sent, report.messages_dropped) == (2, 2)


def test_a_blank_system_prompt_is_neither_sent_nor_counted():
    context = build_context(system_prompt="  ", history=[], new_message=TEN, window=100, reserve=0)
    assert context.messages == [{"role": "user", "content": TEN}]
    assert context.report.tokens_estimated == MESSAGE


def test_attachments_text_and_images_count_against_the_budget():
    history = [m for n in range(1, 4) for m in sized(n)]
    plain = build_context(system_prompt="", history=history, new_message=TEN, window=200, reserve=0)
    assert plain.report.messages_dropped == 0

    # The caller folds the attachments' text into the new message: 100 more tokens.
    with_document = TEN + "d" * 400
    attached = build_context(
        system_prompt="", history=history, new_message=with_document, window=200, reserve=0
    )
    assert contents(attached.messages) == ["2", "2", "3", "3", "x"]
    assert attached.report.tokens_estimated == MESSAGE + 100 + 2 * EXCHANGE

    window = MESSAGE + IMAGE_TOKENS + EXCHANGE
    image = build_context(
        system_prompt="",
        history=history,
        new_message=TEN,
        images=["aGk="],
        window=window,
        reserve=0,
    )
    assert image.messages[-1] == {"role": "user", "content": TEN, "images": ["aGk="]}
    assert contents(image.messages) == ["3", "3", "x"]
    assert image.report.tokens_estimated == window


# --------------------------------------------------------------------------- counting


def test_a_reported_count_is_preferred_to_the_estimate():
    long_reply = "r" * 4000  # 1000 estimated tokens, 20 as Ollama counted them
    history = [*sized(1), *sized(2, reply=long_reply, tokens=20)]
    context = build_context(
        system_prompt="", history=history, new_message=TEN, window=200, reserve=0
    )
    assert len(context.messages) == 5
    reported_reply = 20 + MESSAGE_OVERHEAD_TOKENS
    assert context.report.tokens_estimated == MESSAGE + EXCHANGE + MESSAGE + reported_reply
    assert context.report.counted == "mixed"

    estimated = build_context(
        system_prompt="", history=sized(2, reply=long_reply), new_message=TEN, window=200, reserve=0
    )
    assert contents(estimated.messages) == ["x"]


def test_counted_says_how_the_earlier_messages_were_counted():
    def counted(history: list[PastMessage]) -> str:
        context = build_context(
            system_prompt="Hi", history=history, new_message=TEN, window=4096, reserve=0
        )
        return context.report.counted

    reported = [
        PastMessage("user", "q", "complete", tokens=3),
        PastMessage("assistant", "a", "complete", tokens=4),
    ]
    assert counted(reported) == "reported"
    assert counted([reported[0], PastMessage("assistant", "a", "complete")]) == "mixed"
    assert counted(sized(1)) == "estimated"
    assert counted([]) == "estimated"
    # Zero is what Ollama reports for a prompt read from its cache: no count at all.
    assert counted([PastMessage("user", "q", "complete", tokens=0)]) == "estimated"


def test_the_report_as_a_dict():
    context = build_context(
        system_prompt="", history=exchange(1), new_message="q2", window=1000, reserve=250
    )
    assert context.report.as_dict() == {
        "messages_sent": 3,
        "messages_dropped": 0,
        "tokens_estimated": 3 * (1 + MESSAGE_OVERHEAD_TOKENS),
        "window": 1000,
        "counted": "estimated",
        "over_budget": False,
    }


# --------------------------------------------------------------------------- what is sent


def test_the_exchanges_cap():
    history = [m for n in range(1, 8) for m in exchange(n)]

    def sent(cap: int | None) -> list[str]:
        context = build_context(
            system_prompt="Be brief.",
            history=history,
            new_message="q8",
            window=4096,
            reserve=1024,
            max_exchanges=cap,
        )
        return [m["content"] for m in context.messages]

    assert sent(2) == ["Be brief.", "q6", "a6", "q7", "a7", "q8"]
    assert sent(0) == ["Be brief.", "q8"]
    assert len(sent(None)) == 1 + 14 + 1
    assert len(sent(100)) == 1 + 14 + 1


def test_failed_replies_are_left_out_and_partial_ones_kept():
    history = [*exchange(1, "failed"), *exchange(2, "cancelled"), *exchange(3, "interrupted")]
    history.append(PastMessage("user", "q4", "complete"))
    history.append(PastMessage("assistant", "", "complete"))  # no text: nothing to send
    context = build_context(
        system_prompt="", history=history, new_message="q5", window=4096, reserve=0
    )
    assert [m["content"] for m in context.messages] == ["q1", "q2", "a2", "q3", "a3", "q4", "q5"]
    assert context.report.messages_dropped == 0  # a failed reply is not context to drop


def test_a_reply_is_never_sent_without_its_question():
    big_question = "q" * 4000
    history = [
        PastMessage("assistant", "a reply whose question is not in the branch", "complete"),
        *sized(1),
        PastMessage("user", big_question, "complete"),
        PastMessage("assistant", "short", "complete"),
        *sized(3),
    ]
    context = build_context(
        system_prompt="", history=history, new_message=TEN, window=500, reserve=0
    )
    # The short reply would fit; its question does not: both stay out, and so does the rest.
    assert contents(context.messages) == ["3", "3", "x"]
    assert context.report.messages_dropped == 5

    everything = build_context(
        system_prompt="", history=history, new_message=TEN, window=100_000, reserve=0
    )
    assert everything.messages[0]["role"] == "user"
    assert everything.report.messages_dropped == 1


def test_a_continued_reply_is_sent_last_after_its_question():
    partial = PastMessage("assistant", "Once upon a", "cancelled", tokens=3)
    context = build_context(
        system_prompt="Tell stories.",
        history=[m for n in range(1, 4) for m in sized(n)],
        new_message="Tell me a story",
        window=4096,
        reserve=1024,
        continuing=partial,
    )
    assert context.messages[-2:] == [
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon a"},
    ]
    assert context.messages[0]["role"] == "system" and len(context.messages) == 1 + 6 + 2
    assert context.report.counted == "mixed"  # the partial reply's count is Ollama's


def test_a_continued_reply_and_its_question_are_kept_past_the_budget():
    partial = PastMessage("assistant", "p" * 4000, "interrupted")
    context = build_context(
        system_prompt="",
        history=sized(1),
        new_message=TEN,
        window=1024,
        reserve=256,
        continuing=partial,
    )
    assert [m["role"] for m in context.messages] == ["user", "assistant"]
    assert context.report.over_budget
    assert context.report.tokens_estimated == MESSAGE + 1000 + MESSAGE_OVERHEAD_TOKENS
    assert context.report.counted == "estimated"


# --------------------------------------------------------------------------- the reply's room


@pytest.mark.parametrize(
    ("window", "max_tokens", "reserve"),
    [
        (4096, None, 1024),  # a quarter of the window
        (131_072, None, 32_768),
        (2048, None, 512),
        (512, None, MIN_REPLY_RESERVE),  # a quarter (128) is less than the minimum
        (256, None, 128),  # never more than half the window
        (4096, 100, 100),  # max_tokens when set
        (4096, 3000, 2048),  # ... capped at half the window
        (4096, 0, 1024),  # not a limit: the default share
    ],
)
def test_reply_reserve(window, max_tokens, reserve):
    assert reply_reserve(window, max_tokens) == reserve


# --------------------------------------------------------------------------- deprecated


def test_build_messages_keeps_its_old_signature():
    history = [m for n in range(1, 8) for m in exchange(n)]
    assert build_messages(
        system_prompt="Be brief.", history=history, exchanges=2, new_message="q8"
    ) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q6"},
        {"role": "assistant", "content": "a6"},
        {"role": "user", "content": "q7"},
        {"role": "assistant", "content": "a7"},
        {"role": "user", "content": "q8"},
    ]
    assert build_messages(
        system_prompt=" ", history=exchange(1), exchanges=0, new_message="hi", images=["aGk="]
    ) == [{"role": "user", "content": "hi", "images": ["aGk="]}]
    everything = build_messages(system_prompt="", history=history, exchanges=None, new_message="q8")
    assert len(everything) == 15


def test_titles():
    assert title_from("  Hello   world\nsecond line") == "Hello world"
    long = title_from("word " * 40)
    assert long.endswith("…") and len(long) <= 61
    assert title_from("   ") == "New conversation"
