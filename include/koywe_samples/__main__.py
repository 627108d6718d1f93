"""CLI: ``python -m koywe_samples --count N --seed S --out PATH [--invalid]``.

Writes JSON Lines (one ``{"reference", "account_id", "document"}`` per line), streaming, UTF-8.
``--out -`` writes to stdout. ``--invalid`` appends the deliberately invalid lines of
:func:`koywe_samples.generate.generate_invalid_lines` after the valid ones. ``--varied`` draws the valid
lines from :func:`koywe_samples.generate.generate_varied_lines` (exempt, export, foreign-currency,
anonymous and generic-receiver documents too).
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext

from koywe_samples.generate import COUNTRIES, generate_invalid_lines, generate_lines, generate_varied_lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m koywe_samples", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, required=True, help="number of valid lines")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, help="output .jsonl path, or - for stdout")
    parser.add_argument(
        "--countries", default=",".join(COUNTRIES), help="comma-separated, default CL,PE,CO,MX"
    )
    parser.add_argument("--prefix", default="TXN", help="reference prefix (default TXN)")
    parser.add_argument("--invalid", action="store_true", help="append the invalid sample lines")
    parser.add_argument(
        "--varied", action="store_true", help="every kind of valid document, not only facturas/boletas"
    )
    args = parser.parse_args(argv)
    countries = tuple(c.strip().upper() for c in args.countries.split(",") if c.strip())
    unknown = [c for c in countries if c not in COUNTRIES]
    if unknown or not countries or args.count < 0:
        parser.error(f"--count must be >= 0 and --countries some of {','.join(COUNTRIES)}")
    generate = generate_varied_lines if args.varied else generate_lines
    lines = generate(args.count, seed=args.seed, countries=countries, reference_prefix=args.prefix)
    out = nullcontext(sys.stdout) if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    with out as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
        if args.invalid:
            for raw in generate_invalid_lines(args.seed):
                fh.write(raw + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
