"""What a parent process does before it forks processes that run the service's code (gunicorn's
arbiter with --preload, a worker pool's django-q2 cluster): its children then share the memory
of everything it loaded, instead of each holding a copy.

A forked child shares its parent's pages until either writes to one. Python writes to an
object's memory whenever its garbage collector examines it, so a child's first full collection
would copy most of the heap it inherited; gc.freeze() moves every object that exists at the
fork out of the collector's reach (they are the loaded modules, classes and settings, which
live as long as the process anyway). A database connection must never be used by two
processes, so none is open at the fork: each child opens its own when it first needs one.
"""

from __future__ import annotations

import gc

from django.db import connections


def prepare_to_fork() -> None:
    """Call in the parent right before each fork."""
    connections.close_all()
    # Garbage first: what is frozen is never collected, and a long-lived parent (gunicorn's
    # arbiter, a cluster's sentinel) forks again at every worker it replaces.
    gc.collect()
    gc.freeze()


def load_api() -> None:
    """Import everything that serves requests (the URLconf and, through it, every view and
    serializer), which a process otherwise loads on its first request."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (the property imports the URLconf)
