"""Step types: the public API for declaring them, and the registry of those declared.

    from pydantic import BaseModel
    from chains.steps import step, StepContext, StepFailed

    class DoubleParams(BaseModel):
        factor: int = 2

    @step("shop.double", params=DoubleParams, description="Multiply the previous result.")
    def double(params: DoubleParams, previous, context: StepContext):
        return previous * params.factor

Put such declarations in a `steps` module of any installed app: every one is imported at
startup (web, worker and beat). The built-in families below are declared the same way.
"""
from chains.steps.base import ParamsInvalid, StepFailed, StepType
from chains.steps.context import StepContext
from chains.steps.registry import STEP_TYPES, on_register, register_task, step

# The built-in families declare themselves on import, in this order.
from chains.steps import math, data, io, flow  # noqa: E402, F401, I001  isort: skip

__all__ = ["STEP_TYPES", "ParamsInvalid", "StepContext", "StepFailed", "StepType",
           "on_register", "register_task", "step"]
