from celery import shared_task

from chat import services


@shared_task(name="chat.mark_interrupted", ignore_result=True, soft_time_limit=60)
def mark_interrupted() -> int:
    return services.mark_stale_streaming_interrupted()
