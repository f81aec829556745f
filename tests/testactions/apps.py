"""Registers the test-only `test` action type."""

import os

from django.apps import AppConfig


class TestActionsConfig(AppConfig):
    name = "tests.testactions"
    label = "testactions"

    def ready(self):
        from imageactions.pipeline import ActionType, Step, register

        from . import steps

        register(
            ActionType(
                name="test",
                description="Test-only action whose steps behave as its input says.",
                alias="image-tests",
                input_serializer=steps.TestInputSerializer,
                steps=(
                    Step("prepare", "preparing", steps.run_behaviour),
                    Step(
                        "work",
                        "working",
                        steps.run_behaviour,
                        retries=2,
                        backoff=0.2,
                        # Per worker pool, for the tests of the time limit of a step.
                        timeout=int(os.environ.get("IMAGEACTIONS_TEST_WORK_TIMEOUT", "3600")),
                    ),
                    Step("wrap", "wrapping", steps.run_behaviour, applies=steps.wrap_applies),
                ),
                finish=steps.finish,
                clean_up=steps.clean_up,
                awaits_data=lambda data: data.get("await_data", False),
                receive_data=steps.receive_data,
            )
        )
