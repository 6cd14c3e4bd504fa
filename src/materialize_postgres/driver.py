"""The driver: typed requests in, typed responses out, whoever the caller is (Flow's runtime over
stdio, or the standalone runner in-process)."""

from __future__ import annotations

import gc
import logging

from . import config as cfgmod
from .apply import describe, execute, plan
from .config import DOCS_URL, EndpointConfig, parse_endpoint, parse_resource
from .connect import ConnectError, Target, connect, endpoint
from .introspect import existing_tables
from .protocol.messages import (
    Applied,
    Apply,
    Open,
    Opened,
    SpecResponse,
    Validate,
    Validated,
    parse_raw,
    raw,
)
from .tables import resource_path
from .transactor import Transactor
from .validate import validate

log = logging.getLogger(__name__)
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)


def endpoint_config(raw_config: object) -> EndpointConfig:
    data = raw_config if isinstance(raw_config, dict) else parse_raw(raw_config, {})  # type: ignore[arg-type]
    cfg = parse_endpoint(data)
    from .logs import add_secret

    add_secret(cfg.password_value())
    ssh = cfg.ssh()
    if ssh is not None:
        add_secret(ssh.privateKey.get_secret_value())
    return cfg


def spec() -> SpecResponse:
    return SpecResponse(
        protocol=3032023,
        config_schema=raw(cfgmod.endpoint_schema()),
        resource_config_schema=raw(cfgmod.resource_schema()),
        documentation_url=DOCS_URL,
    )


def do_validate(req: Validate) -> Validated:
    cfg = endpoint_config(req.config)
    paths = [resource_path(parse_resource(parse_raw(b.resource_config, {})), cfg) for b in req.bindings]
    with endpoint(cfg) as target, connect(cfg, target, application="validate") as conn:
        tables = existing_tables(conn, paths)
    return validate(req, cfg, tables)


def do_apply(req: Apply) -> Applied:
    cfg = endpoint_config(req.materialization.config)
    with endpoint(cfg) as target, connect(cfg, target, application="apply") as conn:
        actions = plan(conn, req.materialization, cfg, req.last_materialization)
        conn.rollback()
        execute(conn, actions)
    text = describe(actions)
    log.info("applied", extra={"fields": {"actions": len(actions)}})
    return Applied(action_description=text)


class Session:
    """An opened transactor together with the tunnel it may be running through."""

    def __init__(self, req: Open):
        self.cfg = endpoint_config(req.materialization.config)
        self._endpoint = endpoint(self.cfg)
        target: Target = self._endpoint.__enter__()
        try:
            self.transactor = Transactor(self.cfg, req.materialization, req.range, target)
            checkpoint = self.transactor.open()
        except BaseException:
            self._endpoint.__exit__(None, None, None)
            raise
        self.opened = Opened(runtime_checkpoint=raw_json(checkpoint))

    def close(self) -> None:
        self.transactor.close()
        self._endpoint.__exit__(None, None, None)


def settle_heap() -> None:
    """For a process that runs one session (the connector, the runner's command), never for a
    library caller's process, whose collector is its own.

    Everything allocated before the session opened (modules, the spec, the session) lives as long
    as the process: frozen, the cyclic collector no longer walks it at each full collection, which
    transactions holding many rows or documents set off often. The young generation's threshold
    is raised for the same reason: rows and documents hold no cycles, and collecting every 700
    allocations cost the runner a fifth of its time (200k documents: 6.0-6.3 s, 4.6-5.2 s with
    10,000)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def raw_json(data: bytes):
    import msgspec

    return msgspec.Raw(data)


__all__ = ["ConnectError", "Session", "do_apply", "do_validate", "spec"]
