"""Remove an upload's file when its row is deleted, however it is deleted.

A receiver rather than code in ``services.delete_upload``: rows also disappear by cascade
when their owner is deleted and by the admin's bulk delete, neither of which calls a
service. The file goes only after the commit, so a rolled-back delete keeps its file.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from uploads import storage
from uploads.models import Upload


@receiver(post_delete, sender=Upload, dispatch_uid="uploads.remove_file_after_delete")
def remove_file_after_delete(sender, instance: Upload, using: str, **kwargs) -> None:
    name = instance.stored_name
    transaction.on_commit(lambda: storage.remove(name), using=using)
