"""Register ImageActions in Keystone's catalog as the `image` service, and its service user.

Run with an admin's credentials in the usual OS_* variables (an admin openrc, system-scoped:
OS_SYSTEM_SCOPE=all). Running it again changes only what differs, so it also moves endpoints.
"""

import os

from django.core.management.base import BaseCommand, CommandError

INTERFACES = ("public", "internal", "admin")


class Command(BaseCommand):
    help = (
        "Create (or update) the `image` service and its endpoints in Keystone's catalog, and the service "
        "user that validates tokens; admin credentials come from the OS_* variables."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url", required=True, help="The service's root URL clients reach, e.g. https://images.example.org"
        )
        parser.add_argument("--internal-url", help="For the internal interface (default: --url).")
        parser.add_argument("--admin-url", help="For the admin interface (default: --url).")
        parser.add_argument("--region", default="RegionOne")
        parser.add_argument("--name", default="imageactions", help="The service's name in the catalog.")
        parser.add_argument(
            "--service-user", help="Also create this user, with the `service` role in --service-project."
        )
        parser.add_argument("--service-password", help="Its password (IMAGEACTIONS_KEYSTONE_PASSWORD).")
        parser.add_argument("--service-project", default="service")

    def handle(self, **options):
        from keystoneauth1 import exceptions as keystone_errors

        session = admin_session()
        try:
            service = ensure(
                session,
                "services",
                {"type": "image", "name": options["name"]},
                {"description": "ImageActions: the Glance Image API v2 on image actions", "enabled": True},
            )
            urls = {
                "public": options["url"],
                "internal": options["internal_url"] or options["url"],
                "admin": options["admin_url"] or options["url"],
            }
            for interface in INTERFACES:
                ensure(
                    session,
                    "endpoints",
                    {"service_id": service["id"], "interface": interface, "region_id": options["region"]},
                    {"url": urls[interface].rstrip("/"), "enabled": True},
                )
            if options["service_user"]:
                self.ensure_service_user(session, options)
        except keystone_errors.ClientException as error:
            raise CommandError(f"Keystone refused the registration: {error}") from None
        self.stdout.write(
            f"image service {service['id']} ({options['name']}) at {options['url']} in {options['region']}"
        )

    def ensure_service_user(self, session, options):
        if not options["service_password"]:
            raise CommandError("--service-user needs --service-password.")
        project = find(session, "projects", {"name": options["service_project"], "domain_id": "default"})
        if project is None:
            project = create(session, "projects", {"name": options["service_project"], "domain_id": "default"})
        user = ensure(
            session,
            "users",
            {"name": options["service_user"], "domain_id": "default"},
            {"password": options["service_password"], "enabled": True},
        )
        role = find(session, "roles", {"name": "service"}) or create(session, "roles", {"name": "service"})
        session.put(f"/projects/{project['id']}/users/{user['id']}/roles/{role['id']}", endpoint_filter=IDENTITY)


IDENTITY = {"service_type": "identity", "interface": "public"}


def admin_session():
    """A keystoneauth session for the admin in the OS_* variables."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    if not os.environ.get("OS_AUTH_URL"):
        raise CommandError("Set the admin's OS_AUTH_URL, OS_USERNAME, OS_PASSWORD (and OS_SYSTEM_SCOPE=all) first.")
    scope = (
        {"system_scope": os.environ["OS_SYSTEM_SCOPE"]}
        if os.environ.get("OS_SYSTEM_SCOPE")
        else {
            "project_name": os.environ.get("OS_PROJECT_NAME", "admin"),
            "project_domain_name": os.environ.get("OS_PROJECT_DOMAIN_NAME", "Default"),
        }
    )
    auth = v3.Password(
        auth_url=os.environ["OS_AUTH_URL"],
        username=os.environ.get("OS_USERNAME", "admin"),
        password=os.environ.get("OS_PASSWORD", ""),
        user_domain_name=os.environ.get("OS_USER_DOMAIN_NAME", "Default"),
        **scope,
    )
    return session.Session(auth=auth)


def find(session, collection: str, match: dict) -> dict | None:
    """The first item of `collection` whose fields equal `match` (Keystone filters the list by them)."""
    found = session.get(f"/{collection}", params=match, endpoint_filter=IDENTITY).json()[collection]
    found = [item for item in found if all(item.get(key) == value for key, value in match.items())]
    return found[0] if found else None


def create(session, collection: str, fields: dict) -> dict:
    singular = collection.removesuffix("s")
    return session.post(f"/{collection}", json={singular: fields}, endpoint_filter=IDENTITY).json()[singular]


def ensure(session, collection: str, match: dict, fields: dict) -> dict:
    """The item of `collection` that matches `match`, created or updated to have `fields`."""
    singular = collection.removesuffix("s")
    item = find(session, collection, match)
    if item is None:
        return create(session, collection, {**match, **fields})
    changed = {key: value for key, value in fields.items() if key == "password" or item.get(key) != value}
    if changed:
        item = session.patch(f"/{collection}/{item['id']}", json={singular: changed}, endpoint_filter=IDENTITY).json()[
            singular
        ]
    return item
