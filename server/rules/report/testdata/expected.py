#!/usr/bin/env python3
"""Expected values for server/report's statistics, computed independently
with numpy and scipy (Debian: python3-scipy).

Writes expected.json next to this file: the datasets and, for each, what
scipy says. The Go test (stats_test.go) reads the datasets from it and checks
its own results to 6 significant figures. Run it again after changing a
dataset:

    python3 server/rules/report/testdata/expected.py
"""
import json
import math
import os
import sys
import warnings

import numpy as np
from scipy import stats

warnings.simplefilter("ignore")  # zero variance: scipy warns and returns nan

PAIRED = {
    # WEMWBS, 12 people: baseline and follow-up totals.
    "wemwbs": ([38, 41, 35, 44, 29, 50, 42, 37, 33, 46, 40, 31],
               [45, 43, 41, 52, 36, 51, 40, 44, 41, 50, 47, 35], True),
    # The smallest sample with a test: n = 2.
    "n2": ([40, 45], [48, 50], True),
    # Every change the same: no variance of change, t undefined.
    "zero_variance": ([30, 35, 40, 45, 50], [33, 38, 43, 48, 53], True),
    # No change at all.
    "no_change": ([30, 31, 32], [30, 31, 32], True),
    # UCLA3 loneliness: lower is better.
    "ucla3": ([7, 8, 6, 9, 7, 8, 5], [5, 7, 6, 6, 5, 8, 4], False),
    # ONS4 anxiety, with decimals and a worse score.
    "ons4_anxiety": ([6, 7, 5, 8, 4, 9], [4, 7, 6, 5, 4, 6], False),
}

TWO_SAMPLE = {
    # Change in WEMWBS for women and men.
    "sex": ([7, 2, 6, 8, 7, 1, -2, 7], [4, 4, 3, 5, 7, 8]),
    # Unequal sizes, one group of 2.
    "small": ([3, 9], [1, 2, 2, 4, 0, 3, 5]),
    # One group of one value.
    "single": ([5], [1, 2, 3]),
}

PERCENTILES = {
    # Hours from referral to a first answer.
    "hours": [2.5, 30, 4, 71, 18, 26, 49, 6, 120, 12, 3.25],
    "two": [10, 20],
    "one": [7],
}


def num(x):
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def paired(b, f, higher):
    b, f = np.array(b, float), np.array(f, float)
    d = f - b
    n = len(d)
    out = {
        "n": n,
        "baseline_mean": num(b.mean()), "baseline_sd": num(b.std(ddof=1)),
        "follow_up_mean": num(f.mean()), "follow_up_sd": num(f.std(ddof=1)),
        "change_mean": num(d.mean()), "change_sd": num(d.std(ddof=1)),
        "df": n - 1,
    }
    sem = d.std(ddof=1) / math.sqrt(n)
    lo, hi = stats.t.interval(0.95, n - 1, loc=d.mean(), scale=sem)
    out["ci_low"], out["ci_high"] = num(lo), num(hi)
    if d.std(ddof=1) > 0:
        r = stats.ttest_rel(f, b)
        out["t"], out["p"] = num(r.statistic), num(r.pvalue)
        out["d"] = num(d.mean() / d.std(ddof=1))
    else:
        out["t"] = out["p"] = out["d"] = None
    better = d > 0 if higher else d < 0
    out["improved"] = int(better.sum())
    out["unchanged"] = int((d == 0).sum())
    out["worse"] = int(n - better.sum() - (d == 0).sum())
    return out


def two_sample(a, b):
    r = stats.ttest_ind(a, b, equal_var=True)
    return {"difference": num(np.mean(a) - np.mean(b)), "t": num(r.statistic),
            "p": num(r.pvalue), "df": len(a) + len(b) - 2}


expected = {
    "paired": {k: {"baseline": b, "follow_up": f, "higher_is_better": h, "want": paired(b, f, h)}
               for k, (b, f, h) in PAIRED.items()},
    "two_sample": {k: {"a": a, "b": b, "want": two_sample(a, b)} for k, (a, b) in TWO_SAMPLE.items()},
    "percentiles": {k: {"values": v, "p50": num(np.percentile(v, 50)), "p90": num(np.percentile(v, 90))}
                    for k, v in PERCENTILES.items()},
}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "expected.json")
if len(sys.argv) > 1:  # the Go test compares a fresh copy with the committed one
    path = sys.argv[1]
with open(path, "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")
