"""A worker that ends a step runs the action's next step itself when that step is for its own
pool (the carry_on transition), instead of queueing it for whichever worker comes: each step is
still a run of its own, with its own token, timeline entry and time limit."""

from imageactions.models import ActionEvent
from tests.conftest import wait_for_action
from tests.runner.conftest import create_test_action, step_runs


def test_steps_of_one_pool_run_back_to_back_in_the_worker_that_took_the_first(alice, workers):
    action_id = create_test_action(alice)
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "success", action.message
    runs = step_runs(action_id)
    assert [step for step, _, _ in runs] == ["prepare", "work", "wrap"]
    assert len({pid for _, pid, _ in runs}) == 1, runs
    events = ActionEvent.objects.filter(action_id=action_id).order_by("started_at")
    assert [(e.step, e.outcome, e.attempt) for e in events] == [
        ("prepare", "success", 1),
        ("work", "success", 1),
        ("wrap", "success", 1),
    ]


def test_a_step_carried_on_keeps_its_own_time_limit(alice, start_workers):
    # The first step's task may run an hour; the work step only 2 s, and it would take 8.
    workers = start_workers(env={"IMAGEACTIONS_TEST_WORK_TIMEOUT": "2"})
    action_id = create_test_action(alice, work={"kind": "quiet", "seconds": 8})
    action = wait_for_action(action_id, timeout=30, workers=workers)
    assert action.status == "failure", action.message
    assert "work step did not finish within its time limit of 2 seconds" in action.message
    assert action.error_code == "timed_out"
    (_, first, _), (_, second, _) = step_runs(action_id)
    assert first == second, "the work step was carried on by the worker that ran prepare"
