"""Sessions that end without a save of the account: a logout, a deleted account.

(A new password and a deactivation are seen by User.save(): accounts.models.)
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from accounts import services


@receiver(user_logged_out, dispatch_uid="accounts.logged_out")
def close_the_sockets_of_the_session(sender, request, user, **kwargs) -> None:
    # Sent before Django flushes the session: the message names the session rather than
    # asking the sockets to look for it, which they could do before it is gone.
    if user is None or request is None:
        return
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        services.tell_sockets(user.pk, reason="logout", session_key=session_key)


@receiver(post_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.user_deleted")
def close_the_sockets_of_a_deleted_account(sender, instance, **kwargs) -> None:
    user_id = instance.pk
    transaction.on_commit(lambda: services.tell_sockets(user_id, reason="deleted"), robust=True)
