"""The embedded channel layer: Channels' in-memory layer, its expiry scan bounded in time."""

import asyncio

from channels import layers
from django.conf import settings

from config.channel_layers import InMemoryChannelLayer


def test_it_is_the_embedded_default():
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == (
        "config.channel_layers.InMemoryChannelLayer"
    )


async def test_messages_and_groups_work_as_in_channels():
    layer = InMemoryChannelLayer()
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", one)
    await layer.group_add("room", two)
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive(one) == {"type": "hello"}
    assert await layer.receive(two) == {"type": "hello"}
    await layer.send(one, {"type": "direct"})
    assert await layer.receive(one) == {"type": "direct"}


async def test_the_expiry_scan_runs_once_per_interval(monkeypatch):
    scans = []
    original = layers.InMemoryChannelLayer._clean_expired

    def counted(self):
        scans.append(1)
        return original(self)

    monkeypatch.setattr(layers.InMemoryChannelLayer, "_clean_expired", counted)
    layer = InMemoryChannelLayer(clean_interval=60)
    channels = [await layer.new_channel() for _ in range(50)]
    for channel in channels:
        await layer.group_add("room", channel)
    for _ in range(20):
        await layer.group_send("room", {"type": "token"})
        for channel in channels:
            await layer.receive(channel)
    # Channels' own layer would have scanned 20 + 20 * 50 times.
    assert len(scans) == 1


async def test_expired_messages_still_leave_and_take_their_channel_out_of_groups():
    layer = InMemoryChannelLayer(expiry=0.05, clean_interval=0.1)
    gone, alive = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", gone)
    await layer.group_add("room", alive)
    await layer.send(gone, {"type": "never read"})
    await asyncio.sleep(0.2)
    await layer.group_send("room", {"type": "later"})  # this call scans
    assert gone not in layer.groups["room"]
    assert await layer.receive(alive) == {"type": "later"}
    assert gone not in layer.channels
