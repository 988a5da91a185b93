"""infra/validate.py: botocore's checks, the service model's enums and ours, on a whole request."""

from __future__ import annotations

import copy

import pytest

from aws_support import BUCKET
from fruits.exceptions import FruitsError
from infra.cluster import ClusterOptions, planned_request
from infra.validate import validate_parameters, validate_request


def test_validate_request_applies_botocore_and_service_model_enums() -> None:
    request = planned_request(ClusterOptions(bucket=BUCKET, task_count=1))

    wrong_type = copy.deepcopy(request)
    wrong_type["Instances"]["InstanceGroups"][1]["InstanceCount"] = "2"
    with pytest.raises(FruitsError, match=r"Invalid type for parameter Instances\.InstanceGroups\[1\]\.InstanceCount"):
        validate_request(wrong_type)

    missing = copy.deepcopy(request)
    del missing["Name"]
    with pytest.raises(FruitsError, match="Missing required parameter"):
        validate_request(missing)

    bad_market = copy.deepcopy(request)
    bad_market["Instances"]["InstanceGroups"][2]["Market"] = "SPOTTY"
    with pytest.raises(
        FruitsError, match=r"Instances\.InstanceGroups\[2\]\.Market='SPOTTY' is not one of ON_DEMAND, SPOT"
    ):
        validate_request(bad_market)

    bad_role = copy.deepcopy(request)
    bad_role["Instances"]["InstanceGroups"][0]["InstanceRole"] = "PRIMARY"
    with pytest.raises(FruitsError, match="is not one of MASTER, CORE, TASK"):
        validate_request(bad_role)

    nested = copy.deepcopy(request)
    (defaults,) = [c for c in nested["Configurations"] if c["Classification"] == "spark-defaults"]
    defaults["Configurations"] = [{"Classification": "export", "Properties": {}}]
    with pytest.raises(FruitsError, match="'export' cannot be nested in 'spark-defaults'"):
        validate_request(nested)

    with pytest.raises(FruitsError, match="ActionOnFailure='KEEP_GOING' is not one of"):
        validate_parameters(
            "AddJobFlowSteps",
            {
                "JobFlowId": "j-1",
                "Steps": [{"Name": "x", "ActionOnFailure": "KEEP_GOING", "HadoopJarStep": {"Jar": "a"}}],
            },
        )


def test_emrfs_site_is_refused_on_a_release_without_emrfs() -> None:
    request = planned_request(ClusterOptions(bucket=BUCKET))
    request["Configurations"].append({"Classification": "emrfs-site", "Properties": {"fs.s3.consistent": "true"}})
    with pytest.raises(FruitsError, match="unknown configuration classification 'emrfs-site'"):
        validate_request(request)
