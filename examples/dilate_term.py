#!/usr/bin/env python
"""A differentiable soft alignment: DILATE's temporal distortion term and a gradient penalty (docs/second_order.md).

    python examples/dilate_term.py

Fits a predicted sequence x to a target y by gradient descent on soft-DTW's shape term plus DILATE's temporal
term T = sum_ij A_ij (i - j)^2 / (N M) (Le Guen & Thome, NeurIPS 2019), A the expected alignment d value / d C taken
with create_graph=True, so that T's gradient (one Hessian-vector product per pair, inside the double backward)
reaches x. Prints both terms as they fall, then checks T's gradient against a central difference.
"""

from __future__ import annotations

import torch

import s2dtw


def dilate_terms(x: torch.Tensor, y: torch.Tensor, gamma: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-DTW shape term (B,) and temporal distortion term (B,) of x (B, N, d) against y (B, M, d)."""
    cost = (x[:, :, None] - y[:, None]).pow(2).sum(-1)  # squared Euclidean, (B, N, M): differentiable in x
    value = s2dtw.soft_dtw(cost=cost, gamma=gamma)
    # The alignment must stay in the graph: soft_alignment() returns it detached, so take it here.
    (alignment,) = torch.autograd.grad(value.sum(), cost, create_graph=True)
    n, m = cost.shape[1:]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(m), indexing="ij")
    omega = ((i - j) ** 2).to(cost.dtype) / (n * m)  # normalised as DILATE's code does
    return value, (alignment * omega).sum((1, 2))


def main(steps: int = 61) -> dict[str, float]:
    """Trains, prints, and returns the first and last temporal terms and the gradient check's two sides."""
    torch.manual_seed(0)
    t = torch.linspace(0, 6.28, 24, dtype=torch.float64)
    y = torch.sin(t).reshape(1, -1, 1)
    x = torch.sin(t + 1.0).reshape(1, -1, 1).requires_grad_()  # a shifted prediction
    optimiser = torch.optim.Adam([x], lr=0.05)
    alpha = 0.5  # DILATE's weight between the shape and the temporal term
    temporals = []
    for step in range(steps):
        shape, temporal = dilate_terms(x, y)
        loss = (alpha * shape + (1 - alpha) * temporal).sum()
        optimiser.zero_grad()
        loss.backward()  # through the double backward: the temporal term's gradient is an HVP
        optimiser.step()
        temporals.append(temporal.item())
        if step % 20 == 0:
            print(f"step {step:3d}: shape {shape.item():8.4f}  temporal {temporal.item():8.4f}")

    # The gradient of T against a central difference along a random direction.
    z = torch.randn_like(x)
    (grad,) = torch.autograd.grad(dilate_terms(x, y)[1].sum(), x)
    h = 1e-6
    with torch.no_grad():
        up, down = (x + h * z).requires_grad_(), (x - h * z).requires_grad_()
    with torch.enable_grad():
        numeric = (dilate_terms(up, y)[1] - dilate_terms(down, y)[1]).sum() / (2 * h)
    analytic, numeric = float((grad * z).sum().detach()), float(numeric.detach())
    print(f"dT/dx . z: autograd {analytic:.8f}, central difference {numeric:.8f}")

    # A gradient penalty on the features: |d value / d x|^2, itself differentiated.
    (g,) = torch.autograd.grad(s2dtw.soft_dtw(x, y, gamma=0.1).sum(), x, create_graph=True)
    (penalty_grad,) = torch.autograd.grad(g.pow(2).sum(), x)
    print(f"gradient penalty's gradient: norm {penalty_grad.norm():.6f}")
    return {"first temporal": temporals[0], "last temporal": temporals[-1],
            "autograd": analytic, "central difference": numeric}


if __name__ == "__main__":
    main()
