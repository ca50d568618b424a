"""Tables, plot and Markdown for ``bench/ladder.py`` (a bench helper).

Takes the ladder's median rows and writes ``docs/benchmarks.md``: the generated part sits
between ``<!-- ladder:begin -->`` and ``<!-- ladder:end -->`` and is replaced on each run, so
prose written around it survives.  The plot (loss against offered rate, one line per
receiver × shape × series) needs matplotlib, an optional ``bench`` dependency; without it the
tables are still written and the report says the plot was skipped.

Standard library (and optionally matplotlib) only; never imports ``gateway``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

LOSS_LIMIT = 0.1  # percent
BEGIN, END = "<!-- ladder:begin -->", "<!-- ladder:end -->"
Row = dict[str, Any]
UNIT = {"packed": "lines/s", "single": "datagrams/s"}
NAME = {"gateway": "gateway", "etsy": "etsy statsd"}


def machine() -> dict[str, str]:
    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return "?"

    model = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in read("/proc/cpuinfo").splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "rmem_max": read("/proc/sys/net/core/rmem_max"),
        "rmem_default": read("/proc/sys/net/core/rmem_default"),
        "loadavg_at_start": " ".join(read("/proc/loadavg").split()[:3]),
    }


def _group(med: list[Row]) -> dict[tuple[str, str, int], list[Row]]:
    out: dict[tuple[str, str, int], list[Row]] = {}
    for row in med:
        out.setdefault((row["receiver"], row["shape"], row["series"]), []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: r["offered"])
    return out


def best(rows: list[Row]) -> str:
    """Highest offered rate with median loss < 0.1 %; '>= top' or '< bottom' at the edges."""
    ok = [r["offered"] for r in rows if r["loss_pct"] < LOSS_LIMIT]
    if not ok:
        return f"< {rows[0]['offered']:,}"
    top = max(ok)
    return f">= {top:,}" if top == rows[-1]["offered"] else f"{top:,}"


def summary(med: list[Row]) -> list[list[str]]:
    table = [
        [
            "receiver",
            "shape",
            "series",
            "lossless up to",
            "unit",
            "first lossy step",
            "CPU % at best",
            "RSS MiB (max)",
            "kernel rb",
            "runs/step",
        ]
    ]
    for (receiver, shape, series), rows in _group(med).items():
        ok = [r for r in rows if r["loss_pct"] < LOSS_LIMIT]
        bad = [r for r in rows if r["loss_pct"] >= LOSS_LIMIT]
        first_bad = f"{bad[0]['offered']:,} ({bad[0]['loss_pct']:.2f} %)" if bad else "none"
        table.append(
            [
                NAME[receiver],
                shape,
                f"{series:,}",
                best(rows),
                UNIT[shape],
                first_bad,
                f"{max(ok, key=lambda r: r['offered'])['cpu_pct']:.0f}" if ok else "-",
                f"{max(r['hwm_mib'] for r in rows):.0f}",
                f"{rows[0]['rcvbuf_rb'] / 2**20:.0f} MiB" if rows[0]["rcvbuf_rb"] else "?",
                str(rows[0]["runs"]),
            ]
        )
    return table


def steps(med: list[Row]) -> list[list[str]]:
    table = [
        [
            "receiver",
            "shape",
            "series",
            "offered/s",
            "sent/s",
            "loss %",
            "lost dgrams",
            "kernel drops",
            "gw own drops",
            "rejected",
            "queued B",
            "CPU %",
            "gen CPU %",
            "other CPU %",
            "RSS MiB",
            "drop peak (s into cycle)",
        ]
    ]
    for (receiver, shape, series), rows in _group(med).items():
        for r in rows:
            phase = r["drop_phase"]
            peak = max(phase) if phase else 0
            table.append(
                [
                    NAME[receiver],
                    shape,
                    f"{series:,}",
                    f"{r['offered']:,}",
                    f"{r['sent_per_s']:,.0f}",
                    f"{r['loss_pct']:.3f}",
                    f"{r['lost_dgrams']:,.0f}",
                    f"{r['kdrops']:,.0f}",
                    "-" if r.get("own_kdrops") is None else f"{r['own_kdrops']:,.0f}",
                    f"{r['rejected']:,.0f}",
                    "-" if r.get("queued_bytes") is None else f"{r['queued_bytes']:,.0f}",
                    f"{r['cpu_pct']:.0f}",
                    f"{r['gen_cpu_pct']:.0f}",
                    f"{r['other_cpu_pct']:.0f}",
                    f"{r['rss_mib']:.0f}",
                    f"{peak:,} at +{phase.index(peak)} s" if peak else "-",
                ]
            )
    return table


def render(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(table: list[list[str]]) -> str:
    out = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    out += ["| " + " | ".join(row) + " |" for row in table[1:]]
    return "\n".join(out)


def summary_text(med: list[Row]) -> str:
    return f"highest offered rate with median loss < {LOSS_LIMIT} %:\n" + render(summary(med))


def plot(med: list[Row], path: Path) -> str:
    """Loss % against offered rate, one panel per shape; returns a sentence for the report."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install 'statsd-gateway[bench]')"
    groups = _group(med)
    shapes = [s for s in UNIT if any(k[1] == s for k in groups)]
    fig, axes = plt.subplots(1, len(shapes), figsize=(6.5 * len(shapes), 4.6), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        for (receiver, s, series), rows in sorted(groups.items()):
            if s != shape:
                continue
            style = "-" if receiver == "gateway" else "--"
            marker = {10_000: "o", 100_000: "s", 1_000_000: "^"}.get(series, "x")
            colour = {10_000: "tab:blue", 100_000: "tab:orange", 1_000_000: "tab:red"}
            ax.plot(
                [r["offered"] for r in rows],
                [max(r["loss_pct"], 0.001) for r in rows],
                style,
                marker=marker,
                color=colour.get(series),
                label=f"{NAME[receiver]}, {series:,} series",
            )
        ax.axhline(LOSS_LIMIT, color="grey", linewidth=0.8, linestyle=":")
        ax.set_yscale("log")
        ax.set_ylim(0.0008, 100)
        ax.set_xlabel(f"offered {UNIT[shape]}")
        ax.set_ylabel("loss % (0 drawn at 0.001)")
        ax.set_title("~1,400-byte datagrams" if shape == "packed" else "one line per datagram")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def generated(
    args: argparse.Namespace,
    med: list[Row],
    mach: dict[str, str],
    command: str,
    etsy_note: str,
    plot_note: str,
    started: float,
    elapsed: float,
) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    label = f" ({args.label})" if args.label else ""
    img = os.path.relpath(args.plot, args.out.parent)
    parts = [
        BEGIN,
        f"### Run of {when}{label}",
        "",
        "    " + command,
        "",
        f"- Machine: {mach['cpus']} CPUs ({mach['cpu']}), Linux {mach['kernel']}, Python "
        f"{mach['python']}; load average at start {mach['loadavg_at_start']}; "
        f"`net.core.rmem_max` = {mach['rmem_max']}, `rmem_default` = {mach['rmem_default']}.",
        f"- etsy statsd: {etsy_note}.",
        f"- Window (gateway) = flushInterval (etsy statsd) = {args.window} s; "
        f"{args.seconds:g} s per step; {args.repeat} run(s) per step (median); receive buffer "
        f"asked: {args.rcvbuf:,} bytes; gateway `--max-series {args.max_series}`; "
        f"{args.processes} sender process(es); total wall time {elapsed / 60:.1f} min.",
        "",
        "Highest offered rate with median loss < 0.1 % (the ladder's steps only: '>= x' means "
        "no step lost data, '< x' that the lowest step already did):",
        "",
        markdown(summary(med)),
        "",
        f"![loss against offered rate]({img})"
        if plot_note.startswith("plot written")
        else f"({plot_note})",
        "",
        "Every step (medians; lost dgrams = sent − counted datagrams; kernel drops from "
        "/proc/net/udp; 'drop peak' = most kernel drops in one second of the window/flush "
        "cycle, summed over runs):",
        "",
        markdown(steps(med)),
        END,
    ]
    return "\n".join(parts) + "\n"


def write(
    args: argparse.Namespace,
    med: list[Row],
    mach: dict[str, str],
    command: str,
    etsy_note: str,
    plot_note: str,
    started: float,
    elapsed: float,
) -> None:
    block = generated(args, med, mach, command, etsy_note, plot_note, started, elapsed)
    out: Path = args.out
    old = out.read_text() if out.exists() else ""
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block.rstrip("\n") + tail
    else:
        text = "# Benchmarks\n\n## Results\n\n" + block + old
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
