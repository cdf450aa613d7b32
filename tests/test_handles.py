"""TimerHandle as a value: ordering, equality, hashing and repr, compared with asyncio.

asyncio.TimerHandle orders by deadline (``<``/``>`` compare ``when``); ``==`` compares the
deadline, the callback, the arguments and the cancelled flag; ``<=``/``>=`` are ``<``/``>``
or ``==`` (so two handles with the same deadline but different callbacks are neither
``<=`` nor ``>=`` each other); ``hash()`` is the deadline's. Code sorts handles and keeps
them in heaps and sets, so ferroloop's TimerHandle must behave the same.
"""

import pytest

from looptest_support import outcome


def first():
    pass


def second():
    pass


def relations(x, y):
    return (x < y, x <= y, x > y, x >= y, x == y, x != y)


def test_timer_handle_comparisons(compare):
    def scenario(loop):
        early = loop.call_at(10.0, first)
        late = loop.call_at(20.0, first)
        twin = loop.call_at(10.0, first)  # same deadline, callback and arguments
        other_cb = loop.call_at(10.0, second)
        other_args = loop.call_at(10.0, first, 1)
        cancelled = loop.call_at(10.0, first)
        cancelled.cancel()
        res = {
            "early-late": relations(early, late),
            "late-early": relations(late, early),
            "early-twin": relations(early, twin),
            "early-self": relations(early, early),
            "early-other-callback": relations(early, other_cb),
            "early-other-args": relations(early, other_args),
            "early-cancelled": relations(early, cancelled),
        }
        for h in (early, late, twin, other_cb, other_args):
            h.cancel()
        return res

    res = compare(scenario)
    # <, <=, >, >=, ==, !=
    assert res["early-late"] == (True, True, False, False, False, True)
    assert res["late-early"] == (False, False, True, True, False, True)
    assert res["early-twin"] == (False, True, False, True, True, False)
    assert res["early-self"] == (False, True, False, True, True, False)
    assert res["early-other-callback"] == (False, False, False, False, False, True)
    assert res["early-other-args"] == (False, False, False, False, False, True)
    assert res["early-cancelled"] == (False, False, False, False, False, True)


def test_timer_handle_compared_with_other_objects(compare):
    def scenario(loop):
        timer = loop.call_at(10.0, first)
        plain = loop.call_soon(first)
        res = [
            timer == 10.0,
            timer != 10.0,
            timer == plain,
            outcome(lambda: timer < 10.0)[:2],
            outcome(lambda: timer >= 10.0)[:2],
            outcome(lambda: timer < plain)[:2],
            outcome(lambda: plain > timer)[:2],
        ]
        timer.cancel()
        plain.cancel()
        return res

    assert compare(scenario) == [
        False,
        True,
        False,
        ("raise", TypeError),
        ("raise", TypeError),
        ("raise", TypeError),
        ("raise", TypeError),
    ]


def test_timer_handle_hash_and_sets(compare):
    def scenario(loop):
        a = loop.call_at(12.5, first)
        twin = loop.call_at(12.5, first)
        b = loop.call_at(12.5, second)
        c = loop.call_at(99.0, first)
        res = (
            hash(a) == hash(12.5),
            hash(c) == hash(99.0),
            hash(a) == hash(twin) == hash(b),
            len({a, twin, b, c}),  # a and twin are equal: one of them stays
            a in {twin},
            {a: "x"}.get(twin),
        )
        for h in (a, twin, b, c):
            h.cancel()
        return res

    assert compare(scenario) == (True, True, True, 3, True, "x")


def test_sorted_timer_handles(compare):
    def scenario(loop):
        whens = [5.0, 1.0, 3.0, 1e9, 2.0, 4.0, 0.5]
        handles = [loop.call_at(w, first) for w in whens]
        by_sorted = [h.when() for h in sorted(handles)]
        by_min_max = (min(handles).when(), max(handles).when())
        for h in handles:
            h.cancel()
        return by_sorted, by_min_max

    assert compare(scenario) == ([0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 1e9], (0.5, 1e9))


@pytest.mark.parametrize(
    "when",
    [1e300, 1e-07, 12345.5, 1.0, 0.1 + 0.2, 1e16, 123456789.123456789, -1.5, float("inf")],
    ids=["1e300", "1e-07", "12345.5", "1.0", "0.1+0.2", "1e16", "long-fraction", "negative", "inf"],
)
def test_timer_handle_repr_formats_when_like_asyncio(compare, when):
    def scenario(loop):
        h = loop.call_at(when, first)
        live = repr(h)
        h.cancel()
        return live, repr(h)

    live, cancelled = compare(scenario)
    # asyncio formats the deadline with str(float).
    assert live.startswith(f"<TimerHandle when={when} first() at ")
    assert cancelled == f"<TimerHandle cancelled when={when}>"
