"""Deployment specs for ``modelyard serve``: model URIs, deployment files, modelyard.yml sections,
the server's record, and the errors a user sees for a bad one. (Pure Python, no processes.)"""
import textwrap

import pytest

from modelyard.serving.spec import Arm, DeploymentSpec, SpecError, parse_model_uri


def write(tmp_path, text: str, name: str = "deploy.yml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_model_uris_name_an_alias_or_a_version():
    assert parse_model_uri("models:/fraud@champion") == ("fraud", "champion", None)
    assert parse_model_uri("models:/fraud/12") == ("fraud", None, "12")
    spec = DeploymentSpec.from_model_uri("models:/fraud@champion")
    assert spec.name == "fraud-champion" and spec.arms == (Arm(alias="champion"),)
    assert DeploymentSpec.from_model_uri("models:/fraud/3", name="fraud-prod").name == "fraud-prod"
    for bad in ("models:/fraud", "runs:/abc/model", "models:/fraud/latest", "models:/a/b/c", "/tmp/model"):
        with pytest.raises(SpecError, match="is not a registered model URI"):
            parse_model_uri(bad)


def test_a_deployment_file_gives_versions_weights_and_a_shadow(tmp_path):
    spec = DeploymentSpec.from_file(write(tmp_path, """
        name: fraud-prod
        model: fraud
        versions:
          - alias: champion
            weight: 90
          - version: 4
            weight: 10
        shadow:
          alias: challenger
    """))
    assert spec.name == "fraud-prod" and spec.model_name == "fraud"
    assert spec.arms == (Arm(alias="champion", weight=90), Arm(version="4", weight=10))
    assert spec.shadow == Arm(alias="challenger")
    assert spec.to_record() == {"name": "fraud-prod", "model_name": "fraud", "shadow_alias": "challenger",
                                "versions": [{"alias": "champion", "weight": 90}, {"version": "4", "weight": 10}]}
    assert spec.describe() == "fraud: @champion 90%, v4 10%, shadow @challenger"


def test_a_short_file_serves_one_alias_and_a_bare_shadow_is_a_version(tmp_path):
    spec = DeploymentSpec.from_file(write(tmp_path, """
        name: f
        model: fraud
        alias: prod
        shadow: 7
    """))
    assert spec.arms == (Arm(alias="prod"),) and spec.shadow == Arm(version="7")


def test_modelyard_yml_holds_several_deployments_picked_by_name(tmp_path):
    path = write(tmp_path, """
        stages: [train]
        deployments:
          fraud-prod:
            model: fraud
            alias: champion
          fraud-canary:
            model: fraud
            versions: [{version: 3, weight: 1}, {version: 4, weight: 1}]
    """, "modelyard.yml")
    assert DeploymentSpec.from_file(path, "fraud-prod").arms == (Arm(alias="champion"),)
    assert [a.version for a in DeploymentSpec.from_file(path, "fraud-canary").arms] == ["3", "4"]
    with pytest.raises(SpecError, match="holds 2 deployments: pass --name"):
        DeploymentSpec.from_file(path)
    with pytest.raises(SpecError, match="no deployment named 'nope'"):
        DeploymentSpec.from_file(path, "nope")
    listed = write(tmp_path, """
        deployments:
          - name: only
            model: fraud
            version: 2
    """, "list.yml")
    assert DeploymentSpec.from_file(listed).arms == (Arm(version="2"),)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "a deployment file is a mapping"),
    ("name: x\nalias: a", "'model' (the registered model's name) is required"),
    ("model: m\nalias: a", "'name' is required"),
    ("name: x\nmodel: m", "say what to serve"),
    ("name: x\nmodel: m\nalias: a\nversions: [{version: 1}]", "not both"),
    ("name: x\nmodel: m\nversions: [{version: one}]", "is not a version number"),
    ("name: x\nmodel: m\nversions: [{version: 1, weight: heavy}]", "is not a number"),
    ("name: x\nmodel: m\nversions: [{version: 1, weight: -5}]", "a weight is a number >= 0"),
    ("name: x\nmodel: m\nversions: [{version: 1, weight: 0}]", "add up to 0"),
    ("name: x\nmodel: m\nversions: [{version: 1, alias: a}]", "exactly one of 'version' and 'alias'"),
    ("name: x\nmodel: m\nversions: []", "serves no version"),
    ("name: x\nmodel: m\nalias: a\ncolour: red", "unknown key(s) colour"),
    ("name: x\nmodel: m\nalias: a\nshadow: {alias: b, weight: 1, size: 2}", "unknown key(s) size"),
    ("deployments:\n  x: 3", "deployment 'x' is not a mapping"),
    ("name: x\nmodel: m\nalias: [a", "cannot read"),
])
def test_a_bad_deployment_file_says_what_is_wrong(tmp_path, text, message):
    with pytest.raises(SpecError) as err:
        DeploymentSpec.from_file(write(tmp_path, text))
    assert message in str(err.value)


def test_a_record_from_the_server_becomes_the_same_spec():
    spec = DeploymentSpec(name="d", model_name="m", arms=(Arm(alias="champion", weight=95), Arm(version="5", weight=5)),
                          shadow=Arm(version="6"))
    record = {**spec.to_record(), "generation": 3, "status": "serving", "replicas": []}
    assert DeploymentSpec.from_record(record) == spec


def test_a_modelyard_yml_with_jobs_and_deployments_serves_both_readers(tmp_path):
    from modelyard.pipelines import load

    path = write(tmp_path, """
        stages: [train]
        train:
          stage: train
          script: echo training
        deployments:
          fraud-prod:
            model: fraud
            alias: champion
    """, "modelyard.yml")
    assert list(load(path).jobs) == ["train"]  # the pipeline runner skips the deployments section
    assert DeploymentSpec.from_file(path).name == "fraud-prod"
