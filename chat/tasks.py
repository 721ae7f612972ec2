from asgiref.sync import async_to_sync
from celery import shared_task

from chat import lifecycle, services


@shared_task(name="chat.mark_interrupted", ignore_result=True, soft_time_limit=60)
def mark_interrupted() -> int:
    # The web processes sweep each other; this also covers a web tier that died entirely.
    swept = lifecycle.sweep_dead_processes()
    if swept:
        async_to_sync(lifecycle.announce_interrupted)(swept)
    return len(swept) + services.mark_stale_streaming_interrupted()
