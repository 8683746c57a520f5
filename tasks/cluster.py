"""Reaching a Ray cluster, and what it can run: resources are declared, not sampled.

:func:`connect` joins (or starts) the cluster once per process and turns Ray's failures
into one line that names the cause and the fix (Ray's client extra missing, nothing
listening at the address, a missing or wrong auth token).

:class:`Cluster` knows what the cluster *can ever* have, not just what is up now: GPUs
present, GPUs the autoscaler may add (its node types), or what ``FRAMEFOLD_CLUSTER_GPUS``
declares. ``gpus: auto`` asks for a GPU per window and actor whenever the cluster can
have one, so pending GPU work is what makes the autoscaler add GPU nodes from zero; CPU
is the fallback only on a cluster that can have no GPU at all. A request that no node
can ever satisfy is refused before any work starts (Ray would wait for it forever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import ray

from tasks.errors import ClusterError, ItemError

log = logging.getLogger(__name__)

# Seconds between attempts when a Ray Client server fails to start for this driver.
CLIENT_INIT_RETRY_S = (5, 15)

# Most window slots one run plans for, however many GPUs an unbounded node type could add.
MAX_SLOTS = 256
# Seconds between "waiting for GPU nodes" notes while the autoscaler brings nodes up.
WAIT_NOTE_EVERY_S = 30.0
HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster this process is connected to.

    ``gpus`` counts the GPUs the cluster has or can get (present now, plus what the
    autoscaler's node types may add, or ``FRAMEFOLD_CLUSTER_GPUS``); ``gpus_per_node`` is
    the most any one node has or can have (None: not known, taken as ``gpus``);
    ``gpu_source`` says where the figure comes from: ``present``, ``autoscaler``,
    ``FRAMEFOLD_CLUSTER_GPUS`` or ``none``."""

    address: str
    cpus: float
    gpus: float
    gpus_per_node: float | None = None
    gpu_source: str = "present"
    gpus_now: float | None = None
    gpu_wait_s: float = 600.0
    _waits: dict = field(default_factory=dict, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    def __getstate__(self) -> dict:  # sent to items' finishing tasks: the facts, not the lock and waits
        return {k: v for k, v in self.__dict__.items() if k not in ("_waits", "_lock")}

    def __setstate__(self, state: dict) -> None:
        for k, v in {**state, "_waits": {}, "_lock": threading.Lock()}.items():
            object.__setattr__(self, k, v)

    @property
    def largest_node_gpus(self) -> float:
        return self.gpus if self.gpus_per_node is None else self.gpus_per_node

    def gpus_per_window(self, requested: float | str) -> float:
        """Resolve a manifest's ``gpus`` (a number or ``auto``) against what this cluster
        can ever have: ``auto`` is one GPU whenever some node has or can get one."""
        if requested == "auto":
            return 1.0 if self.largest_node_gpus >= 1 else 0.0
        requested = float(requested)
        if requested > self.largest_node_gpus:
            raise ItemError(self._never(requested))
        return requested

    def _never(self, requested: float) -> str:
        if self.gpu_source != "FRAMEFOLD_CLUSTER_GPUS" and self.largest_node_gpus == 0:
            has = "has no GPU and no autoscaler node type with one"
        elif self.gpu_source == "FRAMEFOLD_CLUSTER_GPUS":
            has = f"is declared to have {self.gpus:g} GPU(s) (FRAMEFOLD_CLUSTER_GPUS)"
        else:
            has = f"has no node ({self.gpu_source}) with more than {self.largest_node_gpus:g} GPU(s)"
        return (f"gpus: {requested:g} per window, but the Ray cluster at {self.address} {has}; "
                f"set gpus: auto (or 0), or point RAY_ADDRESS at a GPU cluster")

    def gone(self) -> str | None:
        """Why this cluster's head no longer answers ("connection refused on HOST:PORT"), or
        None while it does (or when its address cannot be probed). Asked after an item failed
        for no reason of its own: a lost head fails every item after it the same way."""
        target = _host_port(self.address)
        if target is None:
            return None
        host, port = target
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as e:
            what = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or type(e).__name__)
            return f"{what} on {host}:{port}"
        answer = _ask(host, port, "client" if self.address.startswith("ray://") else "gcs", timeout=5)
        return f"no answer from {host}:{port}" if answer == "unavailable" else None

    def check(self, requests: Iterable[tuple[str, float | str]]) -> None:
        """Refuse up front (:class:`ClusterError`) the first ``(item id, gpus)`` that no node
        of this cluster can ever satisfy: Ray would keep such work pending forever."""
        for item_id, requested in requests:
            try:
                self.gpus_per_window(requested)
            except ItemError as e:
                raise ClusterError(f"item {item_id!r}: {e}") from None

    def fallback(self, requested: float | str) -> bool:
        """Whether ``gpus: auto`` falls back to CPU (only when the cluster can have no GPU)."""
        return requested == "auto" and self.gpus_per_window(requested) == 0

    def slots(self, gpus_per_window: float) -> int:
        """How many windows can run at once once the cluster has grown to its size."""
        if gpus_per_window > 0:
            return max(1, min(MAX_SLOTS, int(self.gpus // gpus_per_window)))
        return max(1, int(self.cpus))

    def wait_for_gpus(self, gpus: float, *, timeout: float | None = None, note: Callable[[str], None] | None = None) -> None:
        """Block until a node with ``gpus`` GPUs is up, asking the autoscaler for one (a
        pending one-off task that needs them) and noting "waiting for GPU nodes" meanwhile;
        :class:`ItemError` after ``timeout`` seconds (default: ``gpu_wait_s``). One wait per GPU count: the items of
        a run share it, and its outcome."""
        if gpus <= 0:
            return
        with self._lock:
            gate = self._waits.get(gpus)
            if gate is None:
                gate = self._waits[gpus] = _Wait()
                owner = True
            else:
                owner = False
        if owner:
            try:
                _wait_for_node(self.address, gpus, self.gpu_wait_s if timeout is None else timeout,
                               note or (lambda text: None))
            except ItemError as e:
                gate.error = e
            finally:
                gate.done.set()
        gate.done.wait()
        if gate.error is not None:
            raise ItemError(str(gate.error))

    def describe(self, node_ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """The resources of the nodes ``node_ids`` (ids as Ray reports them), for provenance:
        CPU, GPU, memory and custom resources (the ``node:<ip>`` markers left out)."""
        wanted = set(node_ids)
        try:
            nodes = ray.nodes()
        except Exception:  # noqa: BLE001 - provenance must not fail an item
            log.warning("could not list the cluster's nodes", exc_info=True)
            return {}
        return {
            n["NodeID"]: {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
            for n in nodes if n["NodeID"] in wanted
        }


@dataclass
class _Wait:
    done: threading.Event = field(default_factory=threading.Event)
    error: ItemError | None = None


@ray.remote(num_cpus=0, max_calls=0)
def _gpu_probe() -> str:
    return ray.get_runtime_context().get_node_id()


def _wait_for_node(address: str, gpus: float, timeout: float, note: Callable[[str], None]) -> None:
    if _largest_live_gpus() >= gpus:
        return
    t0 = time.monotonic()
    message = f"waiting for GPU nodes: a node with {gpus:g} GPU(s) to join the Ray cluster at {address} " \
              f"(gives up after {timeout:g} s, FRAMEFOLD_GPU_WAIT_S)"
    log.warning("%s", message)
    note(message)
    probe = _gpu_probe.options(num_gpus=gpus).remote()  # pending GPU demand: the autoscaler adds a node
    last = t0
    try:
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise ItemError(
                    f"no node with {gpus:g} GPU(s) joined the Ray cluster at {address} within {timeout:g} s "
                    f"(FRAMEFOLD_GPU_WAIT_S); check the autoscaler (`ray status`, its monitor log) and the "
                    f"GPU quota, or set FRAMEFOLD_GPU_WAIT_S higher")
            ready, _ = ray.wait([probe], timeout=min(5.0, left))
            if ready:
                ray.get(probe)
                waited = time.monotonic() - t0
                log.warning("GPU node up after %.0f s", waited)
                note(f"GPU node up after {waited:.0f} s")
                return
            if time.monotonic() - last >= WAIT_NOTE_EVERY_S:
                last = time.monotonic()
                note(f"still waiting for GPU nodes ({last - t0:.0f} s of {timeout:g} s)")
    finally:
        if not ray.wait([probe], timeout=0)[0]:
            ray.cancel(probe, force=True)


def _largest_live_gpus() -> float:
    return max((float(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes() if n.get("Alive")), default=0.0)


# --- what the autoscaler may add ------------------------------------------------------------------
@ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001})
def _node_types() -> list[dict] | None:
    """On the head node: the node types the autoscaler may launch, as
    ``[{"name", "resources", "max"}]`` (``max`` -1: unbounded), or None when this cluster
    has no autoscaler. Read from the GCS's cluster config (autoscaler v2 reports it), else
    from the config file of this cluster's autoscaler monitor (``ray up``,
    ``ray start --autoscaling-config``)."""
    try:
        import ray._private.state as state

        config = state.state.get_cluster_config()
        if config is not None and config.node_group_configs:
            return [{"name": g.name, "resources": dict(g.resources), "max": int(g.max_count)}
                    for g in config.node_group_configs]
    except Exception:  # noqa: BLE001 - older or newer Ray: try the monitor's file
        pass
    gcs = ray.get_runtime_context().gcs_address
    path = _monitor_config_path(gcs)
    if path is None:
        return None
    import yaml

    with open(path) as f:
        config = yaml.safe_load(f)
    head = config.get("head_node_type")
    limit = int(config.get("max_workers", -1))
    return [{"name": name, "resources": dict(t.get("resources") or {}),
             "max": min(int(t.get("max_workers", limit)), limit) if limit >= 0 else int(t.get("max_workers", -1))}
            for name, t in (config.get("available_node_types") or {}).items() if name != head]


def _monitor_config_path(gcs_address: str) -> str | None:
    """The ``--autoscaling-config`` of the autoscaler monitor serving ``gcs_address`` (on this machine)."""
    port = gcs_address.rsplit(":", 1)[-1]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if not any(a.endswith("autoscaler/_private/monitor.py") or a.endswith("autoscaler/v2/monitor.py") for a in args):
            continue
        opts = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
        if opts.get("--gcs-address", "").rsplit(":", 1)[-1] != port:
            continue
        path = opts.get("--autoscaling-config")
        return os.path.expanduser(path) if path else None
    return None


def _capacity(declared: float | None) -> tuple[float, float | None, str]:
    """``(GPUs the cluster can have, most on one node or None, where that comes from)``."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    now = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    if declared is not None:
        return declared, None, "FRAMEFOLD_CLUSTER_GPUS"
    try:
        types = ray.get(_node_types.remote(), timeout=60)
    except Exception:  # noqa: BLE001 - the cluster still runs what is present
        log.warning("could not read the autoscaler's node types; counting the GPUs present only", exc_info=True)
        types = None
    launchable = [t for t in types or [] if float(t["resources"].get("GPU", 0)) > 0 and t["max"] != 0]
    if launchable:
        # nodes up now are of these types (or the head): count the larger, never both, so that
        # no actor is planned that can never be placed (windows sent to it would wait forever)
        grown = sum(float(t["resources"]["GPU"]) * (t["max"] if t["max"] > 0 else MAX_SLOTS) for t in launchable)
        total = max(sum(now), grown)
        per_node = max([*now, *(float(t["resources"]["GPU"]) for t in launchable)])
        return total, per_node, "autoscaler"
    if sum(now) > 0:
        return sum(now), max(now), "present"
    return 0.0, 0.0, "none"


# --- connecting ------------------------------------------------------------------------------------
def connect(*, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            declared_gpus: float | None = None, gpu_wait_s: float = 600.0) -> Cluster:
    """Connect to Ray once per process: ``address`` (or ``RAY_ADDRESS``) for a cluster,
    otherwise start a local one on this machine. ``declared_gpus`` (FRAMEFOLD_CLUSTER_GPUS)
    says how many GPUs the cluster can have, where neither the nodes up now nor the
    autoscaler's node types tell; ``gpu_wait_s`` (FRAMEFOLD_GPU_WAIT_S) is how long work
    that needs GPUs waits for the autoscaler to bring a GPU node up."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address:
            precheck(address)
        if address and address.startswith("ray://"):
            _quiet_closed_channels()
        # "local": always a fresh cluster of our own, never whatever else runs here
        kwargs = {} if address else {"num_cpus": num_cpus, "num_gpus": num_gpus, "include_dashboard": False}
        for delay in [*CLIENT_INIT_RETRY_S, None]:
            try:
                with contextlib.nullcontext() if address else _loopback_only():
                    ray.init(
                        address=address or "local",
                        logging_level=logging.WARNING,
                        log_to_driver=False,
                        configure_logging=True,
                        **kwargs,
                    )
                break
            except ConnectionAbortedError as e:
                # Ray Client: the head could not start this driver's server process (a busy
                # head); a second try usually succeeds. A refused token or runtime env would not.
                reason = _server_reason(e).lower()
                if delay is None or not str(address).startswith("ray://") or any(
                        word in reason for word in ("runtime env", "runtime_env", "token", "authentica")):
                    raise ClusterError(_explain(e, address)) from e
                log.warning("the Ray Client server at %s did not start for this driver (%s); trying again in %d s",
                            address, _server_reason(e), delay)  # fmt: skip
                with contextlib.suppress(Exception):  # the half-made client connection
                    ray.shutdown()
                time.sleep(delay)
            except (ConnectionError, ray.exceptions.RayError, RuntimeError, ValueError) as e:
                raise ClusterError(_explain(e, address)) from e
    _no_auto_connect()
    resources = ray.cluster_resources()
    ctx = ray.get_runtime_context()
    remote = bool(address)
    gpus_now = float(resources.get("GPU", 0))
    if remote:
        gpus, per_node, source = _capacity(declared_gpus)
    elif declared_gpus is not None:
        gpus, per_node, source = declared_gpus, None, "FRAMEFOLD_CLUSTER_GPUS"
    else:  # a local Ray of our own has no autoscaler: what it has is all it gets
        gpus, per_node, source = gpus_now, gpus_now, "present" if gpus_now else "none"
    return Cluster(
        address=(address if address and address.startswith("ray://") else None)
        or getattr(ctx, "gcs_address", None) or "local",
        cpus=float(resources.get("CPU", 0)),
        gpus=max(gpus, gpus_now),
        gpus_per_node=per_node,
        gpu_source=source,
        gpus_now=gpus_now,
        gpu_wait_s=gpu_wait_s,
    )


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """A Ray of this process's own serves this machine only: its node address is 127.0.0.1, so
    its GCS, raylet, workers and agents listen on the loopback interface, not on every one
    (Ray on Linux takes the machine's network address, and its servers bind to all interfaces).
    Ray's switch for single-machine Rays, read when the node address is chosen."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: its own default
        yield
        return
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _no_auto_connect() -> None:
    """Once connected, a Ray call never connects again by itself (RAY_ENABLE_AUTO_CONNECT=0):
    after a lost head, Ray's client would start a new connection on each call and wait 30 s
    for it, per item; the calls fail at once instead, and the items say why."""
    try:
        from ray._private import auto_init_hook
    except ImportError:  # another Ray layout: its own default
        return
    auto_init_hook.enable_auto_connect = False


def _quiet_closed_channels() -> None:
    """gRPC's connectivity watcher thread raises "Cannot monitor channel state: Channel
    closed!" when Ray's client closes a channel to a head that is gone; the items already
    say the cluster was lost, so that thread's traceback goes to the debug log, not the
    terminal. Every other thread exception reaches the hook before it."""
    previous = threading.excepthook
    if getattr(previous, "quiets_closed_channels", False):  # installed already
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        tb, frames = args.exc_traceback, []
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        watcher = any(f.replace("\\", "/").endswith("grpc/_channel.py") for f in frames)
        if watcher and isinstance(args.exc_value, ValueError) and str(args.exc_value).startswith(
                "Cannot monitor channel state"):
            log.debug("gRPC channel watcher ended: %s", args.exc_value)
            return
        previous(args)

    hook.quiets_closed_channels = True
    threading.excepthook = hook


def _host_port(address: str) -> tuple[str, int] | None:
    """Host and port to try before handing ``address`` to Ray (None: nothing to check)."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme == "ray" and port is None:
        port = 10001
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port


def precheck(address: str | None, var: str = "RAY_ADDRESS") -> None:
    """Fail in seconds, naming the cause (:class:`ClusterError`), where Ray would fail late
    or vaguely: a GCS address nobody listens on makes ``ray.init`` retry for minutes, and a
    refused token makes Ray's client time out. Nothing to check without an address.
    ``var``: the environment variable the address came from, named in the messages."""
    if not address:
        return
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401
        except ImportError:
            raise ClusterError(
                f"{var}={address} needs Ray's client extra (grpcio), missing from this environment; "
                f"install framefold with its dependencies (`pip install -c constraints.txt .`, which brings "
                f"ray[default,client]=={ray.__version__}) or `pip install 'ray[client]=={ray.__version__}'`"
            ) from None
    target = _host_port(address)
    if target is None:
        return
    host, port = target
    try:
        socket.create_connection((host, port), timeout=10).close()
    except socket.gaierror as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: unknown host {host!r} ({e.strerror}); "
                           f"fix {var}") from None
    except OSError as e:
        what = "connection refused" if isinstance(e, ConnectionRefusedError) else (e.strerror or type(e).__name__)
        kind = "Ray client server (ray start --head serves it on port 10001)" if address.startswith("ray://") \
            else "GCS (the head's --port, 6379 by default)"
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {what} — nothing answers on {host}:{port}; "
            f"start the cluster (`ray start --head`), or fix {var}: it must name the head's {kind}"
        ) from None
    client = address.startswith("ray://")
    answer = _ask(host, port, "client" if client else "gcs")
    if answer in ("refused token",):
        raise ClusterError(_token_message(address))
    if answer == "unimplemented" and _ask(host, port, "gcs" if client else "client") == "ok":
        # the other kind of Ray port: Ray would time out after 20-30 s with a vague message
        if client:
            raise ClusterError(
                f"cannot connect to the Ray cluster at {address}: {host}:{port} is the head's GCS port, not its Ray "
                f"client server; fix {var}: either {host}:{port} without ray:// (this machine joins the cluster's "
                f"network as a driver), or ray://{host}:10001 (the head's --ray-client-server-port)")
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {host}:{port} is a Ray client server, not the head's "
            f"GCS port; fix {var}: write ray://{host}:{port}, or the GCS address ({host}:6379, the head's --port)")


def _ask(host: str, port: int, kind: str, timeout: float = 15) -> str:
    """One ping of a Ray port as Ray sends it (auth token included): ``kind`` "client" asks
    as Ray's client asks its server, "gcs" as a driver asks the GCS. Returns "ok", "refused
    token", "unimplemented" (the port serves another kind), "unavailable" (nothing serves it)
    or "unknown" (anything else: left to ``ray.init`` to report)."""
    try:
        import grpc
        from ray._private.grpc_utils import init_grpc_channel

        if kind == "client":
            import ray.core.generated.ray_client_pb2 as pb
            import ray.core.generated.ray_client_pb2_grpc as pb_grpc
        else:
            import ray.core.generated.gcs_service_pb2 as pb
            import ray.core.generated.gcs_service_pb2_grpc as pb_grpc
    except ImportError:  # another Ray layout, or no client extra: leave the diagnosis to ray.init
        return "unknown"
    channel = init_grpc_channel(f"{host}:{port}", options=[], asynchronous=False)
    try:
        if kind == "client":
            pb_grpc.RayletDriverStub(channel).ClusterInfo(pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING),
                                                          timeout=timeout)
        else:
            pb_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(pb.GetClusterIdRequest(), timeout=timeout)
        return "ok"
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return "refused token"
        return {grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
                grpc.StatusCode.UNAVAILABLE: "unavailable"}.get(e.code(), "unknown")
    except Exception:  # noqa: BLE001 - anything else: ray.init reports it
        return "unknown"
    finally:
        channel.close()


def _token_message(address: str) -> str:
    mode = os.environ.get("RAY_AUTH_MODE", "")
    given = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else \
        "RAY_AUTH_TOKEN_PATH" if os.environ.get("RAY_AUTH_TOKEN_PATH") else "~/.ray/auth_token"
    need_mode = "" if mode == "token" else " and set RAY_AUTH_MODE=token"
    return (f"cannot connect to the Ray cluster at {address}: it uses token authentication and refused this "
            f"client's token (missing or wrong; looked in {given}, RAY_AUTH_MODE={mode or 'unset'}); copy the "
            f"head's token (`ray get-auth-token` on the head) into RAY_AUTH_TOKEN or ~/.ray/auth_token{need_mode}")


def _server_reason(e: BaseException) -> str:
    """The last line of a Ray Client server's traceback (what failed on the head)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _explain(e: BaseException, address: str | None) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if first.startswith("Initialization failure from server"):
        return (f"cannot connect to the Ray cluster at {address}: the head could not start this driver's Ray Client "
                f"server ({_server_reason(e)}); see the ray_client_server*.err logs on the head (its session's "
                "logs folder)")
    chain, cause = [], e
    while cause is not None and len(chain) < 5:  # Ray wraps the real cause ("… from e")
        chain.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__ or cause.__context__
    text = "\n".join(chain)
    if not address:
        return (f"cannot start a local Ray cluster: {first}; check FRAMEFOLD_RAY_NUM_CPUS / "
                "FRAMEFOLD_RAY_NUM_GPUS and free memory and disk in /tmp")
    where = f"cannot connect to the Ray cluster at {address}"
    lowered = text.lower()
    if "ray[client]" in text or "requires pip package" in lowered:
        return (f"{where}: Ray's client extra is missing; install framefold with its dependencies "
                f"(`pip install -c constraints.txt .`, ray[default,client]=={ray.__version__})")
    if isinstance(e, getattr(ray.exceptions, "AuthenticationError", ())) or "token" in lowered \
            or "unauthenticated" in lowered or "authentication" in lowered:
        return _token_message(address)
    if "version" in lowered and "mismatch" in lowered:
        return (f"{where}: {first}; the driver and the cluster must run the same Python and "
                f"ray=={ray.__version__} (see constraints.txt)")
    if "timed out" in lowered or "timeout" in lowered:
        return (f"{where}: {first}; the port answers but Ray did not: a token the cluster refuses (RAY_AUTH_MODE=token, "
                f"RAY_AUTH_TOKEN), another Ray or Python version, or another service on that port; "
                f"check `ray status` on the head and RAY_ADDRESS")
    return f"{where}: {first}; check RAY_ADDRESS / FRAMEFOLD_RAY_ADDRESS and that the cluster is up (`ray status`)"
