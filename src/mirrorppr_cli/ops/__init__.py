"""Named, parametric structural operations (the paper's LLW catalog) and their composition."""

from .catalog import CATALOG, Operation, get_operation
from .compose import OpRequest, parse_op, plan_warp

__all__ = ["CATALOG", "Operation", "OpRequest", "get_operation", "parse_op", "plan_warp"]
