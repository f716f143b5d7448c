"""The configuration model: defaults, the example file, precise errors, env overrides, schedules."""

from __future__ import annotations

import re
import typing
from datetime import datetime
from pathlib import Path

import pytest

from edge_mfr import config as cfgmod
from edge_mfr.config import Config, ConfigError, load_config, parse_days, pin_number
from edge_mfr.config_safety import config_check
from edge_mfr.schema import Section, ValidationError, field

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "config.example.toml"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No EDGE_MFR__ variable of the caller's shell leaks in; a fixed state dir and hostname."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("EDGE_MFR__"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EDGE_MFR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(cfgmod.socket, "gethostname", lambda: "test-pi")


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    lines = str(info.value).splitlines()
    assert lines == info.value.problems
    return lines


# ------------------------------------------------------------------------------------------ defaults, example


def test_empty_file_gives_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""), environ={})
    assert cfg == Config()
    assert cfg.device.id == "test-pi"
    assert cfg.device.state_dir == tmp_path / "state"
    assert cfg.journal.path == tmp_path / "state" / "journal.db"
    assert cfg.recognition.gallery == tmp_path / "state" / "gallery.npz"
    assert cfg.mqtt.topic_prefix == "edge-mfr/test-pi"
    assert cfg.mqtt.enabled is False and cfg.kiosk.enabled is False
    assert [d.name for d in cfg.doors] == ["front"] and pin_number(cfg.doors[0].relay_pin) == 17


def test_no_path_and_no_system_file_gives_defaults(tmp_path, monkeypatch):
    monkeypatch.setattr(cfgmod, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None, environ={}) == Config()


def test_no_path_reads_the_system_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cfgmod, "DEFAULT_CONFIG_PATH", write(tmp_path, "[camera]\nfps = 5\n"))
    assert load_config(None, environ={}).camera.fps == 5


def test_example_validates_and_equals_defaults_except_the_kiosk():
    example = load_config(EXAMPLE, environ={}).model_dump()
    defaults = Config().model_dump()
    assert example["kiosk"]["enabled"] is True  # the one deliberate difference
    example["kiosk"]["enabled"] = defaults["kiosk"]["enabled"]
    assert example == defaults


def test_example_mentions_every_key():
    """A key added to the model but not documented in the example fails here."""
    text = EXAMPLE.read_text()
    missing = [f"{where}.{key}" for where, model in walk_models(Config) for key in cfgmod._keys(model)
               if not re.search(rf"(^[#\s]*|[{{,]\s*){key}\s*=|^\[+[a-z_.]*\b{key}\]+$", text, re.MULTILINE)]
    assert missing == []
    assert config_check(EXAMPLE, environ={}) == []


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_top_level_key_is_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, 'watchdog_seconds = 10\ncamra = "x"\n')
    (line,) = problems(path)
    assert line.startswith(str(path))
    assert "unknown key 'camra'" in line and "top level" in line and "did you mean 'camera'" in line


def test_unknown_nested_keys_are_named_with_their_table(tmp_path):
    path = write(tmp_path, '[mqtt]\nhots = "x"\n[recognition.thresholds]\nmaskd = 0.5\n'
                           '[[doors]]\nrelay_pinn = 4\n'
                           '[policy.schedules]\nbob = [{days = "mon", fromm = "08:00"}]\n')
    lines = problems(path)
    assert len(lines) == 4
    text = "\n".join(lines)
    assert "unknown key 'hots' in [mqtt]; did you mean 'host'?" in text
    assert "unknown key 'maskd' in [recognition.thresholds]; did you mean 'masked'?" in text
    assert "unknown key 'relay_pinn' in [[doors]] #1 (doors[0]); did you mean 'relay_pin'?" in text
    assert "unknown key 'fromm' in [policy.schedules.bob[0]]; did you mean 'from'?" in text


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path):
    (line,) = problems(write(tmp_path, "[kiosk]\nzzzzzz = 1\n"))
    assert "valid keys: admin_password_file, bind, enabled, max_upload_mb, port, stream_fps, stream_width" in line


def test_wrong_types_name_the_dotted_key(tmp_path):
    path = write(tmp_path, '[mqtt]\nport = "abc"\n[[doors]]\nrelay_pin = 17\nactive_high = "maybe"\n'
                           '[models]\ndetector = "yolo"\n')
    text = "\n".join(problems(path))
    assert f"{path}: mqtt.port: Input should be a valid integer" in text and "'abc'" in text
    assert "doors[0].active_high: Input should be a valid boolean" in text
    assert "models.detector: Input should be 'blazeface', 'blazeface-full' or 'mtcnn'" in text


def test_secrets_are_not_echoed(tmp_path):
    (line,) = problems(write(tmp_path, "[mqtt]\npassword = true\n"))
    assert "mqtt.password" in line and "True" not in line


def test_toml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, '[camera]\nfps = 10\nwidth = = 3\n')
    (line,) = problems(path)
    assert line.startswith(f"{path}: TOML syntax error") and "line 3" in line and "column" in line


def test_missing_explicit_file(tmp_path):
    path = tmp_path / "nope.toml"
    assert problems(path) == [f"{path}: config file not found"]


def test_not_utf8_and_folder(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[camera]\nsource = "\xff"\n')
    assert "not UTF-8" in problems(bad)[0]
    assert "is a folder" in problems(tmp_path)[0]


# ------------------------------------------------------------------------------------------------ pins, doors


@pytest.mark.parametrize("pin, bcm", [(17, 17), ("GPIO17", 17), ("bcm4", 4), ("BOARD11", 17), ("J8:40", 21),
                                      ("27", 27)])
def test_pin_names(pin, bcm):
    assert pin_number(pin) == bcm


@pytest.mark.parametrize("pin", [28, -1, "GPIO40", "BOARD1", "BOARD41", "LED", True, 1.5])
def test_bad_pins(pin):
    with pytest.raises(ValueError):
        pin_number(pin)


def test_bad_pin_in_file_names_the_door_and_field(tmp_path):
    (line,) = problems(write(tmp_path, '[[doors]]\nrelay_pin = "BOARD2"\n'))
    assert "doors[0].relay_pin: header pin 2 is power or ground" in line


def test_duplicate_pins_across_doors_are_refused(tmp_path):
    path = write(tmp_path, '[[doors]]\nname = "front"\nrelay_pin = 17\ncontact_pin = 27\n'
                           '[[doors]]\nname = "back"\nrelay_pin = 5\nexit_button_pin = "BOARD11"\n')
    (line,) = problems(path)
    assert "doors[1].exit_button_pin uses GPIO17, already used by doors[0].relay_pin" in line


def test_duplicate_pins_within_a_door_and_duplicate_names(tmp_path):
    (line,) = problems(write(tmp_path, '[[doors]]\nrelay_pin = 17\nbuzzer_pin = "GPIO17"\n'))
    assert "doors[0].buzzer_pin uses GPIO17, already used by doors[0].relay_pin" in line
    (line,) = problems(write(tmp_path, '[[doors]]\nrelay_pin = 17\n[[doors]]\nrelay_pin = 5\n'))
    assert "both named 'front'" in line


def test_two_valid_doors(tmp_path):
    cfg = load_config(write(tmp_path, '[[doors]]\nname = "front"\nrelay_pin = "GPIO17"\ncontact_pin = 27\n'
                                      '[[doors]]\nname = "garage"\nrelay_pin = 5\n'), environ={})
    assert cfg.door("garage").relay_pin == 5 and cfg.door("front").pins() == {"relay_pin": "GPIO17",
                                                                               "contact_pin": 27}
    with pytest.raises(ConfigError, match="no door named 'side'"):
        cfg.door("side")


def test_cross_field_rules(tmp_path):
    text = "\n".join(problems(write(tmp_path, '[[doors]]\nunlock_seconds = 60\n[recognition]\nvote_n = 6\n'
                                              '[camera]\nlores_width = 800\n'
                                              '[mqtt]\npassword = "a"\npassword_file = "p"\n')))
    assert "doors[0]: unlock_seconds (60) must not exceed max_unlock_seconds (15)" in text
    assert "recognition: vote_n (6) must not exceed vote_m (5)" in text
    assert "camera: lores size 800x240 exceeds the capture size 640x480" in text
    assert "mqtt: give password or password_file, not both" in text


def test_device_id_must_suit_mqtt_topics(tmp_path):
    (line,) = problems(write(tmp_path, '[device]\nid = "Front Door/1"\n'))
    assert "device.id" in line and "lowercase" in line


def test_default_device_id_is_a_sanitised_hostname(monkeypatch):
    monkeypatch.setattr(cfgmod.socket, "gethostname", lambda: "My Pi_4.local")
    assert cfgmod.default_device_id() == "my-pi_4"
    monkeypatch.setattr(cfgmod.socket, "gethostname", lambda: "...")
    assert cfgmod.default_device_id() == "edge-mfr"


def test_relative_paths(tmp_path):
    path = write(tmp_path, '[journal]\npath = "j.db"\n[mqtt]\npassword_file = "secret"\n'
                           '[models]\ndir = "m"\n')
    cfg = load_config(path, environ={})
    assert cfg.journal.path == tmp_path / "state" / "j.db"
    assert cfg.mqtt.password_file == tmp_path / "secret"
    assert cfg.models.dir == tmp_path / "m"


# ------------------------------------------------------------------------------------------------- env


def test_env_overrides_file(tmp_path):
    path = write(tmp_path, '[mqtt]\nhost = "from-file"\nport = 1883\n')
    env = {"EDGE_MFR__MQTT__HOST": "broker.lan", "EDGE_MFR__MQTT__PORT": "8883",
           "EDGE_MFR__MQTT__TLS": "true",
           "EDGE_MFR__WATCHDOG_SECONDS": "0", "EDGE_MFR__DOORS__0__RELAY_PIN": "GPIO5",
           "EDGE_MFR__DEVICE__ID": "123", "EDGE_MFR_STATE_DIR": "/ignored-here", "OTHER": "x"}
    cfg = load_config(path, environ=env)
    assert (cfg.mqtt.host, cfg.mqtt.port, cfg.mqtt.tls) == ("broker.lan", 8883, True)
    assert cfg.watchdog_seconds == 0
    assert cfg.doors[0].relay_pin == "GPIO5"
    assert cfg.device.id == "123" and cfg.mqtt.topic_prefix == "edge-mfr/123"


def test_env_json_values_and_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_MFR__POLICY__SCHEDULES",
                       '{"alice": [{"days": "sat", "from": "09:00", "to": "12:00"}]}')
    cfg = load_config(write(tmp_path, ""))
    assert cfg.policy.schedules["alice"][0].days == "sat"


def test_env_errors_name_the_variable(tmp_path):
    path = write(tmp_path, "")
    (line,) = problems(path, {"EDGE_MFR__MQTT__PORTT": "1"})
    assert "unknown key 'portt' in [mqtt] (from $EDGE_MFR__MQTT__PORTT); did you mean 'port'?" in line
    (line,) = problems(path, {"EDGE_MFR__KIOSK__PORT": "http"})
    assert "kiosk.port" in line and "$EDGE_MFR__KIOSK__PORT" in line
    (line,) = problems(path, {"EDGE_MFR__DOORS__3__RELAY_PIN": "5"})
    assert "$EDGE_MFR__DOORS__3__RELAY_PIN" in line and "not an index" in line


# ------------------------------------------------------------------------------------------------ schedules


def test_schedule_validation(tmp_path):
    bad = {
        '[policy.schedules]\nalice = [{days = "mon-fry"}]\n': "policy.schedules.alice[0].days",
        '[policy.schedules]\nalice = [{from = "8am"}]\n': "policy.schedules.alice[0].from",
        '[policy.schedules]\nalice = [{from = "24:30"}]\n': "not a time of day",
        '[policy.schedules]\nalice = [{from = "08:00", to = "08:00"}]\n': "is empty",
        '[policy.schedules]\nalice = []\n': "would never admit",
        '[policy.schedules]\n"Alice Smith" = [{days = "mon"}]\n': "not a person id",
        '[policy.schedules]\nalice = [{from = "24:00", to = "06:00"}]\n': "cannot start at 24:00",
        '[policy]\ntimezone = "Mars/Olympus"\n': "unknown time zone 'Mars/Olympus'",
    }
    for text, expected in bad.items():
        (line,) = problems(write(tmp_path, text))
        assert expected in line, (text, line)
    good = '[policy.schedules]\nalice = [{days = "mon-fri", from = "08:00", to = "18:00"}]\n'
    cfg = load_config(write(tmp_path, good), environ={})
    window = cfg.policy.schedules["alice"][0]
    assert (window.days, window.start, window.end) == ("mon-fri", "08:00", "18:00")


def test_schedule_windows():
    assert parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_days("fri-mon") == {4, 5, 6, 0}
    assert parse_days("mon,wed-thu, sun") == {0, 2, 3, 6}
    assert parse_days("daily") == set(range(7))
    assert parse_days(["sat", "sun"]) == {5, 6}
    policy = cfgmod.PolicyConfig.model_validate(
        {"schedules": {"alice": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}],
                       "night": [{"days": "fri", "from": "22:00", "to": "06:00"}]}})
    monday, saturday = datetime(2024, 1, 1, 9, 0), datetime(2024, 1, 6, 9, 0)
    assert policy.allows("alice", monday) and not policy.allows("alice", saturday)
    assert not policy.allows("alice", monday.replace(hour=18))  # the end is exclusive
    assert policy.allows("bob", saturday)  # no schedule: any time
    friday_night, saturday_early = datetime(2024, 1, 5, 23, 0), datetime(2024, 1, 6, 5, 59)
    assert policy.allows("night", friday_night) and policy.allows("night", saturday_early)
    assert not policy.allows("night", datetime(2024, 1, 5, 5, 0))  # Friday early belongs to Thursday night
    late = cfgmod.Window.model_validate({"to": "24:00", "from": "23:00"})
    assert late.contains(datetime(2024, 1, 1, 23, 59))


# -------------------------------------------------------------------------------- descriptions, strictness


def walk_models(model: type[Section], where: str = "") -> list[tuple[str, type[Section]]]:
    """Every model reachable from ``model`` through its fields (including list and dict items)."""
    found = [(where or "<root>", model)]
    for name, info in model.model_fields.items():
        nested = cfgmod._nested_model(info.annotation)
        if nested is not None:
            found += walk_models(nested, f"{where}.{name}" if where else name)
    return found


def undocumented(model: type[Section]) -> list[str]:
    return [f"{where}.{name}" for where, m in walk_models(model) for name, f in m.model_fields.items()
            if not (f.description or "").strip()]


def lenient(model: type[Section]) -> list[str]:
    """The sections that accept a key they do not declare."""
    found = []
    for where, m in walk_models(model):
        try:
            m.model_validate({"zz_not_a_key": 1})
            found.append(where)
        except ValidationError as exc:
            if not any(e["type"] == "extra_forbidden" and e["loc"] == ("zz_not_a_key",) for e in exc.errors()):
                found.append(where)
    return found


def test_every_field_has_a_description_and_every_model_forbids_extras():
    models = {m for _, m in walk_models(Config)}
    assert {cfgmod.DoorConfig, cfgmod.Window, cfgmod.Thresholds, cfgmod.MqttConfig} <= models
    assert undocumented(Config) == []
    assert lenient(Config) == []


def test_the_description_and_strictness_walks_can_fail():
    class Inner(Section):
        ok: int = field(1, description="documented")
        bare: int = 2

    class Lenient(Section):
        @classmethod
        def model_validate(cls, data, context=None):
            return cls()

    class Outer(Section):
        items: dict[str, list[Inner]] = field(default_factory=dict, description="nested")
        blank: str = field("", description="  ")
        loose: Lenient = field(default_factory=Lenient, description="accepts anything")

    assert sorted(undocumented(Outer)) == ["<root>.blank", "items.bare"]
    assert lenient(Outer) == ["loose"]


def test_annotations_resolve_to_models():
    hints = typing.get_type_hints(Config)
    assert cfgmod._nested_model(hints["doors"]) is cfgmod.DoorConfig


# -------------------------------------------------------------------------------------------- config check


def test_config_check(tmp_path):
    assert config_check(write(tmp_path, ""), environ={}) == []
    lines = config_check(write(tmp_path, "camra = 1\n[mqtt]\nport = 0\n"), environ={})
    assert len(lines) == 2 and not any(line.startswith("warning: ") for line in lines)
    path = write(tmp_path, '[mqtt]\nenabled = true\nhost = "broker.lan"\nusername = "door"\npassword_file = "missing"\n'
                           '[kiosk]\nenabled = true\nbind = "0.0.0.0"\n')
    warnings = config_check(path, environ={})
    assert all(line.startswith("warning: ") for line in warnings) and len(warnings) == 3
    assert any("mqtt.password_file" in w and "does not exist" in w for w in warnings)
    assert any("clear text" in w for w in warnings) and any("0.0.0.0" in w for w in warnings)


def test_world_readable_password_is_flagged(tmp_path):
    path = write(tmp_path, '[mqtt]\npassword = "hunter2"\n')
    path.chmod(0o644)
    (line,) = config_check(path, environ={})
    assert "readable by others" in line and "hunter2" not in line
    path.chmod(0o600)
    assert config_check(path, environ={}) == []


# ------------------------------------------------------------------------- contracts with the consumers


def test_doors_feed_the_lock_unchanged():
    lock = pytest.importorskip("edge_mfr.device.lock")
    door = load_config(EXAMPLE, environ={}).doors[0]
    built = lock.DoorConfig(**door.model_dump(exclude={"liveness", "liveness_window_seconds"}))  # not the lock's
    assert built.pins() == door.pins() and built.max_unlock_seconds == door.max_unlock_seconds


def test_policy_section_feeds_the_policy_unchanged(tmp_path):
    policy = pytest.importorskip("edge_mfr.policy")
    path = write(tmp_path, '[policy]\ntimezone = "Europe/Berlin"\n[policy.schedules]\n'
                           'alice = [{days = "mon-fri", from = "08:00", to = "18:00"}]\n')
    cfg = load_config(path, environ={})
    built = policy.PolicyConfig.model_validate(cfg.policy.model_dump(exclude={"announce_masked"}))
    assert built.schedules["alice"][0].start == "08:00" and built.timezone == "Europe/Berlin"
    assert built.person_cooldown_seconds == cfg.policy.person_cooldown_seconds


def test_mqtt_command_keys_feed_the_mqtt_settings(tmp_path):
    mqtt = pytest.importorskip("edge_mfr.interfaces.mqtt")
    (tmp_path / "secret").write_text("s" * 32 + "\n")
    path = write(tmp_path, '[mqtt]\nenabled = true\nprotocol = 5\ndiscovery = false\n'
                           'allow_unsigned_ha_unlock = true\nmax_command_bytes = 2048\n'
                           'max_enroll_bytes = 1048576\ncommand_window_seconds = 10\n'
                           'command_secret_file = "secret"\n')
    settings = mqtt.MqttSettings.from_config(load_config(path, environ={}))
    assert (settings.protocol, settings.discovery, settings.command_secret) == ("5", False, b"s" * 32)
    limits = settings.command_limits()
    assert (limits.max_bytes, limits.max_enroll_bytes, limits.window_s, limits.allow_unsigned_ha_unlock) == (
        2048, 1048576, 10.0, True)
    defaults = mqtt.MqttSettings.from_config(load_config(write(tmp_path, "", "empty.toml"), environ={}))
    from edge_mfr.interfaces.mqtt_commands import CommandLimits

    assert (defaults.protocol, defaults.discovery, defaults.command_limits()) == ("3.1.1", True,
                                                                                  CommandLimits())


def test_mqtt_protocol_from_the_environment_and_bad_values(tmp_path):
    cfg = load_config(write(tmp_path, ""), environ={"EDGE_MFR__MQTT__PROTOCOL": "5"})  # JSON: the number 5
    assert cfg.mqtt.protocol == "5"
    (line,) = problems(write(tmp_path, '[mqtt]\nprotocol = "4"\n'))
    assert "mqtt.protocol" in line and "'3.1.1' or '5'" in line
    (line,) = problems(write(tmp_path, "[mqtt]\nmax_command_bytes = 10\n"))
    assert "mqtt.max_command_bytes" in line and "256" in line
    (line,) = problems(write(tmp_path, "[mqtt]\ncommand_window_seconds = 0\n"))
    assert "mqtt.command_window_seconds" in line


def test_a_misspelt_liveness_mode_and_an_empty_window_are_named(tmp_path):
    path = write(tmp_path, '[[doors]]\nname = "front"\nrelay_pin = 17\nliveness = "blinks"\n'
                           'liveness_window_seconds = 0\n')
    lines = config_check(path, environ={})
    assert lines == [f"{path}: doors[0].liveness: Input should be 'blink' or 'off' (got 'blinks')",
                     f"{path}: doors[0].liveness_window_seconds: Input should be greater than 0 (got 0)"]


def test_gpio_is_a_config_key_and_the_environment_only_overrides_it_to_mock() -> None:
    from edge_mfr.app import gpio_mock

    assert load_config(None, environ={}).device.gpio == "auto"
    assert load_config(None, environ={"EDGE_MFR__DEVICE__GPIO": "mock"}).device.gpio == "mock"
    assert gpio_mock("auto", {}) is None  # the board decides
    assert gpio_mock("mock", {}) is True
    assert gpio_mock("real", {}) is False
    assert gpio_mock("real", {"EDGE_MFR_GPIO": "mock"}) is True  # the test override
    with pytest.raises(ConfigError, match="gpio"):
        load_config(None, environ={"EDGE_MFR__DEVICE__GPIO": "yes"})


def test_doctor_says_gpio_is_simulated_by_the_config() -> None:
    from edge_mfr.doctor import WARN, check_gpio

    cfg = load_config(None, environ={"EDGE_MFR__DEVICE__GPIO": "mock"})
    check = check_gpio(cfg.doors, cfg.device.gpio)
    assert check.status == WARN and "device.gpio" in check.detail
