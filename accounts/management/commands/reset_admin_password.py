import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import admin_password
from accounts.models import normalize_email


class Command(BaseCommand):
    help = (
        "Give the first admin (ADMIN_EMAIL, or admin@localhost) a new generated password and "
        "print it (`make reset-admin-password`). Its sessions and tokens end."
    )

    def add_arguments(self, parser):
        parser.add_argument("--email", help="another admin's address")

    def handle(self, *args, **options):
        email = normalize_email(options.get("email") or admin_password.admin_email())
        user = get_user_model().objects.filter(email__iexact=email, is_staff=True).first()
        if user is None:
            raise CommandError(
                f"No admin {email}: `manage.py bootstrap_admin` (run by `make run`) creates it."
            )
        password = secrets.token_urlsafe(18)  # as bootstrap_admin generates them
        user.set_password(password)
        user.save()
        kept = admin_password.remember(password)
        self.stdout.write(self.style.SUCCESS(f"New password for {user.email}: {password}"))
        if kept:
            self.stdout.write(f"  (kept in {kept} for the start-up banner)")
