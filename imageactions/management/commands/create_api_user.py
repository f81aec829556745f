"""Create (or update) an API user in a project and print a new token for it (shown only now: the
service keeps its digest; the user's earlier token stops working)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from imageactions.models import ProjectMember
from imageactions.tokens import issue_token


class Command(BaseCommand):
    help = (
        "Create or update an API user in a project (the project owns its actions and images) and print a new "
        "token for it; its earlier token stops working."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--project", required=True, help="The project the user belongs to.")
        parser.add_argument(
            "--staff",
            action="store_true",
            help="Operator (the admin role): reaches every project; may use the admin site.",
        )
        parser.add_argument("--password", help="Also set a password (for the admin and the browsable API).")

    def handle(self, username, project, staff, password, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        if staff:
            user.is_staff = user.is_superuser = True
        if password:
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        user.save()
        ProjectMember.objects.update_or_create(user=user, defaults={"project": project})
        self.stdout.write(issue_token(user))
