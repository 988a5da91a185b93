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
from infra.cost import Comparison, cost_per_million, estimate_cost, estimate_serverless_cost
from infra.event_path import estimate_event_path
from infra.serverless import ServerlessOptions, WorkerSize


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
    with pytest.raises(FruitsError, match=r"unknown instance type 'm5\.xxl'"):
        cost_per_million(seed_rate, "m5.xxl", 3, "us-east-1")


# ---------------------------------------------------------------------------- EMR Serverless
# infra/prices.json, emr_serverless (PerfKitBenchmarker's table): eu-west-3 0.06318 $/vCPU-h, 0.00689 $/GB-h,
# 0.000129 $/GB-h of disk over 20 GB; us-east-1 0.052624, 0.0057785, 0.000111.
def test_serverless_cost_of_the_default_job_by_hand() -> None:
    cost = estimate_serverless_cost(ServerlessOptions(bucket=BUCKET, region="eu-west-3"), 75)

    driver, executors = cost.workers
    assert driver.per_hour == pytest.approx(0.18148)  # 2 x 0.06318 + 8 x 0.00689
    assert executors.per_hour == pytest.approx(0.72592)  # 2 x (4 x 0.06318 + 16 x 0.00689)
    assert cost.per_hour == pytest.approx(0.9074)
    assert cost.images_per_second == 150  # 2 executors x 75; the driver processes no image
    assert cost.per_million_images == pytest.approx(1.680370, rel=1e-5)  # 0.9074 / 540,000 img/h x 1e6


def test_serverless_disk_over_the_free_20_gb_is_billed() -> None:
    options = ServerlessOptions(bucket=BUCKET, region="eu-west-3", executor=WorkerSize(4, 16, 50), executors=1)
    (_, executor) = estimate_serverless_cost(options, 75).workers
    assert executor.per_worker_hour == pytest.approx(0.36296 + 30 * 0.000129)


def test_serverless_in_a_region_without_prices_is_unknown() -> None:
    cost = estimate_serverless_cost(ServerlessOptions(bucket=BUCKET, region="ap-southeast-2"), 75)
    assert cost.per_hour is None and cost.per_million_images is None
    assert cost.to_dict()["unknown"] is True


# ---------------------------------------------------------------------------- the event path
# infra/prices.json, event_path (us-east-1): Lambda 0.20 $/1M + 0.0000133334 $/GB-s (arm64), SNS 0.50 $/1M,
# SQS 0.40 $/1M requests, S3 GET 0.40 $/1M; eu-west-3 has only Lambda and S3 GET (0.42 $/1M).
def test_event_path_through_lambda_and_sns_by_hand() -> None:
    events = estimate_event_path("us-east-1", "lambda-sns", lambda_ms=100)

    by_name = {i.name: i.per_million_images for i in events.items}
    assert by_name["Lambda duration"] == pytest.approx(0.1666675)  # 1M x 0.1 s x 0.125 GB x 0.0000133334
    assert by_name["SQS receive + delete, 10 messages per request"] == pytest.approx(0.08)  # 0.2 requests per image
    assert events.per_million_images == pytest.approx(1.3466675)  # 0.20 + 0.1666675 + 0.50 + 0 + 0.08 + 0.40
    assert all("none found" not in i.note for i in events.items)


def test_direct_s3_to_sqs_wiring_pays_only_the_queue_and_the_reads() -> None:
    events = estimate_event_path("us-east-1", "s3-sqs")
    assert [i.name for i in events.items] == [
        "SQS receive + delete, 10 messages per request",
        "S3 GET: the stream reads each image once",
    ]
    assert events.per_million_images == pytest.approx(0.48)


def test_a_region_without_an_event_price_borrows_us_east_1s_and_says_so() -> None:
    events = estimate_event_path("eu-west-3", "lambda-sns", lambda_ms=100)

    notes = {i.name: i.note for i in events.items}
    assert "us-east-1 price: none found for eu-west-3" in notes["SNS publishes, one per upload"]
    assert "none found" not in notes["S3 GET: the stream reads each image once"]  # Paris' own 0.42
    assert events.per_million_images == pytest.approx(1.3666675)  # S3 GET 0.42 instead of 0.40


# ---------------------------------------------------------------------------- side by side
def test_side_by_side_table_by_hand() -> None:
    ec2 = estimate_cost(build_request(ClusterOptions(bucket=BUCKET, region="eu-west-3")), "eu-west-3", 75)
    serverless = estimate_serverless_cost(ServerlessOptions(bucket=BUCKET, region="eu-west-3"), 75)
    table = Comparison("eu-west-3", ec2, serverless, estimate_event_path("eu-west-3"), fit_images=10_000).columns()

    on_ec2, on_serverless = table["EMR on EC2"], table["EMR Serverless"]
    assert on_ec2["stream_per_month"] == pytest.approx(595.68)  # 0.816 x 730
    assert on_serverless["stream_per_month"] == pytest.approx(662.402)  # 0.9074 x 730
    # 10,000 images at 150 img/s = 0.018519 h, plus 10 min (EC2) or 1 min (Serverless) of start-up
    assert on_ec2["fit_run"] == pytest.approx(0.816 * (10_000 / 150 / 3600 + 10 / 60))
    assert on_serverless["fit_run"] == pytest.approx(0.9074 * (10_000 / 150 / 3600 + 1 / 60))
    assert on_ec2["per_million_total"] == pytest.approx(1.511111 + 1.3666675, rel=1e-6)
    assert on_serverless["per_million_total"] == pytest.approx(1.680370 + 1.3666675, rel=1e-6)
