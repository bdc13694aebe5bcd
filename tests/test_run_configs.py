"""Run configs: LocalRun's labels, env and working_dir checks, and references."""

import json
import os
import warnings

import pytest

from orchestrator.exceptions import OrchestratorError
from orchestrator.run_configs import LocalRun, RunConfig, RunConfigError


def test_run_config_error_is_an_orchestrator_error_and_a_value_error():
    assert issubclass(RunConfigError, OrchestratorError)
    assert issubclass(RunConfigError, ValueError)


def test_defaults_are_empty():
    config = LocalRun()
    assert (config.labels, config.env, config.working_dir) == ([], {}, None)
    config.validate()


def test_a_string_label_is_one_label_with_a_warning_to_pass_a_list():
    with pytest.warns(UserWarning) as caught:
        config = LocalRun(labels="prod")
    assert config.labels == ["prod"]
    [warning] = caught
    message = str(warning.message)
    assert "labels='prod' is a string" in message
    assert "Pass a list: labels=['prod']" in message
    assert warning.filename == __file__  # points at the caller, not at run_configs.py


def test_labels_are_sorted_and_de_duplicated():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LocalRun(labels=["gpu", "prod", "gpu"]).labels == ["gpu", "prod"]
        assert LocalRun(labels=("b", "a")).labels == ["a", "b"]
        assert LocalRun(labels={"x"}).labels == ["x"]


@pytest.mark.parametrize("labels, expected", [
    (5, "LocalRun(labels=5): labels must be a list of strings, not int"),
    ({"prod": True}, "labels must be a list of strings, not dict"),
    (b"prod", "not bytes"),
    (["prod", 5], "label 5 is a int, not a string; write it as '5'"),
    ([None], "label None is a NoneType, not a string"),
    (["prod", " "], "labels cannot be empty or blank; remove ' '"),
])
def test_labels_that_are_not_strings_are_refused_naming_the_value(labels, expected):
    with pytest.raises(RunConfigError) as info:
        LocalRun(labels=labels)
    assert expected in str(info.value)


def test_env_is_kept_as_str_to_str():
    assert LocalRun(env={"B": "2", "A": "1"}).env == {"A": "1", "B": "2"}


@pytest.mark.parametrize("env, expected", [
    ({"PORT": 8080}, "env['PORT'] = 8080 is a int; environment values must be strings: "
                     "env={'PORT': '8080'}"),
    ({"DEBUG": None}, "env['DEBUG'] = None is a NoneType"),
    ({1: "x"}, "environment variable name 1 is not valid"),
    ({"": "x"}, "environment variable name '' is not valid"),
    ({"A=B": "x"}, "environment variable name 'A=B' is not valid"),
    (["A=1"], "env must be a dict of str to str, not list"),
])
def test_env_with_bad_names_or_values_is_refused_naming_the_key(env, expected):
    with pytest.raises(RunConfigError) as info:
        LocalRun(env=env)
    assert expected in str(info.value)


def test_working_dir_is_stored_absolute_and_need_not_exist_yet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = LocalRun(working_dir="later")
    assert config.working_dir == str(tmp_path / "later")
    with pytest.raises(RunConfigError) as info:
        config.validate()
    assert f"working_dir {str(tmp_path / 'later')!r} does not exist on this host" in str(
        info.value)
    (tmp_path / "later").mkdir()
    config.validate()


def test_working_dir_expands_the_home_directory():
    assert LocalRun(working_dir="~/etl").working_dir == os.path.expanduser("~/etl")


def test_working_dir_that_is_a_file_fails_validation(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunConfigError, match="is a file, not a directory"):
        LocalRun(working_dir=str(tmp_path / "file")).validate()


@pytest.mark.parametrize("working_dir", [5, "", ["/srv"]])
def test_working_dir_must_be_a_path(working_dir):
    with pytest.raises(RunConfigError) as info:
        LocalRun(working_dir=working_dir)
    assert f"LocalRun(working_dir={working_dir!r}): working_dir must be a path" in str(
        info.value)


def test_ref_round_trips_through_json(tmp_path):
    config = LocalRun(labels=["prod", "eu"], env={"STAGE": "prod"}, working_dir=tmp_path)
    ref = config.to_ref()
    assert ref == {"type": "LocalRun", "labels": ["eu", "prod"], "env": {"STAGE": "prod"},
                   "working_dir": str(tmp_path)}
    rebuilt = RunConfig.from_ref(json.loads(json.dumps(ref)))
    assert isinstance(rebuilt, LocalRun)
    assert rebuilt == config
    assert rebuilt != LocalRun(labels=["prod"])
    assert LocalRun.from_ref({"type": "LocalRun"}) == LocalRun()


def test_from_ref_with_an_unknown_type_names_it():
    with pytest.raises(RunConfigError) as info:
        RunConfig.from_ref({"type": "NomadRun", "image": "x"})
    assert "Unknown run config type 'NomadRun'" in str(info.value)
    assert ("known types: DockerRun, ECSRun, KubernetesRun, LocalRun, UniversalRun, "
            "VertexRun") in str(info.value)


@pytest.mark.parametrize("ref", [None, ["LocalRun"], {"labels": []}])
def test_from_ref_without_a_type_says_what_to_pass(ref):
    with pytest.raises(RunConfigError, match="is not a dict with a 'type' key"):
        RunConfig.from_ref(ref)


def test_from_ref_checks_values_like_the_constructor():
    with pytest.raises(RunConfigError, match="label 5 is a int"):
        RunConfig.from_ref({"type": "LocalRun", "labels": [5]})


def test_repr_is_readable_and_hides_env_values():
    text = repr(LocalRun(labels=["prod"], env={"TOKEN": "s3cret"}, working_dir="/srv/etl"))
    assert text == "LocalRun(labels=['prod'], env={'TOKEN': ...}, working_dir='/srv/etl')"
    assert repr(LocalRun()) == "LocalRun(labels=[])"
