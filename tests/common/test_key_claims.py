"""The run's key claims: first claim wins, later attempts of a job take over, too-long keys are refused."""

from __future__ import annotations

import threading

from common.key_claims import MAX_KEY_BYTES, KeyClaims, Owner


def test_first_claim_wins_and_the_reason_names_the_other_job_and_the_fix() -> None:
    claims = KeyClaims()
    assert claims.claim("b", ("k",), Owner("east", 1, "s3://src/east/k")) is None
    reason = claims.claim("b", ("k",), Owner("west", 1, "s3://src/west/k"))
    assert reason is not None and "job east" in reason and "s3://src/east/k" in reason and "{job_id}" in reason
    assert claims.owner("b", "k") == Owner("east", 1, "s3://src/east/k")
    assert claims.claim("other-bucket", ("k",), Owner("west", 1, "s3://src/west/k")) is None


def test_the_same_owner_again_and_a_later_attempt_of_the_job_may_claim() -> None:
    claims = KeyClaims()
    first = Owner("j", 1, "ftp://primary/a.csv")
    assert claims.claim("b", ("k",), first) is None
    assert claims.claim("b", ("k",), first) is None
    assert claims.claim("b", ("k",), Owner("j", 1, "ftp://primary/other.csv")) is not None, "same attempt, other source"
    assert claims.claim("b", ("k",), Owner("j", 2, "ftp://mirror/a.csv")) is None, "the fallback takes over"
    assert claims.claim("b", ("k",), first) is not None, "the abandoned attempt cannot take it back"


def test_keys_are_claimed_all_or_none() -> None:
    claims = KeyClaims()
    assert claims.claim("b", ("r/x.errors.json",), Owner("a", 1, "u1")) is None
    assert claims.claim("b", ("r/x", "r/x.errors.json"), Owner("b", 1, "u2")) is not None
    assert claims.owner("b", "r/x") is None


def test_a_key_longer_than_s3_allows_is_refused() -> None:
    claims = KeyClaims()
    assert claims.claim("b", ("k" * MAX_KEY_BYTES,), Owner("j", 1, "u")) is None
    reason = claims.claim("b", ("é" * (MAX_KEY_BYTES // 2 + 1),), Owner("j", 1, "u"))  # 2 bytes a character
    assert reason is not None and "1026 bytes" in reason


def test_concurrent_claims_grant_each_key_once() -> None:
    claims = KeyClaims()
    granted: list[str] = []
    lock = threading.Lock()

    def claim(job: str) -> None:
        for i in range(200):
            if claims.claim("b", (f"k{i}",), Owner(job, 1, f"{job}/{i}")) is None:
                with lock:
                    granted.append(f"k{i}")

    threads = [threading.Thread(target=claim, args=(f"job{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(granted) == sorted(f"k{i}" for i in range(200))
