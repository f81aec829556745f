"""gunicorn settings for the API: `gunicorn -c python:imageactions.gunicorn_hooks ...`.

Only what the service itself needs from gunicorn lives here, its server hooks and its log
format; the rest of the command line (bind, workers, timeouts) stays where the service is
started (scripts/serve, the systemd unit in docs/deploy.md).

On a graceful stop (SIGTERM to the arbiter, which passes it to each worker), a worker finishes
its requests within --graceful-timeout, then is killed. An upload may outlast that, so a worker
told to stop first records it: the upload it receives ends at its next progress check with a
clear failure (the client creates a new action and uploads again), instead of being cut off.
"""

import signal

# gunicorn's own lines in the service's log format; the API writes its own line per request.
logger_class = "imageactions.logs.GunicornLogger"


def post_worker_init(worker):
    from imageactions.pipeline.stopping import request_stop

    graceful_exit = worker.handle_exit

    def stop_uploads_then_exit(signum, frame):
        request_stop(0)  # no grace: the rest of --graceful-timeout is for answering the client
        graceful_exit(signum, frame)

    signal.signal(signal.SIGTERM, stop_uploads_then_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn: reads in flight carry on
