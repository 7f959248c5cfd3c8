"""The memory planner: pure and fast. Settings + hardware + model spec -> Plan."""

from mineru_fit.planner.core import choose, make_report, plan_levels, validate
from mineru_fit.planner.inputs import Hardware, PlanRequest
from mineru_fit.planner.levels import Level
from mineru_fit.planner.plan import Plan, PlanReport

__all__ = ["Hardware", "Level", "Plan", "PlanReport", "PlanRequest", "choose", "make_report", "plan_levels", "validate"]
