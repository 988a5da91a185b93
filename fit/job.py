"""(being built)"""
from fruits.errors import FruitsError


def configure(parser):
    pass


def run(args):
    raise FruitsError("not built yet")
