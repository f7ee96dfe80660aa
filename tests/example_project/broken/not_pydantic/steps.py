from chains.steps import step


class Params:
    factor = 2


@step("shop.plain", params=Params)
def plain(params, previous, context):
    return previous
