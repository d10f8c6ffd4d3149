"""Error policies (``errors=``), ``allow_failure``, ordered streams and ``quote``.

On a multi-process cluster: failures inside handed-off futures, Delayed and
concurrent futures, and under ``resolving``/``resolves_nested``.
"""

import asyncio
import concurrent.futures
import sys
import uuid
import warnings

import dask
import pytest
from distributed import Event, get_client
from helpers import fail, failed, in_thread, inc, wait_forgotten, watch_forgotten
from strategies import done

import unnest

if sys.version_info < (3, 11):  # the backport unnest depends on there
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup

pytestmark = pytest.mark.timeout(90)


# -- tasks (module level: workers import them by reference) -------------------


def fail_then_set(name, x):
    """Set the distributed Event ``name``, then fail."""
    Event(name).set()
    raise ZeroDivisionError(f"boom {x}")


def fail_after(name, x):
    """Wait for the distributed Event ``name``, then fail."""
    Event(name).wait()
    raise KeyError(f"late {x}")


def mixed_producer(n):
    """Hand off ``n`` children, of which the odd ones fail."""
    client = get_client()
    futures = [client.submit(inc if i % 2 == 0 else fail, i, pure=False) for i in range(n)]
    return unnest.hand_off({"xs": futures})


@dask.delayed
def parse(text):
    return int(text)


@dask.delayed
def parses(texts):
    """A Delayed whose value is more Delayed, one per text."""
    return [parse(text) for text in texts]


def notes_of(group):
    """Each sub-exception's place (the end of its note), sorted."""
    return sorted(error.__notes__[-1].rpartition(" at ")[2] for error in group.exceptions)


# -- errors="group" ---------------------------------------------------------------


def test_group_waits_for_everything_then_raises_every_failure_with_its_place(mp_client):
    watch_forgotten(mp_client)
    name = f"go-{uuid.uuid4()}"
    first = mp_client.submit(fail_then_set, name, 1, pure=False)
    # Fails only after the first failure: a call that stopped at the first
    # would not have it in its group.
    late = mp_client.submit(fail_after, name, 2, pure=False)
    obj = {
        "ok": mp_client.submit(inc, 1, pure=False),
        "first": first,
        "late": [late],
        "handed": mp_client.submit(mixed_producer, 4, pure=False),
        "delayed": parses(["1", "x"]),
        "concurrent": (done(5), failed(ValueError("cf"))),
    }
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap(obj, errors="group")
    group = info.value
    assert notes_of(group) == [
        "obj['concurrent'][1]",
        "obj['delayed'].compute()[1]",
        "obj['first']",
        "obj['handed'].result()['xs'][1]",
        "obj['handed'].result()['xs'][3]",
        "obj['late'][0]",
    ]
    assert str(group).startswith("unwrap: 6 of ")
    kinds = sorted(type(error).__name__ for error in group.exceptions)
    assert kinds == ["KeyError", "ValueError", "ValueError", *["ZeroDivisionError"] * 3]
    assert not hasattr(obj["concurrent"][1].exception(), "__notes__")  # the user's, untouched
    futures = [obj["ok"], first, late, obj["handed"]]
    assert all(f.status in ("finished", "error") for f in futures)  # none cancelled
    del obj, futures, first, late, group, info
    assert wait_forgotten(mp_client, made=9) == []


def test_group_without_failures_is_the_value(mp_client):
    obj = {"a": mp_client.submit(inc, 1), "d": parses(["2", "3"])}
    assert unnest.unwrap(obj, errors="group") == {"a": 2, "d": [2, 3]}


def test_group_in_unwrap_async(mp_client):
    obj = [mp_client.submit(fail, 1), mp_client.submit(inc, 1), mp_client.submit(fail, 2)]
    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(unnest.unwrap_async(obj, errors="group"))
    assert notes_of(info.value) == ["obj[0]", "obj[2]"]


def test_group_of_base_exceptions_is_a_base_exception_group():
    with pytest.raises(BaseExceptionGroup) as info:
        unnest.unwrap([failed(SystemExit(3)), failed(KeyError("k")), done(1)], errors="group")
    assert not isinstance(info.value, ExceptionGroup)
    assert sorted(type(e).__name__ for e in info.value.exceptions) == ["KeyError", "SystemExit"]
    assert next(e for e in info.value.exceptions if isinstance(e, SystemExit)).code == 3


def test_group_a_failure_met_twice_is_one_failure():
    bad = failed(KeyError("k"))
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap({"a": bad, "b": [bad], "c": done([bad])}, errors="group")
    assert len(info.value.exceptions) == 1


def test_timeout_ends_a_group_call_at_once():
    pending = concurrent.futures.Future()
    with pytest.raises(TimeoutError):
        unnest.unwrap([failed(KeyError("k")), pending], errors="group", timeout=0.2)


# -- the option itself --------------------------------------------------------------


def test_errors_return_is_return_exceptions(mp_client):
    obj = {"a": mp_client.submit(fail, 1), "b": mp_client.submit(inc, 1)}
    one = unnest.unwrap(obj, errors="return")
    other = unnest.unwrap(obj, return_exceptions=True)
    assert type(one["a"]) is type(other["a"]) is ZeroDivisionError and one["b"] == other["b"] == 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"errors": "ignore"},
            ValueError,
            "`errors` must be 'raise', 'return' or 'group', got 'ignore'",
        ),
        ({"errors": ["raise"]}, ValueError, "`errors` must be"),
        ({"errors": "group", "return_exceptions": True}, ValueError, "cannot go with"),
        ({"return_exceptions": 1}, TypeError, "`return_exceptions` must be True or False"),
        ({"ordered": "yes"}, TypeError, "`ordered` must be True or False"),
    ],
)
def test_bad_options_are_named(kwargs, error, match):
    front_doors = [unnest.as_resolved, unnest.as_resolved_async]
    if "ordered" not in kwargs:
        front_doors += [unnest.unwrap]
    for front_door in front_doors:
        with pytest.raises(error, match=match):
            front_door([done(1)], **kwargs)


# -- allow_failure ----------------------------------------------------------------


def test_allow_failure_puts_errors_in_place_inside_and_raises_outside(mp_client):
    inside = {
        "future": mp_client.submit(fail, 1, pure=False),
        "handed": mp_client.submit(mixed_producer, 2, pure=False),
        "delayed": parses(["x"]),
        "concurrent": failed(ValueError("cf")),
        "fine": mp_client.submit(inc, 1, pure=False),
    }
    out = unnest.unwrap({"n": mp_client.submit(inc, 0), "maybe": unnest.allow_failure(inside)})
    maybe = out["maybe"]
    assert out["n"] == 1 and maybe["fine"] == 2
    assert isinstance(maybe["future"], ZeroDivisionError)
    assert maybe["handed"]["xs"][0] == 1 and isinstance(maybe["handed"]["xs"][1], ZeroDivisionError)
    assert isinstance(maybe["delayed"][0], ValueError)
    assert maybe["concurrent"] is inside["concurrent"].exception()  # as is, like "return"
    # Outside it, the call's policy: the first failure raises, naming its place.
    with pytest.raises(ZeroDivisionError) as info:
        unnest.unwrap({"maybe": unnest.allow_failure(inside), "bad": mp_client.submit(fail, 2)})
    assert info.value.__notes__[-1].endswith("at obj['bad']")


def test_an_excused_or_grouped_failure_does_not_keep_its_future(mp_client):
    # The graph's record of excused failures kept their nodes, and so the
    # user's futures, after the call: until the garbage collector ran.
    import gc

    watch_forgotten(mp_client)
    gc.disable()
    try:
        bad = mp_client.submit(fail, 1, pure=False)
        out = unnest.unwrap(unnest.allow_failure(bad))
        assert isinstance(out, ZeroDivisionError)
        other = mp_client.submit(fail, 2, pure=False)
        with pytest.raises(ExceptionGroup):
            unnest.unwrap([other], errors="group")
        del bad, out, other
        assert wait_forgotten(mp_client, made=2, timeout=10) == []
    finally:
        gc.enable()


def test_allow_failure_is_replaced_even_with_nothing_to_resolve():
    assert unnest.unwrap(unnest.allow_failure([1, 2])) == [1, 2]
    inner = {"x": 1}
    assert unnest.unwrap([unnest.allow_failure(inner)])[0] is inner
    assert unnest.unwrap((unnest.allow_failure(3),)) == (3,)


def test_a_placeholder_inside_and_outside_allow_failure_follows_the_policy():
    bad = failed(KeyError("k"))
    with pytest.raises(KeyError) as info:
        unnest.unwrap({"a": unnest.allow_failure([bad]), "b": bad})
    assert info.value.__notes__ == ["raised by the concurrent.futures.Future at obj['a'][0]"] or (
        info.value.__notes__ == ["raised by the concurrent.futures.Future at obj['b']"]
    )
    # Excused first, then met outside (in a value resolved later): raised there.
    later = concurrent.futures.Future()
    call = in_thread(lambda: unnest.unwrap({"a": unnest.allow_failure(bad), "b": later}))
    later.set_result([bad])
    with pytest.raises(KeyError) as info:
        call.result(timeout=30)
    assert info.value.__notes__[-1].endswith("at obj['b'].result()[0]")


def test_allow_failure_under_group_is_not_in_the_group():
    obj = {"a": unnest.allow_failure(failed(KeyError("a"))), "b": failed(KeyError("b"))}
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap(obj, errors="group")
    assert notes_of(info.value) == ["obj['b']"]


def test_allow_failure_of_delayed_batch_without_a_client():
    # Computed together by dask.compute, which does not say which failed:
    # each is then computed on its own, to put each error in its place.
    out = unnest.unwrap([unnest.allow_failure(parse("x")), parse("1"), parse("2")])
    assert isinstance(out[0], ValueError) and out[1:] == [1, 2]
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap([parse("x"), parse("1"), parse("y")], errors="group")
    assert notes_of(info.value) == ["obj[0]", "obj[2]"]


@unnest.resolving
def describe_inputs(values):
    return [type(value).__name__ for value in values]


@unnest.resolves_nested
def describe_nested(values):
    return [type(value).__name__ for value in values]


def test_allow_failure_in_resolving_and_resolves_nested_inputs(mp_client):
    futures = [mp_client.submit(inc, 1), mp_client.submit(fail, 1)]
    task = mp_client.submit(describe_inputs, unnest.allow_failure(futures))
    assert task.result() == ["int", "ZeroDivisionError"]
    with pytest.raises(ZeroDivisionError):
        mp_client.submit(describe_inputs, futures).result()
    nested = describe_nested(unnest.allow_failure([parse("1"), parse("x")]))
    assert mp_client.compute(nested).result() == ["int", "ValueError"]


def test_allow_failure_is_a_small_value_object():
    import pickle

    wrapper = unnest.allow_failure([1, "a"])
    assert repr(wrapper) == "allow_failure([1, 'a'])"
    assert wrapper == unnest.allow_failure([1, "a"]) and wrapper != unnest.allow_failure([2])
    assert pickle.loads(pickle.dumps(wrapper)) == wrapper


# -- streams: group, allow_failure, ordered ---------------------------------------


def test_stream_group_yields_the_good_pairs_then_raises_the_group(mp_client):
    obj = {
        "a": mp_client.submit(inc, 1),
        "b": mp_client.submit(fail, 1),
        "c": [mp_client.submit(mixed_producer, 2, pure=False)],  # its value holds a failure
        "d": parses(["4"]),
    }
    pairs = []
    with pytest.raises(ExceptionGroup) as info:
        for pair in unnest.as_resolved(obj, errors="group"):
            pairs.append(pair)
    assert sorted(pairs) == [(("a",), 2), (("d",), [4])]
    assert notes_of(info.value) == ["obj['b']", "obj['c'][0].result()['xs'][1]"]
    assert str(info.value).startswith("as_resolved: 2 of ")


def test_stream_allow_failure_yields_the_error_and_the_wrapper_is_no_step():
    bad = failed(KeyError("k"))
    pairs = list(unnest.as_resolved({"m": unnest.allow_failure([bad, done(1)])}))
    assert sorted(pairs, key=repr) == sorted([(("m", 0), bad.exception()), (("m", 1), 1)], key=repr)


def test_ordered_stream_waits_for_the_placeholders_before():
    first = concurrent.futures.Future()
    stream = unnest.as_resolved({"first": first, "then": [done(2), done(3)]}, ordered=True)
    head = in_thread(lambda: next(stream))
    first.set_result(1)  # the others were done long before
    assert head.result(timeout=30) == (("first",), 1)
    assert list(stream) == [(("then", 0), 2), (("then", 1), 3)]


def test_ordered_stream_on_a_cluster_in_the_walks_order(mp_client):
    name = f"go-{uuid.uuid4()}"
    slow = mp_client.submit(fail_after, name, 0, pure=False)
    obj = {
        "z": [mp_client.submit(inc, i, pure=False) for i in range(3)],
        "slow": unnest.allow_failure(slow),
        "a": mp_client.submit(inc, 10, pure=False),
    }
    stream = unnest.as_resolved(obj, ordered=True)
    got = [next(stream) for _ in range(3)]
    assert got == [(("z", 0), 1), (("z", 1), 2), (("z", 2), 3)]
    Event(name, client=mp_client).set()
    (path, error), last = list(stream)
    assert path == ("slow",) and isinstance(error, KeyError) and last == (("a",), 11)


def test_ordered_stream_with_group_skips_the_failures_in_turn():
    obj = [done(1), failed(KeyError("k")), done(3)]
    pairs = []
    with pytest.raises(ExceptionGroup):
        for pair in unnest.as_resolved(obj, ordered=True, errors="group"):
            pairs.append(pair)
    assert pairs == [((0,), 1), ((2,), 3)]


def test_ordered_async_stream():
    first = concurrent.futures.Future()

    async def main():
        stream = unnest.as_resolved_async([first, done(2)], ordered=True)
        head = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # the stream starts, finds the second done
        first.set_result(1)
        return [await head, *[pair async for pair in stream]]

    assert asyncio.run(main()) == [((0,), 1), ((1,), 2)]


# -- quote, and opaque its deprecated alias -------------------------------------


def test_opaque_is_a_deprecated_alias_of_quote():
    with pytest.warns(DeprecationWarning, match="unnest.quote"):
        alias = unnest.opaque
    assert alias is unnest.quote
    with pytest.warns(DeprecationWarning):
        from unnest import opaque  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert unnest.unwrap(unnest.quote([done(1)]))[0].result() == 1
        namespace = {}
        exec("from unnest import *", namespace)
    assert "quote" in namespace and "opaque" not in namespace


# -- placeholders of a client found on another loop (a relay call) ----------------


def fail_inside():
    """A value that holds a failing future."""
    return unnest.hand_off({"inner": [get_client().submit(fail, 2, pure=False)]})


@pytest.fixture(params=["current-client", "no-current-client"])
def own_client(request, mp_cluster):
    """Without a current client, the futures in a concurrent future's value
    are resolved by a relay call on their client's loop."""
    from distributed import Client

    with Client(mp_cluster, set_as_default=request.param == "current-client") as own:
        yield own


def test_group_and_allow_failure_through_a_relay(own_client):
    bad = own_client.submit(fail, 1)
    deeper = own_client.submit(fail_inside, pure=False)
    good = own_client.submit(inc, 1)
    with pytest.raises(ExceptionGroup) as info:
        unnest.unwrap({"o": done([good, bad, deeper])}, errors="group")
    assert notes_of(info.value) == [
        "obj['o'].result()[1]",
        "obj['o'].result()[2].result()['inner'][0]",
    ]
    assert all(len(error.__notes__) == 1 for error in info.value.exceptions)
    out = unnest.unwrap({"o": unnest.allow_failure(done([good, bad, deeper])), "g": done(good)})
    assert out["g"] == 2 and out["o"][0] == 2 and isinstance(out["o"][1], ZeroDivisionError)
    assert isinstance(out["o"][2]["inner"][0], ZeroDivisionError)
    pairs = []
    with pytest.raises(ExceptionGroup) as info:
        for pair in unnest.as_resolved(
            {"o": done([bad]), "d": done([deeper]), "g": done([good])}, errors="group"
        ):
            pairs.append(pair)
    assert pairs == [(("g",), [2])]
    assert notes_of(info.value) == [
        "obj['d'].result()[0].result()['inner'][0]",
        "obj['o'].result()[0]",
    ]


# -- found by testing issue 21 -------------------------------------------------------


def test_a_container_excused_inside_allow_failure_then_met_outside_raises():
    shared = [failed(KeyError("k"))]
    later = concurrent.futures.Future()
    stream = unnest.as_resolved({"a": unnest.allow_failure(shared), "b": later})
    assert next(stream)[0] == ("a", 0)  # inside: the error in its place
    later.set_result(shared)  # the very list, now outside any allow_failure
    with pytest.raises(KeyError) as info:
        next(stream)
    assert info.value.__notes__[-1].endswith("at obj['b'].result()[0]")


def test_a_container_excused_then_met_outside_is_in_the_group_once():
    shared = [failed(KeyError("k"))]
    later = concurrent.futures.Future()
    stream = unnest.as_resolved({"a": unnest.allow_failure(shared), "b": later}, errors="group")
    assert next(stream)[0] == ("a", 0)  # inside: the error in its place
    later.set_result([shared, shared])  # twice, outside: one failure
    with pytest.raises(ExceptionGroup) as info:
        next(stream)
    assert notes_of(info.value) == ["obj['b'].result()[0][0]"]


def test_a_relayed_excused_failure_then_met_outside_allow_failure_raises(mp_cluster):
    from distributed import Client

    with Client(mp_cluster, set_as_default=False) as own:  # no current client: a relay
        bad = own.submit(fail, 1, pure=False)
        later = concurrent.futures.Future()
        stream = unnest.as_resolved({"a": unnest.allow_failure(done([bad])), "b": later})
        assert next(stream)[0] == ("a",)
        later.set_result([bad])
        with pytest.raises(ZeroDivisionError) as info:
            next(stream)
        assert info.value.__notes__[-1].endswith("at obj['b'].result()[0]")


def test_an_ordered_stream_does_not_keep_the_futures_after_it_ends(mp_client):
    import gc

    watch_forgotten(mp_client)
    gc.disable()
    try:
        future = mp_client.submit(inc, 1, pure=False)
        assert list(unnest.as_resolved([future], ordered=True)) == [((0,), 2)]
        del future
        assert wait_forgotten(mp_client, made=1, timeout=10) == []
    finally:
        gc.enable()
