"""The rule that chooses among candidate prunings, on host or traced arrays (the one home of the rule).

A candidate is eligible when its validation accuracy is within tau points of the original's; among eligible ones,
fewer parameters win, then the higher validation accuracy. `select` applies it to the agent's episodes, `search`
to its proposals; both import it from here (the module sits below both).
"""

from __future__ import annotations


def within_tolerance(acc, acc0, tau):
    """Whether a validation accuracy `acc` is within `tau` points of the original's `acc0` (fractions)."""
    return 100.0 * (acc - acc0) >= -tau


def better(n_params, acc, best_params, best_acc):
    """Whether a candidate beats the best so far: fewer parameters, or as many and a higher validation accuracy."""
    return (n_params < best_params) | ((n_params == best_params) & (acc > best_acc))
