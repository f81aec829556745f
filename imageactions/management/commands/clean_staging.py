"""Abort the staging store's stale multipart uploads and delete what ended actions left there."""

from django.core.management.base import BaseCommand, CommandError

from imageactions.runner.maintenance import STAGING_UPLOAD_GRACE


class Command(BaseCommand):
    help = (
        "Abort the multipart uploads in the staging store (IMAGEACTIONS_STAGING_STORE) of ended or "
        "unknown actions, and those older than the grace period that are not their action's current "
        "upload; delete the staged objects of ended actions. The maintenance schedule runs the same."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--grace",
            type=float,
            default=STAGING_UPLOAD_GRACE,
            help=f"Seconds an upload that is not its action's current one is left alone (default {STAGING_UPLOAD_GRACE}).",
        )

    def handle(self, grace, **options):
        from django.conf import settings

        from imageactions.runner import clean_staging
        from imageactions.stores import StoreError

        if not settings.STAGING_STORE:
            self.stdout.write("No staging store is configured (IMAGEACTIONS_STAGING_STORE): nothing to clean.")
            return
        try:
            counts = clean_staging(grace=grace, report=self.stdout.write)
        except StoreError as error:  # the store could not be listed or reached at all
            raise CommandError(f"The staging store could not be cleaned: {error}") from None
        summary = f"{counts['uploads_aborted']} uploads aborted, {counts['objects_deleted']} staged objects deleted."
        if counts["failed"]:
            raise CommandError(f"{summary} {counts['failed']} could not be removed (see above).")
        self.stdout.write(summary)
