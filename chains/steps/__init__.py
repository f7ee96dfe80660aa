"""The step registry: the only way a step names work. Key -> step type (schema + function);
chains.tasks turns each row into a Celery task named chains.step.<key>.

Adding a step type: write its function and params model in a family module, then add one
line here.
"""
from chains.steps import data, flow, io, math
from chains.steps.base import ParamsInvalid, StepContext, StepFailed, StepType

STEP_TYPES: dict[str, StepType] = {
    step.key: step
    for step in (
        math.add,
        math.subtract,
        math.multiply,
        math.divide,
        math.power,
        data.load,
        data.clean,
        data.transform,
        data.analyze,
        io.stat,
        io.read,
        io.checksum,
        io.copy,
        io.compress,
        flow.wait_step,
    )
}

__all__ = ["STEP_TYPES", "ParamsInvalid", "StepContext", "StepFailed", "StepType"]
