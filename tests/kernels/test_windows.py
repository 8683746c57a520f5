import ast
import math
from pathlib import Path

import pytest
import torch

from kernels.windows import (
    WEIGHTINGS,
    Window,
    coverage,
    emission_order,
    plan_windows,
    redundancy,
    window_indices,
    window_weights,
)

COMBOS = [
    (t, length, overlap)
    for t in range(1, 41)
    for length in range(1, 13)
    for overlap in range(length)
]


def _covered(plan, t):
    counts = [0] * t
    for w in plan:
        for j in range(w.length):
            counts[(w.start + j) % t] += 1
    return counts


@pytest.mark.parametrize("circular", [False, True])
def test_plans_cover_every_frame_with_full_windows_and_enough_overlap(circular):
    for t, length, overlap in COMBOS:
        plan = plan_windows(t, length=length, overlap=overlap, circular=circular)
        case = (t, length, overlap, circular, plan)
        assert min(_covered(plan, t)) >= 1, case
        if t <= length:
            assert plan == [Window(0, t)], case
            continue
        assert all(w.length == length for w in plan), case
        assert plan[0].start == 0 or circular and plan[0].start < t // len(plan), case  # circular: shifted < a spacing
        starts = [w.start for w in plan]
        assert starts == sorted(set(starts)), case
        if circular:
            assert len(plan) == math.ceil(t / (length - overlap)), case
            gaps = [b - a for a, b in zip(starts, starts[1:] + [starts[0] + t])]
        else:
            assert plan[-1].start + length == t, case  # last window flush with the end
            gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert all(length - gap >= overlap for gap in gaps), case  # incl. last -> first when circular


def test_linear_plan_known_answer():
    assert plan_windows(20, length=8, overlap=2) == [Window(0, 8), Window(6, 8), Window(12, 8)]
    assert plan_windows(21, length=8, overlap=2) == [Window(0, 8), Window(6, 8), Window(12, 8), Window(13, 8)]
    assert plan_windows(5, length=8, overlap=2, circular=True) == [Window(0, 5)]


def test_window_indices_wrap_and_coverage_redundancy():
    plan = plan_windows(10, length=4, overlap=1, circular=True)
    assert window_indices(plan[-1], 10).tolist() == [7, 8, 9, 0]
    assert window_indices(plan[-1], 10).dtype == torch.int64
    assert coverage(plan, 10).tolist() == [2, 1, 2, 2, 1, 2, 1, 2, 2, 1]
    assert redundancy(plan, 10) == pytest.approx(1.6)
    assert coverage(plan, 10).sum().item() == sum(w.length for w in plan)


def test_emission_order():
    linear = plan_windows(50, length=8, overlap=3)
    assert emission_order(linear, 50) == list(range(len(linear)))
    circ = plan_windows(50, length=8, overlap=3, circular=True)  # starts 1, 6, …, 46
    order = emission_order(circ, 50)
    assert order == [len(circ) - 1, *range(len(circ) - 1)]  # the wrapping window covers frame 0


@pytest.mark.parametrize(("t", "length", "overlap", "starts"), [
    (64, 8, 4, list(range(2, 64, 4))),  # edges at 2, 6, …: the wrap two frames from either
    (50, 8, 3, list(range(1, 50, 5))),  # edges at 1, 4, 6, 9, …: one frame clear
    (144, 24, 8, list(range(4, 144, 16))),  # loops.yaml: edges at 4, 12, 20, …: four frames clear
])
def test_a_circular_plan_keeps_the_wrap_away_from_window_edges(t, length, overlap, starts):
    plan = plan_windows(t, length=length, overlap=overlap, circular=True)
    assert [w.start for w in plan] == starts
    edges = {w.start % t for w in plan} | {(w.start + w.length) % t for w in plan}
    assert 0 not in edges  # no window starts at frame 0 or ends at the last frame


@pytest.mark.parametrize("kind", WEIGHTINGS)
@pytest.mark.parametrize("length", [1, 2, 3, 8, 17])
def test_weights_positive_symmetric_peaked(kind, length):
    w = window_weights(length, kind)
    assert w.shape == (length,) and w.dtype == torch.float32
    assert bool((w > 0).all())
    torch.testing.assert_close(w, w.flip(0))
    assert float(w.max()) <= 1.0 + 1e-6
    assert float(w[length // 2]) == pytest.approx(float(w.max()))


def test_weights_known_values_and_dtype():
    torch.testing.assert_close(window_weights(5, "linear"), torch.tensor([1 / 3, 2 / 3, 1.0, 2 / 3, 1 / 3]))
    torch.testing.assert_close(window_weights(3, "flat", dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    cos = window_weights(4, "cosine", dtype=torch.float64)
    torch.testing.assert_close(cos, torch.sin(math.pi * (torch.arange(4, dtype=torch.float64) + 0.5) / 4) ** 2)
    g = window_weights(7, "gaussian")
    torch.testing.assert_close(g[0], torch.tensor(math.exp(-0.5 * (3 / (7 / 6)) ** 2)))  # sigma = L / 6


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_frames=20, length=16, overlap=16), r"overlap must be < length \(16\), got 16"),
        (dict(num_frames=0, length=16, overlap=4), r"num_frames must be >= 1, got 0"),
        (dict(num_frames=20, length=0, overlap=0), r"length must be >= 1, got 0"),
        (dict(num_frames=20, length=8, overlap=-1), r"overlap must be >= 0, got -1"),
        (dict(num_frames=20.0, length=8, overlap=2), r"num_frames must be an int, got 20.0"),
    ],
)
def test_plan_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        plan_windows(kwargs.pop("num_frames"), **kwargs)


def test_weight_and_index_errors():
    with pytest.raises(ValueError, match=r"kind must be one of \('flat', 'linear', 'cosine', 'gaussian'\), got 'hann'"):
        window_weights(8, "hann")
    with pytest.raises(ValueError, match=r"window.length must be <= num_frames \(4\), got 5"):
        window_indices(Window(0, 5), 4)


def test_kernels_import_only_torch_numpy_numba_and_stdlib():
    allowed = {"torch", "numpy", "numba", "math", "hashlib", "typing", "functools", "collections", "__future__", "kernels"}
    for path in (Path(__file__).parents[2] / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert {n.split(".")[0] for n in names} <= allowed, (path.name, names)
