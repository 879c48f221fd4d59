"""Expected-negative checks: a thing the topology makes impossible must be shown impossible.

In `seed-exact` (the seed's testnet: no NAT router, each side reaches only its own sentry)
a cross-network circuit and cross-network sync cannot happen. The scenario passes when
(1) harness/model/reach.py, the same logic as `sentrynet analyse`, says why from the model alone,
(2) the run is far enough along that it would have happened (`decisive`), and
(3) it did not happen. If it did happen, either reach.py or the testnet is wrong: fail.
"""

from __future__ import annotations

from harness.checks import Check, Observation, Verdict


def impossible(check: Check, reach_key: str, decisive: Check | None = None) -> Check:
    """Holds when `check` does not hold, marks['reach'][reach_key] gives the reason, and
    `decisive` (if given) holds. A `check` that holds is a final failure (no point waiting)."""

    def run(obs: Observation) -> Verdict:
        reason = (obs.marks.get("reach") or {}).get(reach_key)
        seen = check(obs)
        if seen.ok:
            return Verdict(
                False,
                f"expected impossible, but it happened: {seen.detail}",
                cause="reach analysis says no path, yet one was used: the testnet leaks a "
                "route (a container kept a Docker default route?) or reach.py is wrong"
                if reason
                else "the topology allows it",
                data={"final": True},
            )
        if not reason:
            return Verdict(
                False,
                f"not observed ({seen.detail}), but harness/model/reach.py finds a path for it",
                cause="the topology allows it; this negative expectation is wrong for it",
                data={"final": True},
            )
        if decisive is not None:
            ready = decisive(obs)
            if not ready.ok:
                return Verdict(
                    False,
                    f"not yet decisive: {ready.detail}",
                    cause=ready.cause or "the run has not got far enough to tell",
                )
        observed = seen.cause or seen.detail
        return Verdict(
            True,
            f"impossible, as expected (reachability: {reason}); observed: {observed}",
            since=obs.t,
        )

    return run
