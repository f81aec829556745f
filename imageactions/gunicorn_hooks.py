"""gunicorn settings for the API: `gunicorn -c python:imageactions.gunicorn_hooks ...`.

Only what the service itself needs from gunicorn lives here, its server hooks and its log
format; the rest of the command line (bind, workers, timeouts) stays where the service is
started (scripts/serve, the systemd unit in docs/deploy.md).

On a graceful stop (SIGTERM to the arbiter, which passes it to each worker), a worker finishes
its requests within --graceful-timeout, then is killed. An upload may outlast that, so a worker
told to stop first records it: the upload it receives ends at its next progress check with a
clear failure (the client creates a new action and uploads again), instead of being cut off.

With --preload (scripts/serve uses it) the arbiter loads the application, the API's views
included, once, and its workers share that memory (see imageactions.forking); without it each
worker loads its own copy.
"""

import signal

# gunicorn's own lines in the service's log format; the API writes its own line per request.
logger_class = "imageactions.logs.GunicornLogger"


def pre_fork(server, worker):
    if server.cfg.preload_app:
        from imageactions.forking import load_api, prepare_to_fork

        load_api()
        prepare_to_fork()


def post_worker_init(worker):
    from imageactions.pipeline.stopping import request_stop

    graceful_exit = worker.handle_exit

    def stop_uploads_then_exit(signum, frame):
        request_stop(0)  # no grace: the rest of --graceful-timeout is for answering the client
        graceful_exit(signum, frame)

    signal.signal(signal.SIGTERM, stop_uploads_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn: reads in flight carry on
