from pydantic import BaseModel, ConfigDict

from chains.steps import step


class Lock:
    pass


class Params(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    lock: Lock = Lock()


@step("shop.locked", params=Params)
def locked(params, previous, context):
    return previous
