from django.core.management.base import BaseCommand

from uploads import services


class Command(BaseCommand):
    help = (
        "Delete leftovers in MEDIA_ROOT/uploads/ from crashed processes: stale temporary "
        "files and files without a database row. Reports rows whose file is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--older-than",
            type=float,
            default=3600,
            metavar="SECONDS",
            help="only files not modified for this long (default 3600)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")

    def handle(self, *args, older_than: float, dry_run: bool, **options):
        report = services.cleanup(older_than_seconds=older_than, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for name in report.removed_temp:
            self.stdout.write(f"{verb} temporary file {name}")
        for name in report.removed_orphans:
            self.stdout.write(f"{verb} orphan file {name}")
        for name in report.missing_files:
            self.stderr.write(f"row without its file: {name}")
        self.stdout.write(
            f"{len(report.removed_temp)} temporary, {len(report.removed_orphans)} orphan, "
            f"{len(report.missing_files)} missing"
        )
