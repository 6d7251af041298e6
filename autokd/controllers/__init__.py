"""Controllers: ways of producing candidates that all tell results into one Optuna study."""

from __future__ import annotations

from autokd.controllers.base import BaseController, Budget, Progress, parse_budget
from autokd.registry import Registry

__all__ = ["STRATEGIES", "BaseController", "Budget", "Progress", "parse_budget"]

# strategy name -> module that provides it (imported on demand: nni is an optional extra)
STRATEGIES: Registry[str] = Registry("strategy")
STRATEGIES.register("optuna", "autokd.controllers.optuna_search")
STRATEGIES.register("asha", "autokd.controllers.asha")
STRATEGIES.register("darts", "autokd.controllers.darts")
STRATEGIES.register("nni", "autokd.controllers.nni_search")
