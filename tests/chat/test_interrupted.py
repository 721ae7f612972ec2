from datetime import timedelta

import pytest
from django.utils import timezone

from chat.models import Conversation, Message
from chat.tasks import mark_interrupted

pytestmark = pytest.mark.django_db


def test_stale_streaming_replies_are_marked_interrupted_keeping_their_text(user, settings):
    settings.CHAT_STALE_STREAMING_SECONDS = 600
    conversation = Conversation.objects.create(owner=user)
    stale = Message.objects.create(
        conversation=conversation, role="assistant", status="streaming", content="half a"
    )
    fresh = Message.objects.create(conversation=conversation, role="assistant", status="streaming")
    done = Message.objects.create(conversation=conversation, role="assistant", content="ok")
    old = timezone.now() - timedelta(seconds=601)
    Message.objects.filter(pk__in=[stale.pk, done.pk]).update(updated_at=old)

    assert mark_interrupted() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    done.refresh_from_db()
    assert (stale.status, stale.content, stale.error_code) == (
        "interrupted",
        "half a",
        "interrupted",
    )
    assert fresh.status == "streaming"
    assert done.status == "complete"
    assert mark_interrupted() == 0


def test_the_task_is_scheduled(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["chat-mark-interrupted"]
    assert entry["task"] == "chat.mark_interrupted"
