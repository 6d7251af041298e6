"""Controllers: ways of producing candidates that all tell results into one Optuna study."""

from __future__ import annotations

from autokd.controllers.base import BaseController, Budget, Progress, count_done, parse_budget

__all__ = ["BaseController", "Budget", "Progress", "count_done", "parse_budget", "STRATEGIES"]

# strategy name -> module that provides it (imported lazily: nni is an optional extra)
STRATEGIES = {
    "optuna": "autokd.controllers.optuna_search",
    "darts": "autokd.controllers.darts",
    "nni": "autokd.controllers.nni_search",
}
