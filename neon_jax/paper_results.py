"""The published NEON numbers, for side-by-side tables (neon_spec.md §10.1 and §10.2).

Provenance: the authors' repository (commits fa6ede7 / 81d8404, 2020-08-29 / 2020-09-05), the CSVs
"results by configuration - test.csv" (aggregate over 28 datasets x 6 held-out networks = 168 networks) and
"Test - Per dataset mean param/accuracy reduction.csv" (per-dataset means), as transcribed in neon_spec.md.
They are **single-dataset agents** of 2020 (an agent trained on the 24 training networks of one dataset,
evaluated on its 6 held-out ones), with the 2020 code (unnormalised 6-statistic state, no warm-up, bonus at
Delta > tau, 4-pass = 4L steps, reward and final accuracy on a split that overlapped the base networks' training
data) and the paper's scales (widths 100..1000, 100 epochs). Not the 2022 paper's headline multi-dataset agent,
whose numbers are not in the repository (§10.5). LAP's 2020 numbers are without fine-tuning; "Prn" aggregates a
sweep of magnitude-pruning percentages; "Rand" fine-tuned after every step, 4-pass mode (§9).

Columns: N<p>-<tau> = NEON with p passes (1 or 4) at tolerance tau; Rand = random agent; LAP<k> = lookahead
pruning with k iterations; Prn = magnitude pruning. Compression = original / new parameters; accuracy change in
percentage points (new - original, test file).
"""

from __future__ import annotations

import csv
import io

# §10.1, first table (held-out "test" networks). ratio = compression; dacc = accuracy change in points.
_AGGREGATE = """\
config,ratio_mean,ratio_std,ratio_median,ratio_max,ratio_min,dacc_mean,dacc_std,dacc_median,dacc_max,dacc_min
N4-1,14.56,39.39,2.29,240.96,1.00,-0.45,4.89,0.00,22.58,-26.37
N4-5,15.76,26.46,3.17,122.31,1.00,-0.87,6.71,0.00,35.48,-29.00
N4-50,25.72,38.14,14.95,240.96,1.00,-3.58,9.31,-1.51,37.10,-36.78
N1-1,1.27,0.40,1.11,2.71,1.00,-0.55,5.00,0.00,20.97,-29.00
N1-5,1.50,0.58,1.23,2.77,1.00,-1.79,6.31,0.00,25.46,-30.00
N1-50,1.39,0.49,1.23,2.77,1.00,-2.25,5.99,0.00,14.52,-25.00
Rand,10.63,8.13,9.10,63.72,1.25,-2.30,8.25,-1.04,40.32,-31.00
LAP1,2.03,0.16,1.99,3.19,1.95,-2.90,6.36,-0.73,12.00,-47.35
LAP3,6.79,1.50,7.51,7.88,2.38,-7.76,9.60,-4.62,7.21,-37.05
LAP10,114.05,75.85,113.58,347.75,4.47,-26.92,22.26,-22.78,5.00,-88.25
Prn,2.84,2.44,1.98,9.84,1.01,-0.98,4.20,-0.25,20.97,-48.39
"""

# §10.2, compression ratio per dataset (means over the 6 held-out networks).
_COMPRESSION = """\
dataset,N4-1,N4-5,N4-50,N1-1,N1-5,N1-50,Rand,LAP1,LAP3,LAP10,Prn
2dplanes,2.85,2.93,2.67,1.19,1.83,1.19,9.66,1.99,6.50,100.23,2.75
ailerons,1.00,1.00,24.47,1.00,1.20,2.12,9.32,1.99,7.36,110.42,2.91
airlines,1.00,1.00,2.90,1.00,1.00,1.17,5.16,1.99,7.57,141.19,2.94
Amazon_employee_access,183.39,10.95,183.39,1.00,1.00,1.21,19.82,1.99,7.42,114.82,2.92
bank-marketing,9.00,27.94,3.98,1.00,1.00,1.88,7.91,1.99,7.35,106.54,2.91
cardiotocography,6.15,2.79,36.03,2.00,1.24,1.12,11.38,2.00,7.44,131.54,2.95
CreditCardSubset,24.16,24.99,24.99,1.19,1.45,1.45,9.56,1.99,7.04,113.37,2.86
diabetes,2.77,2.78,21.85,1.19,1.83,1.00,11.47,1.99,7.11,180.47,2.87
diggle_table_a2,1.48,1.69,28.69,1.51,2.58,2.58,8.75,1.99,6.41,113.35,2.73
disclosure_z,1.00,2.58,24.81,1.84,1.83,1.83,10.94,1.99,6.05,123.36,2.63
electricity-normalized,3.19,7.45,7.29,1.00,1.00,1.00,6.57,1.99,5.64,60.60,2.59
first-order-theorem-proving,1.00,1.00,15.22,1.00,1.18,1.19,8.92,2.02,6.77,80.16,2.89
fried,3.02,29.20,4.06,2.02,2.74,1.26,11.12,1.99,7.53,120.00,2.93
house_8L,2.72,72.00,38.40,1.00,1.21,1.21,11.94,1.98,6.74,80.04,2.78
jungle_chess_2pcs_raw_endgame_complete,1.00,1.48,10.27,1.00,1.00,1.21,14.66,2.00,6.68,94.29,2.78
kr-vs-k,59.78,68.39,70.28,1.00,1.00,2.18,15.95,2.47,4.91,66.34,2.76
kropt,1.00,1.00,21.99,2.30,1.43,1.00,6.64,2.16,5.91,83.90,2.84
meta_stream_intervals,6.72,4.44,18.23,1.00,1.00,1.51,9.85,2.01,7.07,91.07,2.91
mfeat-karhunen,1.00,7.99,26.81,1.17,1.17,1.17,9.22,2.02,7.38,200.66,2.97
mfeat-morphological,2.68,28.92,28.92,1.21,2.48,2.57,9.22,1.99,7.01,181.77,2.83
no2,1.00,1.00,29.32,1.93,1.93,1.21,13.06,1.99,7.01,133.18,2.84
nomao,2.61,2.90,2.61,1.00,1.00,1.18,9.22,1.99,7.35,102.07,2.91
nursery,82.80,90.47,8.52,1.22,1.01,1.53,9.44,1.99,7.28,101.93,2.89
phoneme,1.00,1.00,34.85,1.00,1.21,1.00,14.94,1.98,6.58,68.55,2.75
pm10,1.00,8.76,16.84,1.00,2.38,1.19,11.93,1.99,6.31,138.11,2.71
rmftsa_sleepdata,1.00,2.88,10.73,1.00,2.21,1.00,9.64,1.99,6.76,166.01,2.77
satimage,2.49,1.38,21.05,1.00,1.35,1.17,9.65,2.04,6.35,72.54,2.84
tamilnadu-electricity,1.01,32.30,1.00,1.91,1.87,1.00,11.65,2.21,6.52,116.93,2.90
"""

# §10.2, accuracy change (points) per dataset.
_ACC_CHANGE = """\
dataset,N4-1,N4-5,N4-50,N1-1,N1-5,N1-50,Rand,LAP1,LAP3,LAP10,Prn
2dplanes,-0.30,-1.02,0.07,-0.17,-0.15,-0.68,-0.62,-0.75,-0.94,-26.03,-0.10
ailerons,0.00,0.00,-3.02,0.00,-3.46,-2.61,-2.72,-1.68,-4.48,-35.19,-0.87
airlines,0.00,0.00,-9.41,0.00,0.00,-9.31,-9.96,-2.51,-6.36,-22.67,-3.43
Amazon_employee_access,0.00,0.00,0.00,0.00,0.00,0.00,0.00,0.00,0.00,0.00,0.00
bank-marketing,-2.34,-2.39,-3.08,0.00,0.00,-3.50,-2.39,-8.49,-6.68,-35.65,-0.85
cardiotocography,-1.58,-1.49,-2.62,-0.57,-2.41,-0.39,-1.58,-0.54,-4.52,-9.29,0.21
CreditCardSubset,0.01,0.01,0.01,0.00,0.01,0.01,-0.01,0.00,0.00,-0.01,0.00
diabetes,-2.60,-2.92,-5.41,-0.43,-0.43,0.00,-3.35,-0.76,-5.74,-15.48,-2.09
diggle_table_a2,6.99,9.68,0.54,6.72,0.81,1.34,8.33,-2.96,-9.68,-37.90,-2.24
disclosure_z,0.00,-3.63,-5.51,-3.88,-4.89,-6.14,-4.76,-1.00,-2.76,-6.02,-1.81
electricity-normalized,-0.12,-0.06,-0.80,0.00,0.00,0.00,-1.16,-5.31,-6.49,-25.01,-1.36
first-order-theorem-proving,0.00,0.00,-7.56,0.00,-3.54,-3.34,-6.07,-2.17,-10.40,-27.76,-1.66
fried,-0.04,-0.73,-0.88,0.46,-1.34,0.35,-0.88,-0.77,-8.02,-35.78,-0.33
house_8L,1.35,0.57,0.66,0.00,1.62,1.62,-0.17,-1.91,-6.33,-25.87,-0.63
jungle_chess_2pcs_raw_endgame_complete,0.00,-0.88,-0.19,0.00,0.00,-3.13,-1.21,-3.65,-10.30,-35.69,-0.96
kr-vs-k,-10.45,-9.19,-11.61,0.00,0.00,-4.56,-5.03,-10.95,-16.63,-21.80,-1.48
kropt,0.00,0.00,-7.47,-4.10,-4.39,0.00,-4.10,-5.14,-14.99,-22.75,-1.20
meta_stream_intervals,-4.69,-0.07,-12.27,0.00,0.00,-10.02,-2.37,-4.37,-20.33,-53.71,-1.31
mfeat-karhunen,0.00,6.21,13.04,-3.37,-3.37,-0.63,7.42,-0.17,-6.17,-47.12,4.11
mfeat-morphological,1.71,1.54,-0.25,-0.21,-0.21,-0.17,1.83,-1.75,-0.67,-21.21,-0.26
no2,0.00,0.00,-17.67,-15.33,-15.17,-15.00,-14.17,-9.67,-22.83,-22.17,-4.69
nomao,-1.19,-1.22,-1.24,0.00,0.00,-1.46,-1.12,-3.00,-3.75,-38.27,-0.27
nursery,0.55,0.93,1.43,-0.26,0.17,0.23,1.19,-0.85,-1.89,-51.20,0.15
phoneme,0.00,0.00,-5.27,0.00,-1.79,0.00,-5.03,-6.09,-11.30,-23.64,-1.21
pm10,0.00,-17.33,-20.00,0.00,-13.83,-13.33,-16.33,-3.33,-9.83,-20.67,-5.00
rmftsa_sleepdata,0.00,-1.14,-1.14,0.00,-1.63,0.00,-0.41,1.54,-2.11,-12.03,-1.51
satimage,0.06,-1.45,-0.70,0.00,-0.14,0.39,-0.19,-3.91,-18.44,-67.55,0.22
tamilnadu-electricity,-0.05,0.20,0.00,3.38,7.69,0.00,0.34,-1.02,-5.69,-13.31,1.07
"""

CONFIGS = ("N4-1", "N4-5", "N4-50", "N1-1", "N1-5", "N1-50", "Rand", "LAP1", "LAP3", "LAP10", "Prn")


def _parse(text: str) -> dict:
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0][1:]
    return {r[0]: {h: float(v) for h, v in zip(header, r[1:])} for r in rows[1:]}


AGGREGATE: dict[str, dict[str, float]] = _parse(_AGGREGATE)
"""config -> {ratio_mean, ratio_std, ratio_median, ratio_max, ratio_min, dacc_mean, ..., dacc_min}."""

PER_DATASET_COMPRESSION: dict[str, dict[str, float]] = _parse(_COMPRESSION)
"""dataset -> config -> mean compression over its 6 held-out networks."""

PER_DATASET_ACC_CHANGE: dict[str, dict[str, float]] = _parse(_ACC_CHANGE)
"""dataset -> config -> mean accuracy change (points) over its 6 held-out networks."""

DATASETS: tuple[str, ...] = tuple(PER_DATASET_COMPRESSION)
"""The 28 datasets of the paper's evaluation (§8.1)."""


def paper_config(method: str, passes: int, tau, setting=None) -> str | None:
    """The published column that corresponds to one of our method groups, or None.

    neon -> N<passes>-<tau> (passes 1 or 4, tau 1/5/50); random at 4 passes -> Rand; lap with k iterations
    (setting 1, 3 or 10) -> LAP<k>; magnitude pooled over its sweep of fractions (setting "sweep") -> Prn.
    """
    if method == "neon" and passes in (1, 4) and tau is not None and float(tau) in (1.0, 5.0, 50.0):
        return f"N{passes}-{int(float(tau))}"
    if method == "random" and passes == 4:
        return "Rand"
    if method == "lap":
        k = _lap_iterations(setting)
        if k in (1, 3, 10):
            return f"LAP{k}"
    if method == "magnitude" and setting == "sweep":  # "Prn" pools a sweep of pruned fractions (§9)
        return "Prn"
    return None


def _lap_iterations(setting):
    if isinstance(setting, dict):
        setting = setting.get("iters", setting.get("k", setting.get("iterations")))
    try:
        return int(float(str(setting).split("=")[-1]))
    except (TypeError, ValueError):
        return None
