"""chat.ratelimit with an injected clock: the bucket and the 1008 refusal window."""

import pytest

from chat.ratelimit import RefusalWindow, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1024.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def takes(bucket: TokenBucket, n: int) -> list[bool]:
    return [bucket.take() for _ in range(n)]


def test_bucket_starts_full_and_allows_the_burst(clock):
    bucket = TokenBucket(rate=20, burst=40, clock=clock)
    assert takes(bucket, 40) == [True] * 40
    assert bucket.take() is False


def test_bucket_refills_at_rate(clock):
    # Powers of two keep the float arithmetic exact.
    bucket = TokenBucket(rate=8, burst=16, clock=clock)
    takes(bucket, 16)
    assert bucket.take() is False
    clock.advance(0.0625)  # half a token
    assert bucket.take() is False
    clock.advance(0.0625)  # now one whole token (the half was kept)
    assert bucket.take() is True
    assert bucket.take() is False
    clock.advance(0.625)  # five tokens
    assert takes(bucket, 6) == [True] * 5 + [False]


def test_bucket_never_holds_more_than_burst(clock):
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    takes(bucket, 3)
    clock.advance(3600)
    assert takes(bucket, 4) == [True, True, True, False]


def test_refused_take_spends_nothing(clock):
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take() is True
    for _ in range(50):
        assert bucket.take() is False
    clock.advance(1.0)
    assert bucket.take() is True


def test_sustained_rate_is_allowed(clock):
    bucket = TokenBucket(rate=16, burst=32, clock=clock)
    takes(bucket, 32)
    allowed = 0
    for _ in range(400):  # 25 s at exactly the rate, after the burst is spent
        clock.advance(0.0625)
        allowed += bucket.take()
    assert allowed == 400


def test_bucket_uses_the_monotonic_clock_by_default():
    bucket = TokenBucket(rate=1, burst=2)
    assert takes(bucket, 3) == [True, True, False]


def test_window_closes_only_after_more_than_limit(clock):
    window = RefusalWindow(limit=3, window_s=10.0, clock=clock)
    assert [window.refuse() for _ in range(3)] == [False] * 3
    assert window.refuse() is True


def test_window_forgets_refusals_older_than_the_window(clock):
    window = RefusalWindow(limit=2, window_s=10.0, clock=clock)
    window.refuse()
    window.refuse()
    clock.advance(10.0)  # exactly the window: the old ones drop out
    assert window.refuse() is False
    assert window.refuse() is False
    assert window.refuse() is True


def test_window_slides(clock):
    window = RefusalWindow(limit=2, window_s=10.0, clock=clock)
    window.refuse()  # t=0
    clock.advance(6)
    window.refuse()  # t=6
    clock.advance(5)  # t=11: the first one is gone
    assert window.refuse() is False
    assert window.refuse() is True  # t=6, 11, 11


def test_window_default_is_ten_seconds(clock):
    window = RefusalWindow(limit=1, clock=clock)
    window.refuse()
    clock.advance(9.9)
    assert window.refuse() is True
    clock.advance(10.0)
    assert window.refuse() is False
