"""Flow steps: control the pace of a chain rather than compute."""
import time
from typing import Any

from pydantic import Field

from chains.steps.base import Params
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

