"""TOTP: the RFC 6238 vectors, agreement with pyotp, 80-bit keys, drift, replay and what people type."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from datetime import UTC, datetime

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.otp import (
    TotpParams,
    check_totp,
    decode_key,
    hotp,
    new_secret,
    normalize_code,
    normalize_key,
    provisioning_uri,
)

RFC_SECRET = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]
EXACT_8 = TotpParams(digits=8, window=0)
AT = datetime(2026, 1, 5, 12, 0, 10, tzinfo=UTC)
AT_STEP = int(AT.timestamp()) // 30


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _code(secret: str, step: int, digits: int = 6) -> str:
    return hotp(decode_key(secret), step, digits)


def _reference_totp(secret_b32: str, seconds: int) -> str:
    """RFC 6238 written out independently of flows.otp, for keys pyotp will not load."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, (seconds // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[19] & 15
    return f"{(struct.unpack('>L', mac[offset:offset + 4])[0] & 0x7FFFFFFF) % 1_000_000:06d}"


@pytest.mark.parametrize(("seconds", "expected"), RFC_VECTORS)
def test_rfc6238_vectors_through_check_totp(seconds: int, expected: str) -> None:
    assert check_totp(RFC_SECRET, expected, _at(seconds), None, EXACT_8) == seconds // 30


@pytest.mark.parametrize(("seconds", "expected"), RFC_VECTORS)
def test_rfc6238_vectors_through_hotp(seconds: int, expected: str) -> None:
    assert hotp(b"12345678901234567890", seconds // 30, digits=8) == expected


def test_rfc4226_sha1_vectors() -> None:
    expected = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489",
    ]
    assert [hotp(b"12345678901234567890", counter) for counter in range(10)] == expected


def test_a_wrong_rfc_code_is_refused() -> None:
    assert check_totp(RFC_SECRET, "94287083", _at(59), None, EXACT_8) is None


def test_an_80_bit_key_pyotp_refuses_is_verified() -> None:
    short_key = "JBSWY3DPEHPK3PXP"
    with pytest.raises(ValueError, match="112 bits"):
        pyotp.TOTP(short_key)
    seconds = int(AT.timestamp())
    assert check_totp(short_key, _reference_totp(short_key, seconds), AT, None) == AT_STEP
    assert check_totp("jbsw y3dp-ehpk 3pxp", _reference_totp(short_key, seconds), AT, None) == AT_STEP


@settings(max_examples=200)
@given(raw=st.binary(min_size=20, max_size=20), seconds=st.integers(min_value=0, max_value=2**34))
def test_codes_match_pyotp_for_160_bit_secrets(raw: bytes, seconds: int) -> None:
    secret = base64.b32encode(raw).decode()
    expected = pyotp.TOTP(secret).at(seconds)
    assert hotp(raw, seconds // 30) == expected
    assert check_totp(secret, expected, _at(seconds), None, TotpParams(window=0)) == seconds // 30


@pytest.mark.parametrize("drift", [-1, 0, 1])
def test_one_step_of_drift_either_way_is_accepted(drift: int) -> None:
    code = _code(RFC_SECRET, AT_STEP + drift)
    assert check_totp(RFC_SECRET, code, AT, None) == AT_STEP + drift


@pytest.mark.parametrize("drift", [-2, 2])
def test_two_steps_of_drift_are_refused(drift: int) -> None:
    assert check_totp(RFC_SECRET, _code(RFC_SECRET, AT_STEP + drift), AT, None) is None


def test_the_last_accepted_step_cannot_be_replayed() -> None:
    code = _code(RFC_SECRET, AT_STEP)
    step = check_totp(RFC_SECRET, code, AT, None)
    assert step == AT_STEP
    assert check_totp(RFC_SECRET, code, AT, last_step=step) is None
    assert check_totp(RFC_SECRET, _code(RFC_SECRET, AT_STEP - 1), AT, last_step=step) is None
    assert check_totp(RFC_SECRET, _code(RFC_SECRET, AT_STEP + 1), AT, last_step=step) == AT_STEP + 1


def test_fullwidth_digits_and_spaces_are_accepted() -> None:
    code = _code(RFC_SECRET, AT_STEP)
    fullwidth = "".join(chr(ord(digit) - ord("0") + ord("０")) for digit in code)
    assert check_totp(RFC_SECRET, fullwidth, AT, None) == AT_STEP
    assert check_totp(RFC_SECRET, f"{code[:3]} {code[3:]}", AT, None) == AT_STEP
    assert normalize_code("１２３４５６") == "123456"


@pytest.mark.parametrize("raw", ["", "12a456", "١٢٣٤٥٦", "12-34", "x" + "1" * 70])
def test_codes_that_are_not_ascii_digits_normalise_to_nothing(raw: str) -> None:
    assert normalize_code(raw) == ""


def test_code_input_is_capped_before_normalising() -> None:
    assert normalize_code("1" * 64 + "x") == "1" * 64
    assert check_totp(RFC_SECRET, "1" * 10_000, AT, None) is None


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        check_totp(RFC_SECRET, "123456", datetime(2026, 1, 5), None)  # noqa: DTZ001


@pytest.mark.parametrize(
    "raw", ["gezd gnbv gy3t qojq", "GEZD-GNBV-GY3T-QOJQ", "gezdgnbvgy3tqojq====", " GEZDGNBVGY3TQOJQ\n"]
)
def test_keys_are_normalised(raw: str) -> None:
    assert normalize_key(raw) == "GEZDGNBVGY3TQOJQ"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("GEZDGNBVGY3TQOJ0", "O instead of 0"),
        ("GEZDGNBVGY3TQOJ1", "I or L instead of 1"),
        ("GEZDGNBVGY3TQOJ!", "A–Z and the digits 2–7"),
        ("GEZDGNBVGY3TQOJÉ", "A–Z and the digits 2–7"),
        ("", "A–Z"),
        ("GEZDGNBVGY3TQOJ", "too short"),
        ("GEZDGNBVGY3TQOJQG", "incomplete"),
    ],
)
def test_bad_keys_raise_a_friendly_error(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_key(raw)


def test_decode_key_restores_padding() -> None:
    assert decode_key("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ") == b"12345678901234567890"
    assert len(decode_key("JBSWY3DPEHPK3PXP")) == 10


def test_hotp_refuses_unknown_digests() -> None:
    with pytest.raises(ValueError, match="digest"):
        hotp(b"12345678901234567890", 0, digest="md5")


def test_sha256_and_sha512_follow_rfc6238() -> None:
    key256 = b"12345678901234567890123456789012"
    key512 = b"1234567890123456789012345678901234567890123456789012345678901234"
    assert hotp(key256, 59 // 30, 8, "sha256") == "46119246"
    assert hotp(key512, 59 // 30, 8, "sha512") == "90693936"


def test_new_secrets_are_160_bits_and_round_trip_through_a_provisioning_uri() -> None:
    secret = new_secret()
    assert len(secret) == 32
    assert normalize_key(secret) == secret
    assert len(decode_key(secret)) == 20
    uri = provisioning_uri(secret, "alice@example.com", "Example")
    assert uri.startswith("otpauth://totp/Example:alice%40example.com?")
    assert pyotp.parse_uri(uri).secret == secret
