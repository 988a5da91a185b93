"""infra/cost.py: the cost of a cluster per hour and per 1M images, from the request and infra/prices.json.

Prices in the expectations are typed from infra/prices.json by hand (m5.xlarge: us-east-1 0.192 EC2
+ 0.048 EMR, eu-west-3 0.224 + 0.048) and multiplied out in the comments, never computed by the
code under test.
"""

from __future__ import annotations

import pytest

from aws_support import BUCKET
from fruits.exceptions import FruitsError
from infra.cluster import ClusterOptions, build_request, planned_request
from infra.cost import cost_per_million, estimate_cost


def test_on_demand_cost_matches_the_table_by_hand() -> None:
    cost = estimate_cost(build_request(ClusterOptions(bucket=BUCKET, region="us-east-1")), "us-east-1", 100)

    assert cost.per_hour == pytest.approx(0.72)  # 3 x (0.192 + 0.048)
    assert cost.processing_nodes == 2  # the primary does not process images
    assert cost.images_per_second == 200
    assert cost.per_million_images == pytest.approx(1.0)  # 0.72 $/h / 720,000 img/h x 1e6
    assert [(g.role, g.count, g.per_instance_hour) for g in cost.groups] == [
        ("MASTER", 1, pytest.approx(0.24)),
        ("CORE", 2, pytest.approx(0.24)),
    ]


def test_spot_discounts_only_the_ec2_part() -> None:
    request = build_request(ClusterOptions(bucket=BUCKET, region="us-east-1", task_count=2))
    cost = estimate_cost(request, "us-east-1", 100, spot_fraction=0.4)

    task = cost.groups[-1]
    assert (task.role, task.market, task.count) == ("TASK", "SPOT", 2)
    assert task.per_instance_hour == pytest.approx(0.1248)  # 0.4 x 0.192 + 0.048 (uplift undiscounted)
    assert cost.per_hour == pytest.approx(0.9696)  # 0.72 + 2 x 0.1248
    assert cost.per_million_images == pytest.approx(0.673333, rel=1e-5)  # 0.9696 / (4 x 100 x 3600) x 1e6


def test_bid_below_expected_spot_price_is_flagged() -> None:
    options = ClusterOptions(bucket=BUCKET, region="us-east-1", task_count=1, spot_bid_fraction=0.3)
    cost = estimate_cost(planned_request(options), "us-east-1", 100, spot_fraction=0.4)

    assert "may not launch" in cost.groups[-1].note  # bid 0.0576 < expected 0.0768


def test_a_missing_uplift_makes_the_total_unknown_not_cheaper() -> None:
    # c5.xlarge is a known type with an EC2 price but no EMR uplift in us-east-1.
    request = build_request(ClusterOptions(bucket=BUCKET, region="us-east-1", instance_type="c5.xlarge"))
    cost = estimate_cost(request, "us-east-1", 100)

    assert cost.per_hour is None and cost.per_million_images is None
    assert "no EMR uplift price for c5.xlarge in us-east-1" in cost.groups[0].note
    assert any(line.strip().startswith("total   unknown") for line in cost.lines())


def test_cost_per_million_for_the_benchmarks() -> None:
    seed_rate = 320 / 95  # the seed: 320 images in 95 s on 3 x m5.xlarge
    # 3 x 0.24 = 0.72 $/h; 0.72 x 95 / (320 x 3600) x 1e6 = 59.375
    assert cost_per_million(seed_rate, "m5.xlarge", 3, "us-east-1") == pytest.approx(59.375)
    # spot everywhere: 3 x (0.4 x 0.192 + 0.048) = 0.3744 $/h -> 0.3744 x 95 / 1,152,000 x 1e6 = 30.875
    assert cost_per_million(seed_rate, "m5.xlarge", 3, "us-east-1", "SPOT") == pytest.approx(30.875)
    # Paris: 3 x 0.272 = 0.816 $/h -> 0.816 x 95 / 1,152,000 x 1e6 = 67.2917
    assert cost_per_million(seed_rate, "m5.xlarge", 3, "eu-west-3") == pytest.approx(67.2917, rel=1e-5)
    assert cost_per_million(seed_rate, "m5.xlarge", 3, "sa-east-1") is None
    with pytest.raises(FruitsError, match="unknown instance type 'm5.xxl'"):
        cost_per_million(seed_rate, "m5.xxl", 3, "us-east-1")
