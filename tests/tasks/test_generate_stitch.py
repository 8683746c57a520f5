"""Windows rendered on Ray and stitched equal one direct full-length render."""

from __future__ import annotations

import pytest
import torch

from kernels.pixels import to_uint8
from kernels.windows import emission_order, plan_windows
from tasks.backends import Conditioning, WindowRequest
from tasks.backends.motion import MotionBackend
from tasks.generate import generate_windows, task_submitter
from tasks.stitch import stitch

pytestmark = pytest.mark.usefixtures("ray_cluster")

MOTION = task_submitter({"backend": "motion"}, gpus=0)

PARAMS = {
    "frames": 40, "fps": 10.0, "loop": True,
    "motion": {"amplitude": 0.04, "modes": 4, "max_hz": 3.0, "zoom": 0.05, "pan": [0.02, -0.01]},
}


def _conditioning(loop: bool) -> Conditioning:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 48, 64, generator=g)
    image = torch.nn.functional.avg_pool2d(image[None], 3, 1, 1)[0]  # some structure, not pure noise
    return Conditioning(item_id="probe", seed=5, image=image, mask=None, params={**PARAMS, "loop": loop})


@pytest.mark.parametrize(
    ("length", "overlap", "weighting", "circular"),
    [(8, 2, "cosine", False), (8, 2, "cosine", True), (16, 4, "linear", True), (7, 3, "gaussian", False),
     (12, 0, "flat", True), (40, 4, "flat", False)],
)
def test_stitched_windows_equal_direct_render(length, overlap, weighting, circular):
    cond = _conditioning(circular)
    n = PARAMS["frames"]
    direct = MotionBackend().generate(WindowRequest(0, tuple(range(n)), PARAMS["fps"]), cond)  # (T, 3, H, W)
    plan = plan_windows(n, length=length, overlap=overlap, circular=circular)
    requests = [
        WindowRequest(i, tuple((w.start + j) % n for j in range(w.length)), PARAMS["fps"]) for i, w in enumerate(plan)
    ]
    stream = ((i, r.pixels) for i, r in generate_windows(MOTION, cond, requests, emission_order(plan, n), in_flight=3))
    stitched = torch.cat(list(stitch(stream, plan, num_frames=n, weighting=weighting)))  # (T, H, W, 3) uint8
    assert stitched.shape == (n, 48, 64, 3)
    diff = (stitched.float() / 255 - direct.movedim(1, -1)).abs().max().item()
    assert diff <= 1 / 255
    # and bit-identical to quantising the direct render
    torch.testing.assert_close(stitched, to_uint8(direct), rtol=0, atol=0)


def test_frames_stream_before_all_windows_finish():
    cond = _conditioning(False)
    n = PARAMS["frames"]
    plan = plan_windows(n, length=8, overlap=2)
    requests = [WindowRequest(i, tuple(range(w.start, w.start + w.length)), 10.0) for i, w in enumerate(plan)]
    consumed = []

    def counting(stream):
        for pair in stream:
            consumed.append(pair[0])
            yield pair[0], pair[1].pixels

    # one window in flight: completion order is submission order, so this is deterministic
    stream = counting(generate_windows(MOTION, cond, requests, emission_order(plan, n), in_flight=1))
    first = next(stitch(stream, plan, num_frames=n, weighting="cosine"))
    assert consumed == [0]  # frames 0..5 are final once window 0 is in (window 1 starts at 6)
    assert len(first) == 6


def test_backend_error_fails_the_item_with_its_message():
    from tasks.errors import ItemError

    cond = Conditioning(item_id="x", seed=0, image=None, mask=None, params=PARAMS)
    stream = generate_windows(MOTION, cond, [WindowRequest(0, (0, 1), 10.0)], [0], in_flight=1)
    with pytest.raises(ItemError, match="needs an image"):
        list(stream)


def test_gpu_request_beyond_the_cluster_is_refused_up_front():
    from tasks.errors import ItemError
    from tasks.generate import Cluster

    cluster = Cluster(address="test", cpus=2, gpus=0)
    assert cluster.gpus_per_window("auto") == 0
    with pytest.raises(ItemError, match="has no GPU and no autoscaler node type with one"):
        cluster.gpus_per_window(1)
    assert Cluster(address="t", cpus=2, gpus=4).gpus_per_window("auto") == 1
    assert Cluster(address="t", cpus=2, gpus=4).slots(0.5) == 8
