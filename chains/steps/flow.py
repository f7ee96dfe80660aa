"""Flow steps: control the pace of a chain rather than compute."""
import time
from typing import Any

from pydantic import Field

from chains.steps.base import Params, StepFailed
from chains.steps.context import StepContext
from chains.steps.registry import step


class WaitParams(Params):
    seconds: float = Field(ge=0, le=3600, description="How long to wait (within the time limit).")


@step("flow.wait", params=WaitParams, queue="celery", produces="input",
      description="Wait a number of seconds, then pass the previous result on.")
def wait(params: WaitParams, previous: Any, context: StepContext) -> Any:
    """Wait, then pass the previous result on unchanged."""
    if params.seconds:
        time.sleep(params.seconds)
    return previous



# The flow steps that pause their run: the worker starts them, and the run goes on (published
# again from the next stage) once a person decides or the child run ends. Each is alone in its
# stage; services.workflows carries them out.
APPROVAL = "flow.approval"
SUBCHAIN = "flow.chain"
PAUSING = frozenset({APPROVAL, SUBCHAIN})


class ApprovalParams(Params):
    message: str = Field("", max_length=2000, description="What the approvers are asked.")
    timeout_seconds: int = Field(
        86400, ge=1, le=30 * 86400,
        description="With no decision by then the run fails with 'approval timed out'.")
    approvers_group: str = Field(
        "", max_length=150,
        description="Only members of this Django group (with chains.approve_run) may decide; "
        "empty: anyone with that permission.")


@step(APPROVAL, params=ApprovalParams, queue="celery", produces="input",
      description="Wait for a person to approve (the run goes on with this stage's input) or "
      "reject (the run fails). Holds no worker while it waits.")
def approval(params: ApprovalParams, previous: Any, context: StepContext) -> Any:
    raise StepFailed("flow.approval runs only as a step of a run")


class SubchainParams(Params):
    chain: str = Field(min_length=1, max_length=200, description="The name of the chain to run.")
    inputs: Any = Field(None, description="The child run's inputs; empty: this stage's input.")


@step(SUBCHAIN, params=SubchainParams, queue="celery", produces="any",
      description="Run another chain as a child run and take its result. Holds no worker "
      "while the child runs.")
def subchain(params: SubchainParams, previous: Any, context: StepContext) -> Any:
    raise StepFailed("flow.chain runs only as a step of a run")
