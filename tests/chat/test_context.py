from chat.context import PastMessage, build_messages, title_from


def exchange(n: int, status: str = "complete") -> list[PastMessage]:
    return [PastMessage("user", f"q{n}", "complete"), PastMessage("assistant", f"a{n}", status)]


def test_system_prompt_last_exchanges_and_new_message():
    history = [m for n in range(1, 8) for m in exchange(n)]
    messages = build_messages(
        system_prompt="Be brief.", history=history, exchanges=2, new_message="q8"
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q6"},
        {"role": "assistant", "content": "a6"},
        {"role": "user", "content": "q7"},
        {"role": "assistant", "content": "a7"},
        {"role": "user", "content": "q8"},
    ]


def test_failed_replies_are_left_out_and_partial_ones_kept():
    history = [*exchange(1, "failed"), *exchange(2, "cancelled"), *exchange(3, "interrupted")]
    messages = build_messages(system_prompt="", history=history, exchanges=5, new_message="q4")
    assert [m["content"] for m in messages] == ["q1", "q2", "a2", "q3", "a3", "q4"]


def test_zero_exchanges_sends_only_the_new_message_and_images():
    messages = build_messages(
        system_prompt=" ", history=exchange(1), exchanges=0, new_message="hi", images=["aGk="]
    )
    assert messages == [{"role": "user", "content": "hi", "images": ["aGk="]}]


def test_titles():
    assert title_from("  Hello   world\nsecond line") == "Hello world"
    long = title_from("word " * 40)
    assert long.endswith("…") and len(long) <= 61
    assert title_from("   ") == "New conversation"
