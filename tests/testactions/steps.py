"""Steps of the test action type; each run leaves a marker file so tests can count runs."""

import os
import time

from django.conf import settings
from rest_framework import serializers

from imageactions.pipeline import RetryableStepError, StepError

KINDS = ["ok", "fail", "raise", "sleep", "progress", "flaky", "quiet"]


class BehaviourSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=KINDS, default="ok")
    seconds = serializers.FloatField(default=0, min_value=0, max_value=600)
    message = serializers.CharField(default="the test step failed as asked")
    failures = serializers.IntegerField(default=1, min_value=0)


class TestInputSerializer(serializers.Serializer):
    prepare = BehaviourSerializer(required=False)
    work = BehaviourSerializer(required=False)
    wrap = BehaviourSerializer(required=False)
    skip_wrap = serializers.BooleanField(default=False)
    await_data = serializers.BooleanField(default=False)
    finish_raises = serializers.BooleanField(default=False)
    clean_up_raises = serializers.BooleanField(default=False)


def runs_dir():
    path = settings.DATA_DIR / "test-runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_run(action, name):
    marker = runs_dir() / f"{action.pk}.{name}.{os.getpid()}.{time.monotonic_ns()}"
    marker.write_text(str(os.getpid()))


def wrap_applies(action):
    return not action.input.get("skip_wrap")


def run_behaviour(action, ctx):
    name = ctx.step.name
    record_run(action, name)
    behaviour = action.input.get(name) or {"kind": "ok"}
    kind = behaviour.get("kind", "ok")
    action.state.setdefault("ran", []).append(name)
    if kind == "fail":
        raise StepError(behaviour.get("message", "failed"))
    if kind == "raise":
        raise RuntimeError("unexpected test error with internal details")
    if kind == "flaky":
        failed = action.state.setdefault("flaky_failures", 0)
        if failed < behaviour.get("failures", 1):
            action.state["flaky_failures"] = failed + 1
            raise RetryableStepError(f"transient failure {failed + 1}")
    if kind == "quiet":  # busy without a progress call, like a stuck subprocess
        time.sleep(behaviour.get("seconds", 0))
    if kind in ("sleep", "progress"):
        seconds = behaviour.get("seconds", 0)
        total = max(1, int(seconds * 10))
        for done in range(total + 1):
            ctx.progress(done * 1000, total * 1000)
            time.sleep(0.1)
    (ctx.scratch / f"{name}.out").write_text("scratch data")


def receive_data(action, stream, ctx):
    received = 0
    with open(ctx.scratch / "received", "wb") as out:
        while chunk := stream.read(1 << 16):
            out.write(chunk)
            received += len(chunk)
            ctx.progress(received)
    action.state["received"] = received


def finish(action, ctx):
    if action.input.get("finish_raises"):
        raise RuntimeError("unexpected test error in finish")
    action.result["steps_ran"] = action.state.get("ran", [])
    action.result["received"] = action.state.get("received")


def clean_up(action, ctx):
    if action.input.get("clean_up_raises"):
        raise RuntimeError("unexpected test error in clean_up")
    (runs_dir() / f"{action.pk}.cleaned").write_text("cleaned")
