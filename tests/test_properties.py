"""Property test (issue #10): random shapes, lengths given as strided / expanded / sliced / int32
tensors or lists, and costs laid out transposed, strided or expanded, on every CPU backend,
against the NumPy reference (values and gradients, float64)."""

import numpy as np
import torch
from helpers import reference_value_grad
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import s2dtw

LENGTH_FORMS = ("list", "tensor", "int32", "strided", "sliced", "expanded")
COST_LAYOUTS = ("contiguous", "transposed", "strided", "expanded")


def lengths_as(form: str, values: list[int], draw) -> object:
    """`values` (B,) in the given form; "expanded" replaces them by one repeated value."""
    if form == "list":
        return values
    if form == "int32":
        return torch.tensor(values, dtype=torch.int32)
    if form == "strided":  # every other element of a longer tensor, garbage in between
        interleaved = torch.tensor([v for value in values for v in (value, 10**6)])
        return interleaved[::2]
    if form == "sliced":
        offset = draw(st.integers(0, 3))
        return torch.cat([torch.full((offset,), -7), torch.tensor(values), torch.full((2,), 10**6)])[
            offset : offset + len(values)]
    if form == "expanded":
        return torch.tensor(values[:1]).expand(len(values))
    return torch.tensor(values)


def cost_as(layout: str, cost: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf, view): `view` equals `cost` (B, N, M) in the given memory layout."""
    if layout == "transposed":
        leaf = torch.tensor(cost.transpose(0, 2, 1).copy(), requires_grad=True)
        return leaf, leaf.transpose(1, 2)
    if layout == "strided":
        padded = np.zeros((cost.shape[0], 2 * cost.shape[1], cost.shape[2] + 1))
        padded[:, ::2, :-1] = cost
        leaf = torch.tensor(padded, requires_grad=True)
        return leaf, leaf[:, ::2, :-1]
    if layout == "expanded":  # every pair the same cost
        leaf = torch.tensor(cost[:1].copy(), requires_grad=True)
        return leaf, leaf.expand(cost.shape[0], -1, -1)
    leaf = torch.tensor(cost, requires_grad=True)
    return leaf, leaf


@st.composite
def problems(draw):
    batch, n, m = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x_form, y_form = draw(st.sampled_from(LENGTH_FORMS)), draw(st.sampled_from(LENGTH_FORMS))
    layout = draw(st.sampled_from(COST_LAYOUTS))
    x_values = draw(st.lists(st.integers(1, n), min_size=batch, max_size=batch))
    y_values = draw(st.lists(st.integers(1, m), min_size=batch, max_size=batch))
    x_lengths, y_lengths = lengths_as(x_form, x_values, draw), lengths_as(y_form, y_values, draw)
    seed = draw(st.integers(0, 2**31 - 1))
    cost = np.random.default_rng(seed).normal(size=(batch, n, m))
    if layout == "expanded":
        cost[:] = cost[:1]
    params = dict(gamma=draw(st.sampled_from([0.1, 0.7, 2.0])), smoothing=draw(st.sampled_from([None, 0.1, 0.5])),
                  threshold=draw(st.sampled_from([None, 0.5, -0.3])), bandwidth=draw(st.sampled_from([None, 1.5])))
    return cost, layout, x_lengths, y_lengths, params


def values_of(lengths: object, batch: int) -> np.ndarray:
    return np.asarray(lengths.tolist() if isinstance(lengths, torch.Tensor) else lengths)[:batch]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(problem=problems())
def test_every_layout_of_lengths_and_cost_matches_the_reference(cpu_backend, problem):
    backend = cpu_backend
    cost, layout, x_lengths, y_lengths, params = problem
    leaf, view = cost_as(layout, cost)
    try:
        value = s2dtw.s2dtw(cost=view, x_lengths=x_lengths, y_lengths=y_lengths, backend=backend, **params)
    except ValueError as err:
        assume("cuts every path off" not in str(err))  # an unreachable band is an error, checked elsewhere
        raise
    (grad,) = torch.autograd.grad(value.sum(), view)
    batch = cost.shape[0]
    want_value, want_grad = reference_value_grad(cost, values_of(x_lengths, batch), values_of(y_lengths, batch),
                                                 **params)
    np.testing.assert_allclose(value.detach().numpy(), want_value, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(grad.numpy(), want_grad, rtol=1e-9, atol=1e-11)
