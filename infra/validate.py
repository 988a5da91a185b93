"""Offline checks of a request before it is sent: botocore's own, the service model's enums, and ours.

botocore validates types, required members and minimums against the service model, but not the
enums (`Market`, `InstanceRole`, `ActionOnFailure`...): those are checked here from the same model.
No network: the service models ship inside botocore.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from fruits.exceptions import FruitsError
from infra.prices import PriceTable, load_prices
from infra.release import release

# Top-level classifications the EMR launcher accepts; `export` only nested inside a *-env one.
# No emrfs-site: EMRFS is gone from emr-spark-8.x (S3 is reached through S3A).
KNOWN_CLASSIFICATIONS = frozenset(
    {
        "spark",
        "spark-defaults",
        "spark-env",
        "spark-log4j2",
        "spark-metrics",
        "spark-hive-site",
        "yarn-site",
        "yarn-env",
        "capacity-scheduler",
        "core-site",
        "hdfs-site",
        "hadoop-env",
        "hadoop-log4j",
        "mapred-site",
        "livy-conf",
        "livy-env",
    }
)
NESTED_CLASSIFICATION = "export"


@functools.lru_cache(maxsize=4)
def service_model(service: str) -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def validate_parameters(operation: str, params: Mapping[str, Any], service: str = "emr") -> None:
    """botocore's validation (types, required members, minimums) plus the enums it does not check."""
    from botocore.exceptions import ParamValidationError
    from botocore.validate import validate_parameters as botocore_validate

    shape = service_model(service).operation_model(operation).input_shape
    try:
        botocore_validate(params, shape)
    except ParamValidationError as exc:
        details = [line.strip() for line in str(exc.kwargs.get("report", exc)).splitlines() if line.strip()]
        raise FruitsError(f"invalid {operation} request: {'; '.join(details)}") from None
    problems = _enum_problems(params, shape, "")
    if problems:
        raise FruitsError(f"invalid {operation} request: {'; '.join(problems)}")


def _enum_problems(value: Any, shape: Any, path: str) -> list[str]:
    kind = shape.type_name
    if kind == "structure" and isinstance(value, Mapping):
        return [
            problem
            for key, item in value.items()
            if key in shape.members
            for problem in _enum_problems(item, shape.members[key], f"{path}.{key}" if path else key)
        ]
    if kind == "list" and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _enum_problems(item, shape.member, f"{path}[{i}]")]
    if kind == "map" and isinstance(value, Mapping):
        return [p for key, item in value.items() for p in _enum_problems(item, shape.value, f"{path}.{key}")]
    if kind == "string" and shape.enum and value not in shape.enum:
        return [f"{path}={value!r} is not one of {', '.join(shape.enum)}"]
    return []


def validate_request(request: Mapping[str, Any], prices: PriceTable | None = None) -> None:
    """Everything checkable without AWS on a run_job_flow request (so an edited request is checked too)."""
    prices = prices or load_prices()
    validate_parameters("RunJobFlow", request)
    release(request.get("ReleaseLabel", ""))
    for group in request["Instances"].get("InstanceGroups", []):
        prices.require_known(group["InstanceType"])
    check_classifications(request.get("Configurations", []), parent=None)


def check_classifications(configurations: Sequence[Mapping[str, Any]], parent: str | None) -> None:
    for configuration in configurations:
        name = configuration["Classification"]
        if parent is None and name not in KNOWN_CLASSIFICATIONS:
            raise FruitsError(
                f"unknown configuration classification {name!r}: use one of {', '.join(sorted(KNOWN_CLASSIFICATIONS))}"
            )
        if parent is not None and not (name == NESTED_CLASSIFICATION and parent.endswith("-env")):
            raise FruitsError(f"classification {name!r} cannot be nested in {parent!r} (only 'export' inside *-env)")
        check_classifications(configuration.get("Configurations", []), parent=name)
