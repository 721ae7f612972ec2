import pytest
from django.db import IntegrityError, transaction

from accounts.models import User

pytestmark = pytest.mark.django_db


def test_email_is_stored_lowercase():
    user = User.objects.create_user(" Bob@Example.COM ", "pw-123456789")
    assert user.email == "bob@example.com"


def test_emails_are_unique_case_insensitively():
    User.objects.create_user("bob@example.com", "pw-123456789")
    with pytest.raises(Exception):  # noqa: B017 - full_clean or the database refuses it
        User.objects.create_user("BOB@example.com", "pw-123456789")


def test_database_refuses_a_duplicate_even_bypassing_the_model():
    User.objects.create_user("carol@example.com", "pw-123456789")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.bulk_create([User(email="carol@example.com")])


def test_database_refuses_mixed_case_email_written_directly():
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.bulk_create([User(email="Dave@Example.com")])


def test_superuser():
    admin = User.objects.create_superuser("admin@example.com", "pw-123456789")
    assert admin.is_staff and admin.is_superuser
