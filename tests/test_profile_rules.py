"""Whose profile a request reads, and how the facts are put to the backend (pure rules)."""

from __future__ import annotations

from redis.crc import key_slot

from sidecar.config import IdentityConfig
from sidecar.identity import Identity
from sidecar.profile.inject import profile_note, with_profile
from sidecar.profile.owner import body_user, owner_of, with_profile_user
from sidecar.session.model import SessionKey
from sidecar.store.keys import KeySpace, user_scope


def test_each_adapter_names_its_user_in_its_own_field() -> None:
    assert body_user("tasks", {"user_id": "u1", "user": "x"}) == "u1"
    assert body_user("openai", {"user": "u2", "user_id": "x"}) == "u2"
    assert body_user("anthropic", {"metadata": {"user_id": "u3"}, "user": "x"}) == "u3"
    assert body_user("tasks", {"user_id": 7}) is None
    assert body_user("tasks", {"user_id": ""}) is None
    assert body_user("tasks", {"user_id": "a\x00b"}) is None
    assert body_user("openai", {"user": "x" * 257}) is None


def test_the_body_names_the_user_in_credential_mode_only() -> None:
    body = {"user_id": "mallory"}
    credential = Identity("key-abc")
    named = with_profile_user(credential, IdentityConfig(mode="credential"), "tasks", body)
    assert owner_of(named) == ("key-abc", "mallory")
    assert named.scope == "key-abc/mallory"
    # Behind a gateway the gateway's user stands; a body cannot pick another one.
    gateway = Identity("acme", "alice")
    headers = IdentityConfig(mode="headers")
    assert owner_of(with_profile_user(gateway, headers, "tasks", body)) == ("acme", "alice")
    tenant_only = Identity("acme")
    assert owner_of(with_profile_user(tenant_only, headers, "tasks", body)) is None
    assert owner_of(Identity("anonymous")) is None


def test_the_home_fills_a_place_only_when_the_question_needs_one_and_none_was_said() -> None:
    facts = {"home_location": "北京"}
    weather = {"topic": "weather"}
    assert with_profile(weather, facts) == {
        "topic": "weather",
        "location": "北京",
        "profile": facts,
    }
    said = {"topic": "weather", "location": "上海"}
    assert with_profile(said, facts)["location"] == "上海"
    assert "location" not in with_profile({}, facts)
    assert with_profile(weather, {}) == weather


def test_the_note_speaks_the_users_language() -> None:
    zh = profile_note({"home_location": "北京", "name": "小王"}, "今天天气怎么样")
    assert zh is not None
    assert "北京" in zh
    assert "小王" in zh
    assert zh.startswith("关于用户")
    en = profile_note({"home_location": "Berlin", "units": "imperial"}, "weather today?")
    assert en is not None
    assert en.startswith("About the user")
    assert "°F" in en
    # A stated language wins over the message's.
    stated = profile_note({"language": "en", "name": "Sam"}, "你好")
    assert stated is not None
    assert stated.startswith("About the user")
    assert profile_note({}, "hi") is None


def test_a_users_sessions_and_profile_share_one_cluster_slot() -> None:
    """So that one script reads and writes both, on a Redis Cluster too."""
    keys = KeySpace("sc", 64)
    user = keys.user("acme", "alice")
    slots = {key_slot(user.profile.encode()), key_slot(user.tombstone.encode())}
    for sid in ("a", "b", "session-42"):
        k = keys.session(SessionKey(user_scope("acme", "alice"), sid))
        slots |= {key_slot(x.encode()) for x in (k.meta, k.messages, k.context, k.outbox)}
    assert len(slots) == 1
    # Sessions without a user still spread over the partitions.
    spread = {keys.partition(SessionKey("acme", f"s-{i}")) for i in range(200)}
    assert len(spread) > 32
