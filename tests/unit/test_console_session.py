"""Console session cookies and CSRF tokens (console/session.py): signed, expiring, bound to one key."""

from __future__ import annotations

import time

from moorage.console.session import SessionCodec, derive_key

KEY = derive_key(b"m" * 32)


def session_of(codec: SessionCodec, *, expires_in: float = 60.0) -> tuple[str, float]:
    now = time.time()
    made = codec.new(
        "123456789012", "dev", "us-east-1", method="key", access_key_id="AKIA1", expires_at=now + expires_in
    )
    return codec.encode(made), now


def test_a_cookie_round_trips_and_carries_no_secret() -> None:
    codec = SessionCodec(KEY)
    value, now = session_of(codec)
    session = codec.decode(value, now=now)
    assert session is not None
    assert (session.account_id, session.user_name, session.region) == ("123456789012", "dev", "us-east-1")
    assert session.registry_account == "123456789012"
    assert KEY.hex() not in value


def test_expired_tampered_or_foreign_cookies_are_no_session() -> None:
    codec = SessionCodec(KEY)
    value, now = session_of(codec, expires_in=10)
    assert codec.decode(value, now=now + 11) is None
    body, _, mac = value.partition(".")
    assert codec.decode(body[:-1] + ("A" if body[-1] != "A" else "B") + "." + mac, now=now) is None
    assert codec.decode(body + "." + mac[::-1], now=now) is None
    assert SessionCodec(derive_key(b"n" * 32)).decode(value, now=now) is None
    for junk in ("", ".", "a.b", "x" * 5000, "!!!.???"):
        assert codec.decode(junk, now=now) is None


def test_the_csrf_token_is_per_session() -> None:
    codec = SessionCodec(KEY)
    one = codec.decode(session_of(codec)[0], now=time.time())
    two = codec.decode(session_of(codec)[0], now=time.time())
    assert one is not None
    assert two is not None
    assert codec.check_csrf(one, codec.csrf(one))
    assert not codec.check_csrf(one, codec.csrf(two))
    assert not codec.check_csrf(one, None)
    assert not codec.check_csrf(one, "")


def test_switching_region_keeps_the_nonce() -> None:
    codec = SessionCodec(KEY)
    session = codec.decode(session_of(codec)[0], now=time.time())
    assert session is not None
    moved = session.switched(region="eu-west-1", registry_account="210987654321")
    assert (moved.region, moved.registry_account, moved.nonce) == ("eu-west-1", "210987654321", session.nonce)


def test_flash_messages_are_signed() -> None:
    codec = SessionCodec(KEY)
    signed = codec.sign_text("Deleted 1 image.")
    assert codec.unsign_text(signed) == "Deleted 1 image."
    assert codec.unsign_text(signed.replace(".", ".x", 1)) is None
    assert SessionCodec(derive_key(b"n" * 32)).unsign_text(signed) is None


def test_the_derived_key_is_not_the_master_key() -> None:
    master = b"m" * 32
    assert derive_key(master) != master
    assert derive_key(master) == derive_key(master)
    assert len(derive_key(master)) == 32
