"""What deployctl remembers about a service's revisions, kept in the service's own annotations (so every
machine that deploys it, and the next run, sees the same history):

    deployctl-gated          revisions that passed the health gate and then received the traffic
    deployctl-rolled-back    revisions whose traffic `deployctl rollback` moved away
    deployctl-verify-failed  revisions whose traffic `deploy --verify` moved back after a failed check

Each is a comma-separated list of revision ids, newest first, bounded. A plan uses them to tell "unchanged"
(serving a revision that passed the gate) from "serving something that never passed it", and to refuse quietly
re-promoting a revision someone withdrew; rollback uses them to pick a revision that is known to be good.
"""

from __future__ import annotations

from deployctl.cloud.run import Revision, Service
from deployctl.errors import UsageError

GATED = "deployctl-gated"
ROLLED_BACK = "deployctl-rolled-back"
VERIFY_FAILED = "deployctl-verify-failed"
KEEP = 20  # entries per list: enough history for rollbacks, small enough for an annotation
WITHDRAWN = {ROLLED_BACK: "rolled back with `deployctl rollback`",
             VERIFY_FAILED: "failed `deploy --verify` and had its traffic moved back"}


def _ids(annotations: dict[str, str], key: str) -> list[str]:
    return [r for r in (annotations.get(key) or "").split(",") if r]


def _join(ids: list[str]) -> str:
    return ",".join(list(dict.fromkeys(ids))[:KEEP])


def gated(svc: Service) -> list[str]:
    return _ids(svc.annotations, GATED)


def passed_gate(svc: Service, revision: str) -> bool:
    return revision in gated(svc)


def withdrawn(svc: Service, revision: str) -> str | None:
    """Why `revision` was withdrawn (rolled back, or failed verify), or None."""
    for key, why in WITHDRAWN.items():
        if revision in _ids(svc.annotations, key):
            return why
    return None


def after_gate(svc: Service | None, revision: str) -> dict[str, str]:
    """Annotations once `revision` passed the gate and took the traffic: it is gated, and no longer withdrawn
    (a forced re-promotion, or a fixed revision that passed again)."""
    notes = svc.annotations if svc else {}
    out = {GATED: _join([revision] + _ids(notes, GATED))}
    for key in WITHDRAWN:
        if revision in _ids(notes, key):
            out[key] = _join([r for r in _ids(notes, key) if r != revision])
    return out


def after_rollback(svc: Service, away_from: list[str], to: str) -> dict[str, str]:
    """Annotations once traffic moved from `away_from` to `to` by a rollback (`to` is chosen: not withdrawn)."""
    out = {ROLLED_BACK: _join([r for r in away_from if r != to] +
                              [r for r in _ids(svc.annotations, ROLLED_BACK) if r != to])}
    if to in _ids(svc.annotations, VERIFY_FAILED):
        out[VERIFY_FAILED] = _join([r for r in _ids(svc.annotations, VERIFY_FAILED) if r != to])
    return out


def after_verify_failure(svc: Service, revision: str) -> dict[str, str]:
    return {VERIFY_FAILED: _join([revision] + _ids(svc.annotations, VERIFY_FAILED))}


def rollback_target(svc: Service, revisions: list[Revision]) -> Revision:
    """The revision a plain `rollback` moves traffic to: the newest ready revision older than what serves,
    not withdrawn, and (when the service has a gate history) one that passed the gate. Raises UsageError."""
    by_id = {r.id: r for r in revisions}
    serving = [by_id[r] for r in svc.serving if r in by_id]
    newest_serving = max((r.generation for r in serving),
                         default=max((r.generation for r in revisions), default=0) + 1)
    older = [r for r in sorted(revisions, key=lambda r: r.generation, reverse=True)
             if r.generation < newest_serving and r.id not in svc.serving]
    ready = [r for r in older if r.ready and not withdrawn(svc, r.id)]
    good = [r for r in ready if passed_gate(svc, r.id)] if gated(svc) else ready
    if good:
        return good[0]
    skipped = [f"{r.id} ({'not ready' if not r.ready else withdrawn(svc, r.id) or 'never passed the health gate'})"
               for r in older[:5]]
    raise UsageError(f"service {svc.id} has no earlier revision to roll back to that is ready and passed the "
                     "health gate" + (f"; skipped: {', '.join(skipped)}" if skipped else ""),
                     hint="name one with --to REVISION (`deployctl status` shows the revisions)")
