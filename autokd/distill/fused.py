"""Hinton KD plus cross entropy in one autograd node: the recipe most searches train with.

Why: on a small student the loss ``w_kl · T² · KL(q_t ‖ softmax(z/T)) + w_ce · CE(z, y)`` is a
dozen tiny tensor ops forward and as many backward, each mostly dispatch overhead: about
0.2 ms of a ~1.3 ms training step of a 3k-parameter CNN at batch 64. Its gradient has a closed
form, ``∂/∂z = [w_kl · T · (softmax(z/T) − q_t) + w_ce · (softmax(z) − y')] / B`` (``y'`` the
label-smoothed one-hot), so one forward computes value and gradient together and the backward
is a single multiply. Values and gradients equal the term-by-term path
(``KLDivergenceLoss`` + ``HardCELoss``) to float rounding; the tests hold them to 1e-6.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["kd_cross_entropy"]


class _KDCrossEntropy(torch.autograd.Function):
    """Forward returns the scalar loss; the gradient w.r.t. the logits is saved from it."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, probs: Tensor, targets: Tensor, T: float,
                w_kl: float, w_ce: float, smoothing: float) -> Tensor:
        z = logits.detach().float()  # (B, K)
        n, k = z.shape
        rows, y = torch.arange(n, device=z.device), targets.long()
        log_p_t = F.log_softmax(z / T, dim=-1)  # (B, K)
        q = probs.float()  # (B, K), rows sum to 1
        # KL(q ‖ p_T) = Σ q log q − Σ q log p_T, with 0 · log 0 = 0 (as kl_div does)
        kl = torch.special.xlogy(q, q).sum() - torch.dot(q.view(-1), log_p_t.view(-1))
        log_p = F.log_softmax(z, dim=-1)  # (B, K)
        # CE against y' = (1 - ε) one_hot(y) + ε / K, without building y'
        ce = log_p[rows, y].sum() * (smoothing - 1.0)
        if smoothing:
            ce = ce - log_p.sum() * (smoothing / k)
        loss = (kl * (w_kl * T * T) + ce * w_ce) / n
        grad = log_p_t.exp_().sub_(q).mul_(w_kl * T / n)  # (B, K)
        if w_ce:
            p = log_p.exp_().mul_(w_ce / n)
            p[rows, y] -= w_ce * (1.0 - smoothing) / n
            grad.add_(p.sub_(w_ce * smoothing / (k * n)) if smoothing else p)
        ctx.save_for_backward(grad.to(logits.dtype))
        return loss

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None


def kd_cross_entropy(logits: Tensor, probs: Tensor, targets: Tensor, T: float, w_kl: float,
                     w_ce: float, smoothing: float = 0.0) -> Tensor:
    """``mean_b [w_kl · T² · KL(probs_b ‖ softmax(logits_b / T)) + w_ce · CE_ε(logits_b, y_b)]``.

    Args:
        logits: Student logits ``(B, K)``.
        probs: Teacher probabilities at ``T``, ``(B, K)`` (no gradient flows to them).
        targets: Class indices ``(B,)``.
        T: Temperature of the soft term.
        w_kl, w_ce: The recipe's weights of the two terms.
        smoothing: Label smoothing ``ε`` of the hard term.
    """
    return _KDCrossEntropy.apply(logits, probs, targets, float(T), float(w_kl), float(w_ce),
                                 float(smoothing))
