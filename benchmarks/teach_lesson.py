"""The Teach lesson's numbers and figures (docs/teach.md), measured and drawn by the app's own code.

    python benchmarks/teach_lesson.py                       # prints the numbers, writes docs/teach_*.png
    python benchmarks/teach_lesson.py --out /tmp --seeds 2  # elsewhere, fewer seeds

Figures: a frame of the Teach tab as its export writes it (``teach_frame.png``), the states final per
parallel iteration (``teach_staircase.png``), fixed point against Anderson on cos x
(``teach_secant.png``) and on a linear problem beside GMRES (``teach_gmres.png``), and parallel
iterations per history m for the three lanes over seeds (``teach_history.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paratta.tools.machine import machine  # noqa: E402
from ui.teach import draw, lecture  # noqa: E402
from ui.teach.lanes import LANES, SHORT_NAMES, newly_final  # noqa: E402

FRAME = 4  # the frame exported: Jacobi's iterate still far off, TAA's close to the path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs (default docs/)")
    p.add_argument("--seeds", type=int, default=10, help="seeds of the history sweep (default 10)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")

    s = lecture.scalar()
    print(f"cos x: x* = {s.fixed_point:.6f}, |f'(x*)| = {s.slope:.4f}; Picard's measured rate {s.rate():.4f}")
    print(
        f"  steps to |error| ≤ 1e-10: Picard {lecture.toys.steps_to(s.picard, 1e-10)}, Anderson m = 2 "
        f"{lecture.toys.steps_to(s.anderson, 1e-10)}; |Anderson − secant| ≤ {s.secant_gap:.1e}"
    )
    lecture.scalar_figure(s).savefig(args.out / "teach_secant.png")

    lin = lecture.linear()
    counts = {"Picard": lecture.toys.steps_to(lin.picard, 1e-8)}
    counts |= {f"Anderson {name}": lecture.toys.steps_to(r, 1e-8) for name, r in lin.anderson.items()}
    counts["GMRES"] = lecture.toys.steps_to(lin.gmres, 1e-8)
    print(f"linear, {lin.size} unknowns: iterations to ‖f(x) − x‖ ≤ 1e-8: {counts} (none: not within 200)")
    print(f"  max ‖x^AA_(k+1) − f(x^GMRES_k)‖ = {lin.shift_gap:.1e}")
    lecture.linear_figure(lin).savefig(args.out / "teach_gmres.png")

    result = lecture.default_lesson()
    print(
        f"toy2d defaults: iterations {lecture.iterations(result)}; fewest states final by one iteration "
        f"{lecture.least_gain(result)}"
    )
    for name in LANES:
        res = ", ".join(f"{x.max_residual:.1e}" for x in result.lanes[name][1:])
        print(f"  {SHORT_NAMES[name]}: newly final {newly_final(result.lanes[name])}; residuals {res}")
    (args.out / "teach_frame.png").write_bytes(draw.png(result, FRAME))
    draw.staircase_figure(result).savefig(args.out / "teach_staircase.png")
    switched_off = lecture.iterations(lecture.default_lesson(lam=1000.0))
    print(f"  λ = 1000 (γ ≈ 0: Anderson off): {switched_off}")

    rows = lecture.histories(seeds=tuple(range(args.seeds)))
    for m, row in rows.items():
        print(
            f"m = {m}: median {row['median']}; TAA fewer than one γ in {row['wins']}/{args.seeds} seeds; "
            f"counts {row['counts']}"
        )
    lecture.histories_figure(rows, args.seeds).savefig(args.out / "teach_history.png")
    print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
