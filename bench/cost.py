"""EMR cost per 1M images from the measured streaming throughput, versus the seed's 320 images in 95 s.

No measurement of its own and no AWS call: it turns a throughput measured on this machine into
$ per 1M images with the price table in infra/prices.json (EC2 on-demand + EMR uplift; spot
discounts only the EC2 part), for the same clusters in two regions, and compares with the seed's
figure (320 images in 95 s on 3 x m5.xlarge = 3.37 images/s for the whole cluster).

Input: "stream_images_per_second" from bench/out/stream.json (run `.venv/bin/python bench/stream.py`
first), or --images-per-second.

Scaling assumption (stated in the output too): this machine has 2 vCPUs; an m5.xlarge has 4 vCPUs
= 2 physical cores (hyper-threads). Images/s per processing node = measured here x --node-factor
(default 1.0: "one m5.xlarge ~ this machine"). Only core and task nodes run executors; the primary
runs the driver and YARN and is billed but adds no throughput. Every node is assumed busy: an idle
stream costs $/h all the same. EBS, S3 requests and data transfer are not included.

Clusters: 1 primary + 2 core m5.xlarge on-demand ("default", what `fruits emr up` builds), and the
same plus 2 spot task nodes; the seed is priced as 3 on-demand m5.xlarge at 320/95 images/s.

    .venv/bin/python bench/cost.py [--images-per-second N] [--node-factor 1.0] [--spot-fraction 0.4]
"""

from __future__ import annotations

import argparse
import json
import sys

from common import OUT, save

SEED_IMAGES, SEED_SECONDS, SEED_NODES = 320, 95.0, 3
INSTANCE_TYPE = "m5.xlarge"
REGIONS = ("eu-west-3", "us-east-1")
CORE_NODES, TASK_NODES = 2, 2


def measured_rate(args: argparse.Namespace) -> tuple[float, str]:
    if args.images_per_second is not None:
        if args.images_per_second <= 0:
            sys.exit("cost.py: --images-per-second must be positive")
        return args.images_per_second, "--images-per-second"
    path = OUT / "stream.json"
    try:
        data = json.loads(path.read_text())
        rate = float(data["stream_images_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        sys.exit(
            f"cost.py: no streaming throughput in {path}: run `.venv/bin/python bench/stream.py` first "
            "(or pass --images-per-second N)"
        )
    if rate <= 0:
        sys.exit(f"cost.py: {path} has a non-positive stream_images_per_second ({rate})")
    return rate, f"{path.relative_to(OUT.parents[1])} ({data.get('when', '?')}, {data.get('machine', '?')})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images-per-second",
        type=float,
        metavar="N",
        help="streaming throughput measured on this machine (default: bench/out/stream.json)",
    )
    parser.add_argument(
        "--node-factor",
        type=float,
        default=1.0,
        metavar="F",
        help="images/s of one m5.xlarge = F x this machine's (default 1.0)",
    )
    parser.add_argument(
        "--spot-fraction",
        type=float,
        default=None,
        metavar="F",
        help="spot EC2 price as a fraction of on-demand (default: infra/defaults.py's, 0.4)",
    )
    args = parser.parse_args()
    if args.node_factor <= 0:
        sys.exit("cost.py: --node-factor must be positive")

    from fruits.exceptions import FruitsError
    from infra.cluster import ClusterOptions, build_request
    from infra.cost import DEFAULT_SPOT_FRACTION, cost_per_million, estimate_cost
    from infra.prices import load_prices

    spot_fraction = DEFAULT_SPOT_FRACTION if args.spot_fraction is None else args.spot_fraction
    here, source = measured_rate(args)
    per_node = here * args.node_factor
    seed_rate = SEED_IMAGES / SEED_SECONDS
    prices = load_prices()
    print(f"measured here: {here:.1f} images/s, from {source}")
    print(
        f"assumption: one {INSTANCE_TYPE} (4 vCPUs = 2 physical cores) processes {args.node_factor:g} x this "
        f"machine's (2 vCPUs) rate = {per_node:.1f} images/s; only core/task nodes process; all nodes busy"
    )
    print(
        f"seed: {SEED_IMAGES} images in {SEED_SECONDS:g} s on {SEED_NODES} x {INSTANCE_TYPE} = "
        f"{seed_rate:.2f} images/s for the cluster; prices as of {prices.as_of} (infra/prices.json), "
        f"spot EC2 at {spot_fraction:g} x on-demand"
    )

    clusters = [
        # name, billed groups [(count, market)], processing nodes
        (f"ours: 1 primary + {CORE_NODES} core, on-demand", [(1 + CORE_NODES, "ON_DEMAND")], CORE_NODES, 0),
        (
            f"ours: + {TASK_NODES} spot task nodes",
            [(1 + CORE_NODES, "ON_DEMAND"), (TASK_NODES, "SPOT")],
            CORE_NODES + TASK_NODES,
            TASK_NODES,
        ),
    ]
    rows, problems, results = [], [], []
    for region in REGIONS:
        seed = cost_per_million(seed_rate, INSTANCE_TYPE, SEED_NODES, region, prices=prices)
        seed_hour = None if seed is None else seed * seed_rate * 3600 / 1e6
        rows.append((region, f"seed: {SEED_NODES} x {INSTANCE_TYPE} on-demand", seed_rate, seed_hour, seed, None))
        results.append(
            {
                "region": region,
                "cluster": "seed",
                "images_per_second": round(seed_rate, 3),
                "per_hour": seed_hour,
                "per_million_images": seed,
            }
        )
        for name, groups, processing, tasks in clusters:
            rate = processing * per_node
            parts = [
                cost_per_million(rate, INSTANCE_TYPE, n, region, market, spot_fraction=spot_fraction, prices=prices)
                for n, market in groups
            ]
            ours = None if any(p is None for p in parts) else sum(parts)
            # Cross-check against the estimate `fruits emr plan` prints for the same cluster.
            try:
                request = build_request(
                    ClusterOptions(bucket="bench-cost", region=region, core_count=CORE_NODES, task_count=tasks), prices
                )
                plan = estimate_cost(request, region, per_node, spot_fraction=spot_fraction, prices=prices)
            except FruitsError as exc:
                problems.append(f"{region} {name}: {exc}")
                continue
            if (ours is None) != (plan.per_million_images is None) or (
                ours is not None and abs(ours - plan.per_million_images) > 1e-9 * max(1.0, ours)
            ):
                problems.append(f"{region} {name}: cost_per_million {ours} != estimate_cost {plan.per_million_images}")
            ratio = None if ours is None or seed is None else seed / ours
            rows.append((region, name, rate, plan.per_hour, ours, ratio))
            results.append(
                {
                    "region": region,
                    "cluster": name,
                    "images_per_second": round(rate, 3),
                    "per_hour": plan.per_hour,
                    "per_million_images": ours,
                    "seed_over_ours": ratio,
                }
            )

    print()
    print(cost_table(rows))
    print("  ratio = seed $ per 1M / ours: how many times cheaper; EBS, S3 requests, data transfer not included")
    if any(r[4] is None for r in rows):
        problems.append("a price is unknown in infra/prices.json (see the 'unknown' rows)")
    path = save(
        "cost",
        {
            "measured_images_per_second": here,
            "source": source,
            "node_factor": args.node_factor,
            "images_per_second_per_node": per_node,
            "spot_fraction": spot_fraction,
            "instance_type": INSTANCE_TYPE,
            "seed": {"images": SEED_IMAGES, "seconds": SEED_SECONDS, "nodes": SEED_NODES},
            "prices_as_of": prices.as_of,
            "rows": results,
        },
    )
    print(f"saved {path}")
    for problem in problems:
        print(f"INVALID: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cost_table(rows: list[tuple[str, str, float, float | None, float | None, float | None]]) -> str:
    def money(value: float | None, digits: int) -> str:
        return "unknown" if value is None else f"${value:.{digits}f}"

    width = max(len(r[1]) for r in rows)
    lines = [
        f"cost per 1M images on EMR ({INSTANCE_TYPE})",
        f"{'region':<10}  {'cluster':<{width}}  {'images/s':>8}  {'$ per hour':>10}  {'$ per 1M':>9}  {'ratio':>8}",
    ]
    for region, name, rate, per_hour, per_million, ratio in rows:
        shown = "baseline" if name.startswith("seed") else "-" if ratio is None else f"{ratio:.1f}x"
        lines.append(
            f"{region:<10}  {name:<{width}}  {rate:8.1f}  {money(per_hour, 3):>10}  "
            f"{money(per_million, 2):>9}  {shown:>8}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
