"""Config loading: the embedded default, env substitution, and error messages naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

BASE = """
providers:
  - name: openai
    type: openai
    base_url: https://api.example.test/v1
  - name: mock
    type: mock
models:
  - name: gpt
    routes:
      - provider: openai
        model: gpt-4o-mini
"""


def problems(text: str, source: str = "gw.yaml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source)
    return info.value.problems


def test_embedded_default_serves_mock_models_with_a_demo_key() -> None:
    config = load_config(None)
    assert {p.type for p in config.providers} == {"mock"}
    assert "mock-echo" in [m.name for m in config.models]
    assert config.auth.keys and config.auth.keys[0].models == "*"
    assert config.server.host == "127.0.0.1"


def test_valid_config_parses_with_defaults() -> None:
    config = parse_config(BASE)
    assert config.provider("openai").base_url == "https://api.example.test/v1"
    assert config.models[0].routes[0].weight == 1.0
    assert config.server.max_body_bytes > 0 and config.server.tls is None


def test_unknown_provider_reference_suggests_the_close_name_with_path_and_line() -> None:
    text = BASE.replace("provider: openai", "provider: opnai")
    assert problems(text) == [
        "gw.yaml:11: models[0].routes[0].provider: unknown provider 'opnai', did you mean 'openai'?"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        BASE.replace("provider: openai", "provider: opnai")
        .replace("type: mock", "type: mokc")
        .replace("models:\n", "modles: []\nmodels:\n")
        + "server:\n  port: 99999\n"
    )
    found = problems(text)
    assert len(found) == 4, found
    joined = "\n".join(found)
    assert "providers[1].type: unknown provider type 'mokc', did you mean 'mock'?" in joined
    assert "unknown key 'modles', did you mean 'models'?" in joined
    assert "models[0].routes[0].provider: unknown provider 'opnai'" in joined
    assert "server.port: Input should be less than or equal to 65535" in joined


def test_unknown_nested_key_suggests_the_field() -> None:
    found = problems(BASE + "auth:\n  keys:\n    - {name: a, key: sk-aaaaaaaa, modles: '*'}\n")
    assert found == ["gw.yaml:15: auth.keys[0].modles: unknown key 'modles', did you mean 'models'?"]


def test_env_substitution_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", "sk-upstream-secret")
    text = BASE.replace(
        "base_url: https://api.example.test/v1", "api_key: ${UPSTREAM_KEY}\n    base_url: ${URL:-http://h/v1}"
    )
    config = parse_config(text)
    assert config.provider("openai").api_key == "sk-upstream-secret"
    assert config.provider("openai").base_url == "http://h/v1"


def test_unset_env_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = BASE.replace("base_url: https://api.example.test/v1", "api_key: ${NOT_SET_ANYWHERE}")
    assert problems(text) == [
        "gw.yaml:5: providers[0].api_key: environment variable NOT_SET_ANYWHERE is not set "
        "(referenced as ${NOT_SET_ANYWHERE})"
    ]


def test_provider_options_are_validated_by_the_adapter() -> None:
    text = BASE + "  - name: m\n    routes: [{provider: mock}]\n"
    text = text.replace("    type: mock\n", "    type: mock\n    options: {replyy: hi, fail_rate: 2}\n")
    found = problems(text)
    assert any(
        "providers[1].options.replyy: unknown option 'replyy', did you mean 'reply'?" in p for p in found
    )
    assert any("providers[1].options.fail_rate: Input should be less than or equal to 1" in p for p in found)


def test_duplicates_and_unknown_key_models() -> None:
    text = BASE + (
        "  - name: gpt\n    routes: [{provider: mock}]\n"
        "auth:\n  keys:\n"
        "    - {name: a, key: sk-aaaaaaaa, models: [gtp]}\n"
        "    - {name: a, key: sk-aaaaaaaa}\n"
    )
    found = "\n".join(problems(text))
    assert "models[1].name: duplicate model name 'gpt'" in found
    assert "auth.keys[0].models[0]: unknown model 'gtp', did you mean 'gpt'?" in found
    assert "auth.keys[1].name: duplicate key name 'a'" in found
    assert "auth.keys[1].key: this key value is already used by another key" in found
    assert "sk-aaaaaaaa" not in found  # the message never echoes a key


def test_invalid_yaml_names_the_line() -> None:
    assert problems("models: [\n  - a: b\n", "bad.yaml")[0].startswith("bad.yaml:2: invalid YAML: ")


def test_top_level_must_be_a_mapping() -> None:
    assert "top level must be a mapping" in problems("- a\n- b\n")[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("models:\n  - name: x\n    routes: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == [
        f"{path}:3: models[0].routes: List should have at least 1 item after validation, not 0"
    ]
    assert str(info.value).startswith(f"{path}: 1 problem:")


def test_union_errors_are_one_line_without_class_names() -> None:
    found = problems("auth: {keys: [{name: a, key: sk-aaaaaaaa, models: 5}]}\nserver: {tls: 5}\n")
    assert found == [
        "gw.yaml:1: auth.keys[0].models: Input should be a valid list, or Input should be '*'",
        "gw.yaml:2: server.tls: Input should be a mapping of keys",
    ]


def test_provider_option_problems_are_reported_alongside_other_errors() -> None:
    text = (
        BASE.replace("    type: mock\n", "    type: mock\n    options: {latency: 5}\n")
        + "server: {port: -1}\n"
    )
    found = "\n".join(problems(text))
    assert "providers[1].options.latency: unknown option 'latency', did you mean 'latency_ms'?" in found
    assert "server.port: Input should be greater than or equal to 0" in found


def test_a_key_written_twice_is_an_error_naming_both_lines() -> None:
    """YAML keeps the last of two equal keys: a second `features:` block would silently drop the first."""
    text = "features:\n  cache: {enabled: true}\nmodels: []\nfeatures:\n  reload: {watch: false}\n"
    with pytest.raises(ConfigError) as error:
        parse_config(text, "dup.yaml")
    assert "dup.yaml:4: duplicate key 'features' (first written at line 1)" in str(error.value)
    nested = "server:\n  port: 1\n  port: 2\n"
    with pytest.raises(ConfigError, match=r"dup.yaml:3: duplicate key 'port'"):
        parse_config(nested, "dup.yaml")
