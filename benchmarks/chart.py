"""Draw results/latest.png from results/latest.json (runs in benchmarks/.venvs/_report, with matplotlib).

Usage: ``python chart.py latest.json latest.png``
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DELIVERED = {"e2e_small_eps": "e2e_small_deliv", "e2e_large_eps": "e2e_large_deliv", "wan_eps": "wan_deliv"}
ORDER = ("serla", "serla_py_010", "posthog", "segment", "amplitude")
COLORS = {
    "serla": "#1b7f5a",
    "serla_py_010": "#8fd1b5",
    "posthog": "#f28e2b",
    "segment": "#4e79a7",
    "amplitude": "#b07aa1",
}


def main() -> None:
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    summ, sdks, plan = doc["summary"], doc["sdks"], doc["plan"]
    keys = [k for k in ORDER if k in summ]
    labels = [sdks[k]["label"].replace(" (this repo)", "\n(this repo)") for k in keys]
    nl = f"{plan['n_large']:,}"
    panels = [
        ("import, and cold start to first event received (ms) ↓", ["import_ms", "cold_ms"], False),
        ("track() latency (µs, log) ↓", ["track_median_us", "track_p99_us"], True),
        ("end-to-end events/s (log) ↑", ["e2e_small_eps", "e2e_large_eps"], True),
        (f"CPU µs per event, N={nl} ↓", ["cpu_us"], False),
        (f"peak RSS MB, N={nl} ↓", ["rss_mb", "down_large_rss"], False),
        (f"WAN +{plan['wan_delay'] * 1000:.0f} ms: events/s, N={plan['wan_n']:,} ↑", ["wan_eps"], True),
    ]
    series_names = {
        "import_ms": "import over bare python",
        "cold_ms": "import + client + first event",
        "track_median_us": "median",
        "track_p99_us": "p99",
        "e2e_small_eps": f"N={plan['n_small']:,}",
        "e2e_large_eps": f"N={nl}",
        "rss_mb": "endpoint up",
        "down_large_rss": "endpoint down",
    }
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    for ax, (title, mkeys, logy) in zip(axes.flat, panels):
        width = 0.8 / len(mkeys)
        for j, mk in enumerate(mkeys):
            xs, hs, errs, cols = [], [], [], []
            for i, k in enumerate(keys):
                s = summ[k].get(mk)
                if not s:
                    continue
                xs.append(i + (j - (len(mkeys) - 1) / 2) * width)
                hs.append(s["median"])
                errs.append([[s["median"] - s["min"]], [s["max"] - s["median"]]])
                cols.append(COLORS[k])
            if not xs:
                continue
            yerr = [[e[0][0] for e in errs], [e[1][0] for e in errs]]
            bars = ax.bar(
                xs,
                hs,
                width * 0.92,
                color=cols,
                yerr=yerr,
                capsize=2,
                hatch=None if j == 0 else "//",
                edgecolor="black",
                linewidth=0.4,
                label=series_names.get(mk),
            )
            shown = [k for k in keys if summ[k].get(mk)]
            for b, k in zip(bars, shown):
                frac = (summ[k].get(DELIVERED.get(mk, "")) or {}).get("median")
                if frac is not None and frac < 0.999:
                    ax.annotate(
                        f"{frac * 100:.0f}%\ndelivered",
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        xytext=(0, -22),
                        textcoords="offset points",
                        ha="center",
                        fontsize=6,
                        color="darkred",
                    )
            for b, h in zip(bars, hs):
                ax.annotate(
                    f"{h:,.0f}" if h >= 100 else f"{h:.2g}" if h < 10 else f"{h:.1f}",
                    (b.get_x() + b.get_width() / 2, h),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(labels, fontsize=8)
        if logy:
            ax.set_yscale("log")
        if len(mkeys) > 1:
            ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    m = doc["machine"]
    fig.suptitle(
        f"serla SDK benchmarks — {m['date']} — {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"{plan['rounds']} round(s); bars: median, whiskers: min-max",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
