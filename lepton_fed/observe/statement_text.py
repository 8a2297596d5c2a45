"""Plain-text rendering of a privacy statement (:mod:`lepton_fed.observe.statement`)."""

from __future__ import annotations

from typing import Any

__all__ = ["render"]


def _f(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render(st: dict[str, Any]) -> str:
    """Sections: run, mechanism, spent per node, ledger history, clear, who sees."""
    m = st["mechanism"]
    lines = [f"Privacy statement for {st['run_dir']}",
             f"run: {st['rounds_completed']}/{st['rounds_planned']} rounds"
             + ("" if st["finished"] else " (still running: figures so far)"), "",
             "MECHANISM", f"  {m['description']}",
             f"  secure aggregation: {'on' if m['secure_aggregation'] else 'off'}",
             f"  budget enforced by: {m['enforced_by']}"]
    for k in ("target_epsilon", "delta", "accountant", "max_grad_norm", "clip", "noise_multiplier",
              "noise", "releases", "min_contributors", "colluders", "honest_shares", "trusted"):
        if m.get(k) is not None:
            lines.append(f"  {k.replace('_', ' ')}: {_f(m[k])}")
    sp = st["spent"]
    lines += ["", "SPENT IN THIS RUN",
              f"  epsilon {_f(sp['epsilon'])} at delta {_f(sp['delta'])} ({sp['scope']})"]
    for n in st["nodes"]:
        extra = []
        if n.get("stopped_at_round") is not None:
            extra.append(f"budget exhausted at round {n['stopped_at_round']}")
        if n.get("refused"):
            extra.append(f"refused the run: {n['refused']}")
        for label in ("declines", "failures"):
            if n.get(label):
                extra.append(label + " " + ", ".join(f"{k} x{v}"
                                                     for k, v in sorted(n[label].items())))
        if n.get("late"):
            extra.append(f"late replies discarded x{n['late']}")
        lines.append(f"  {n['name']}: epsilon {_f(n['epsilon'])}"
                     + (f" ({'; '.join(extra)})" if extra else ""))
    if "ledger" in st:
        led = st["ledger"]
        lines += ["", f"LEDGER HISTORY ({led['dir']}, delta {_f(led['delta'])}, "
                      f"cap {_f(led['cap'])})"]
        if not led["datasets"]:
            lines.append("  no ledger stored: nothing spent on this node's data yet")
        for ds in led["datasets"]:
            lines.append(f"  dataset {ds['dataset'][:16]}: epsilon {_f(ds['epsilon_total'])} "
                         f"over all {ds['events']} rounds"
                         + (f" ({ds['pending']} pending, counted in full)"
                            if ds["pending"] else ""))
            for r in ds["runs"]:
                lines.append(f"    run {r['run_id']}: {len(r['rounds'])} rounds, "
                             f"{r['steps']} steps, epsilon {_f(r['epsilon_alone'])} alone "
                             f"({_f(r['first'])} .. {_f(r['last'])})")
    lines += ["", f"WHAT LEFT EACH NODE IN THE CLEAR (policy: {st['policy']['source']})"]
    lines += [f"  - {item}" for item in st["left_in_clear"]]
    lines += ["", "WHO COULD SEE WHAT"]
    lines += [f"  - {w['party']}: {w['sees']}" for w in st["who_sees"]]
    return "\n".join(lines) + "\n"
