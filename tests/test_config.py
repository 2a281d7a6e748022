"""Tests for flowrl.config: parsing, type checks, validation, error messages, field docs."""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings

import pytest

from flowrl.config import AlgorithmConfig, ModelConfig, field_docs, from_dict, load_config_file


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExamplePPOConfig(AlgorithmConfig):
    """A plan-style subclass: adds fields, overrides a default, extends _validate."""

    lr: float = 3e-4
    clip_param: float = 0.3
    """PPO surrogate clipping range; typically 0.1-0.3."""
    sgd_minibatch_size: int = 100
    """Minibatch size of each SGD step; typically 32-4096."""

    def _validate(self) -> None:
        super()._validate()
        self._check_in_range("clip_param", 0.0, 1.0, low_open=True)
        if self.sgd_minibatch_size > self.train_batch_size:
            raise ValueError(
                f"sgd_minibatch_size must be <= train_batch_size; got "
                f"sgd_minibatch_size={self.sgd_minibatch_size}, "
                f"train_batch_size={self.train_batch_size}. Lower sgd_minibatch_size."
            )
        if self.train_batch_size % self.sgd_minibatch_size:
            self._warn(
                f"train_batch_size={self.train_batch_size} is not a multiple of "
                f"sgd_minibatch_size={self.sgd_minibatch_size}."
            )


# -- construction, frozen-ness, defaults -------------------------------------------------------


def test_defaults_match_the_documented_values():
    config = AlgorithmConfig()
    assert (config.framework, config.num_workers, config.train_batch_size) == ("torch", 2, 4000)
    assert (config.lr, config.gamma, config.seed, config.lr_schedule) == (5e-5, 0.99, None, None)
    assert config.model == ModelConfig()
    assert config.model.fcnet_hiddens == (64, 64)
    assert config.env_config == {} and config.env_config is not AlgorithmConfig().env_config


def test_configs_are_frozen_and_keyword_only():
    config = AlgorithmConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.fcnet_hiddens = (1,)  # type: ignore[misc]
    with pytest.raises(TypeError):
        AlgorithmConfig("torch")  # type: ignore[misc]


def test_subclass_adds_fields_and_overrides_defaults():
    config = from_dict(ExamplePPOConfig, {"clip_param": 0.2})
    assert config.clip_param == 0.2 and config.lr == 3e-4 and config.num_workers == 2


def test_direct_construction_checks_types_without_converting():
    with pytest.raises(TypeError, match=r"fcnet_hiddens=\[32, 32\] \(list\).*from_dict"):
        ModelConfig(fcnet_hiddens=[32, 32])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"model expects ModelConfig; got model=\{"):
        AlgorithmConfig(model={"fcnet_hiddens": [32]})  # type: ignore[arg-type]


def test_subclass_without_dataclass_decorator_is_rejected():
    class Forgotten(AlgorithmConfig):
        extra: int = 1

    with pytest.raises(TypeError, match="Forgotten declares fields but is not a dataclass"):
        Forgotten()


# -- from_dict: keys -----------------------------------------------------------------------------


def test_unknown_key_names_the_closest_valid_key_and_the_help_command():
    with pytest.raises(ValueError) as info:
        from_dict(ExamplePPOConfig, {"train_batch_sise": 100})
    message = str(info.value)
    assert "Unknown config key 'train_batch_sise' for ExamplePPOConfig" in message
    assert "Did you mean 'train_batch_size'?" in message
    assert "flowrl train --run ExamplePPO --help" in message
    assert "docs/configuration.md" in message


def test_unknown_key_suggests_flowrl_name_for_other_libraries_names():
    with pytest.raises(ValueError, match="Unknown config key 'learning_rate'.*Did you mean 'lr'"):
        from_dict(AlgorithmConfig, {"learning_rate": 0.1})


def test_unknown_model_key_names_the_closest_model_key():
    with pytest.raises(ValueError) as info:
        from_dict(AlgorithmConfig, {"model": {"fcnet_hidden": [32]}})
    assert "Unknown config key 'model.fcnet_hidden' for ModelConfig" in str(info.value)
    assert "Did you mean 'model.fcnet_hiddens'?" in str(info.value)


def test_model_dict_merges_over_model_defaults():
    config = from_dict(AlgorithmConfig, {"model": {"fcnet_activation": "relu"}})
    assert config.model == ModelConfig(fcnet_activation="relu")
    assert config.model.fcnet_hiddens == (64, 64)


def test_none_and_empty_overrides_give_defaults():
    assert from_dict(AlgorithmConfig, None) == AlgorithmConfig() == from_dict(AlgorithmConfig, {})


def test_overrides_must_be_a_mapping():
    with pytest.raises(TypeError, match=r"must be a mapping.*overrides=\[\('lr', 1\)\]"):
        from_dict(AlgorithmConfig, [("lr", 1)])  # type: ignore[arg-type]


# -- from_dict: values ---------------------------------------------------------------------------


def test_int_is_accepted_and_converted_where_float_is_expected():
    config = from_dict(AlgorithmConfig, {"lr": 1, "grad_clip": 40, "num_cpus_per_worker": 2})
    assert config.lr == 1.0 and type(config.lr) is float
    assert type(config.grad_clip) is float and type(config.num_cpus_per_worker) is float


def test_lists_become_tuples():
    config = from_dict(
        AlgorithmConfig,
        {
            "model": {"fcnet_hiddens": [32, 16], "conv_filters": [[16, [8, 8], 4], [32, 4, 2]]},
            "lr_schedule": [[0, 1e-3], [1000, 1e-4]],
        },
    )
    assert config.model.fcnet_hiddens == (32, 16)
    assert config.model.conv_filters == ((16, (8, 8), 4), (32, 4, 2))
    assert config.lr_schedule == ((0, 1e-3), (1000, 1e-4))


def test_wrong_type_message_names_field_value_and_fix():
    with pytest.raises(TypeError) as info:
        from_dict(AlgorithmConfig, {"train_batch_size": "4000"})
    assert str(info.value) == (
        "Config field train_batch_size expects int; got train_batch_size='4000' (str). "
        "Use a whole number without quotes or a decimal point, e.g. 4000."
    )


def test_float_is_not_accepted_as_int():
    with pytest.raises(TypeError, match=r"num_workers expects int; got num_workers=2.5 \(float\)"):
        from_dict(AlgorithmConfig, {"num_workers": 2.5})


@pytest.mark.parametrize("field", ["num_workers", "lr"])
def test_bool_is_not_accepted_as_a_number(field):
    with pytest.raises(TypeError, match=rf"{field}=True \(bool\)\. A bool is not accepted"):
        from_dict(AlgorithmConfig, {field: True})


def test_optional_fields_accept_none_and_say_so_in_errors():
    config = from_dict(AlgorithmConfig, {"seed": None, "grad_clip": None, "seed": 3})  # noqa: F601
    assert config.seed == 3
    with pytest.raises(TypeError, match=r"seed expects int \| None; got seed='x'.*null"):
        from_dict(AlgorithmConfig, {"seed": "x"})


def test_literal_lists_the_valid_choices_and_the_closest():
    with pytest.raises(ValueError) as info:
        from_dict(AlgorithmConfig, {"framework": "jax"})
    assert str(info.value) == (
        "Config field framework must be one of 'torch', 'tf'; got framework='jax'."
    )
    with pytest.raises(ValueError, match=r"'tanh', 'relu', 'swish', 'linear'.*mean 'relu'\?"):
        from_dict(AlgorithmConfig, {"model": {"fcnet_activation": "Relu"}})


def test_element_errors_name_the_position():
    with pytest.raises(TypeError, match=r"model.fcnet_hiddens\[1\] expects int; got .*='a'"):
        from_dict(AlgorithmConfig, {"model": {"fcnet_hiddens": [32, "a"]}})
    with pytest.raises(TypeError, match=r"model.conv_filters\[0\] expects tuple\[int"):
        from_dict(AlgorithmConfig, {"model": {"conv_filters": [[16, 8]]}})


def test_dict_field_rejects_non_mappings():
    with pytest.raises(TypeError, match=r"env_config expects dict\[str, Any\]; got env_config=\["):
        from_dict(AlgorithmConfig, {"env_config": [1]})
    assert from_dict(AlgorithmConfig, {"env_config": {"size": 4}}).env_config == {"size": 4}


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gamma": 0}, r"gamma must be in \(0.0, 1.0\]; got gamma=0.0"),
        ({"gamma": 1.5}, r"gamma must be in \(0.0, 1.0\]; got gamma=1.5"),
        ({"num_workers": -1}, r"num_workers must be >= 0; got num_workers=-1. Use 0"),
        ({"train_batch_size": 0}, r"train_batch_size must be >= 1; got train_batch_size=0"),
        ({"lr": 0}, r"lr must be > 0; got lr=0.0"),
        ({"grad_clip": -1}, r"grad_clip must be > 0 or None; got grad_clip=-1.0"),
        ({"seed": -3}, r"seed must be >= 0; got seed=-3"),
        ({"lr_schedule": [[10, 1e-3], [0, 1e-4]]}, r"increasing order.*lr_schedule=\(\(10"),
        ({"model": {"fcnet_hiddens": [64, 0]}}, r"fcnet_hiddens sizes must be >= 1.*entry 1"),
        ({"learner_num_threads": 0}, r"learner_num_threads must be >= 1.*Use None"),
    ],
)
def test_validation_errors_show_the_offending_value(overrides, expected):
    with pytest.raises(ValueError, match=expected):
        from_dict(AlgorithmConfig, overrides)


def test_subclass_validation_hook_prints_both_numbers():
    with pytest.raises(ValueError) as info:
        from_dict(ExamplePPOConfig, {"sgd_minibatch_size": 500, "train_batch_size": 400})
    assert "sgd_minibatch_size=500, train_batch_size=400" in str(info.value)
    with pytest.raises(ValueError, match=r"clip_param must be in \(0.0, 1.0\]"):
        from_dict(ExamplePPOConfig, {"clip_param": 0})


def test_suspicious_settings_warn_with_the_computed_numbers_at_the_callers_line():
    with pytest.warns(UserWarning, match=r"train_batch_size=100 is smaller.*= 400 steps") as record:
        from_dict(AlgorithmConfig, {"train_batch_size": 100})
    assert record[0].filename == __file__
    with pytest.warns(UserWarning, match="not a multiple of sgd_minibatch_size=100"):
        ExamplePPOConfig(train_batch_size=1050)


def test_default_config_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AlgorithmConfig()
        ExamplePPOConfig()


def test_validation_does_not_modify_the_values():
    hiddens = (32, 32)
    config = ModelConfig(fcnet_hiddens=hiddens)
    assert config.fcnet_hiddens is hiddens


def test_derived_quantities_are_properties():
    config = AlgorithmConfig(num_workers=0, num_envs_per_worker=4, rollout_fragment_length=50)
    assert config.steps_per_sample_round == 200
    assert "steps_per_sample_round" not in config.to_dict()


# -- to_dict, replace, pickling --------------------------------------------------------------------


def test_to_dict_is_json_and_round_trips():
    config = from_dict(
        ExamplePPOConfig, {"model": {"conv_filters": [[16, 8, 4]]}, "lr_schedule": [[0, 0.1]]}
    )
    plain = config.to_dict()
    assert plain["model"]["conv_filters"] == [[16, 8, 4]] and plain["lr_schedule"] == [[0, 0.1]]
    assert from_dict(ExamplePPOConfig, json.loads(json.dumps(plain))) == config


def test_replace_returns_a_validated_copy_and_merges_nested_dicts():
    config = from_dict(AlgorithmConfig, {"model": {"fcnet_hiddens": [8]}})
    changed = config.replace(lr=1, model={"fcnet_activation": "relu"})
    assert changed.lr == 1.0 and config.lr == 5e-5
    assert changed.model == ModelConfig(fcnet_hiddens=(8,), fcnet_activation="relu")
    with pytest.raises(ValueError, match="Did you mean 'gamma'"):
        config.replace(gama=0.9)
    with pytest.raises(ValueError, match="gamma must be in"):
        config.replace(gamma=2.0)


def test_configs_pickle():
    config = from_dict(ExamplePPOConfig, {"env_config": {"a": 1}})
    assert pickle.loads(pickle.dumps(config)) == config


# -- field docs and files ------------------------------------------------------------------------


@pytest.mark.parametrize("config_class", [AlgorithmConfig, ModelConfig, ExamplePPOConfig])
def test_every_field_has_a_one_line_docstring(config_class):
    docs = field_docs(config_class)
    assert set(docs) == {field.name for field in dataclasses.fields(config_class)}
    for name, doc in docs.items():
        assert doc and "\n" not in doc, f"{config_class.__name__}.{name} needs a one-line docstring"


def test_field_docs_walk_the_mro():
    docs = field_docs(ExamplePPOConfig)
    assert docs["clip_param"] == "PPO surrogate clipping range; typically 0.1-0.3."
    assert docs["gamma"] == field_docs(AlgorithmConfig)["gamma"]
    assert docs["lr"] == field_docs(AlgorithmConfig)["lr"]  # overridden default, inherited doc


def test_load_config_file_reads_yaml_and_json(tmp_path):
    yaml_path = tmp_path / "ppo.yaml"
    yaml_path.write_text("lr: 0.001\nmodel:\n  fcnet_hiddens: [32, 32]\n")
    json_path = tmp_path / "ppo.json"
    json_path.write_text('{"gamma": 0.9}')
    assert load_config_file(yaml_path) == {"lr": 0.001, "model": {"fcnet_hiddens": [32, 32]}}
    assert load_config_file(str(json_path)) == {"gamma": 0.9}
    (tmp_path / "empty.yaml").write_text("")
    assert load_config_file(tmp_path / "empty.yaml") == {}


def test_load_config_file_errors(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"must hold a mapping.*it holds a list"):
        load_config_file(tmp_path / "list.yaml")
    (tmp_path / "bad.json").write_text("{'lr': 1}")
    with pytest.raises(ValueError, match="Could not parse config file"):
        load_config_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.yaml")
