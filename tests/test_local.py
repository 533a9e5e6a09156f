"""labkit.local.local: greenlet-local storage, like threading.local.

Specification:
- each greenlet sees only the attributes it set itself;
- a subclass's __init__ runs once per greenlet, on its first access, with
  the constructor's arguments; a plain local() refuses arguments;
- methods, properties and class attributes behave as on any object;
- attributes in __slots__ are shared by all greenlets (as threading.local's);
- a greenlet's namespace is dropped when the greenlet is collected.
"""
import gc
import threading

import pytest

import labkit
from labkit import sleep, spawn
from labkit.local import local

pytestmark = pytest.mark.timeout(30)


def test_each_greenlet_sees_only_its_own_attributes():
    data = local()
    data.name = "main"

    def body(name):
        assert not hasattr(data, "name")
        data.name = name
        sleep(0)  # let the other greenlet set its own
        return data.name

    a, b = spawn(body, "a"), spawn(body, "b")
    assert (a.get(), b.get()) == ("a", "b")
    assert data.name == "main"
    assert data.__dict__ == {"name": "main"}


def test_delattr_removes_only_the_current_greenlets_attribute():
    data = local()
    data.x = 1
    spawn(lambda: setattr(data, "x", 2)).join()
    del data.x
    assert not hasattr(data, "x")
    with pytest.raises(AttributeError):
        del data.x


def test_a_subclass_init_runs_once_per_greenlet_with_the_constructor_args():
    calls = []

    class Counter(local):
        def __init__(self, start):
            calls.append(start)
            self.value = start

    counter = Counter(10)
    assert calls == [10]  # the creating greenlet, right away
    counter.value += 1

    def body():
        counter.value += 5
        counter.value += 5
        return counter.value

    assert spawn(body).get() == 20
    assert calls == [10, 10]  # once more, for the new greenlet only
    assert counter.value == 11


def test_a_plain_local_refuses_constructor_arguments():
    with pytest.raises(TypeError):
        local(1)
    with pytest.raises(TypeError):
        local(key="value")


def test_methods_properties_and_class_attributes_work():
    class Account(local):
        currency = "EUR"

        def __init__(self):
            self.cents = 0

        @property
        def euros(self):
            return self.cents / 100

        def deposit(self, cents):
            self.cents += cents

    account = Account()
    account.deposit(250)
    assert account.euros == 2.5 and account.currency == "EUR"
    assert spawn(lambda: (account.deposit(100), account.euros)[1]).get() == 1.0
    with pytest.raises(AttributeError):
        account.euros = 3  # a property without a setter stays read-only


def test_slots_are_shared_by_all_greenlets_like_threading_local():
    class Slotted(local):
        __slots__ = ("shared",)

    obj = Slotted()
    obj.shared = "everyone"
    obj.own = "main only"
    assert spawn(lambda: (obj.shared, hasattr(obj, "own"))).get() == ("everyone", False)

    class ThreadSlotted(threading.local):
        __slots__ = ("shared",)

    reference = ThreadSlotted()
    reference.shared = "everyone"
    seen = []
    thread = threading.Thread(target=lambda: seen.append(reference.shared))
    thread.start()
    thread.join()
    assert seen == ["everyone"]  # the behaviour we copy


def test_a_collected_greenlets_namespace_is_dropped():
    data = local()
    g = spawn(lambda: setattr(data, "big", bytearray(1000)))
    g.join()
    sleep(0)  # let the hub finish with g (its links)
    storage = object.__getattribute__(data, "_local__storage")
    assert len(storage.dicts) == 2  # main and g
    del g
    gc.collect()
    assert len(storage.dicts) == 1


def test_each_os_thread_has_its_own_namespace_too():
    data = local()
    data.x = "main"
    seen = []

    def other():
        seen.append(hasattr(data, "x"))
        data.x = "thread"

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen == [False] and data.x == "main"


def test_copy_of_a_local_copies_the_current_greenlets_namespace():
    import copy
    from labkit.local import local

    class Settings(local):
        def __init__(self, level):
            self.level = level

    original = Settings(1)
    original.extra = ["shared list"]
    duplicate = copy.copy(original)
    assert type(duplicate) is Settings and duplicate is not original
    assert (duplicate.level, duplicate.extra) == (1, ["shared list"])
    assert duplicate.extra is original.extra          # shallow
    duplicate.level = 2
    assert original.level == 1
    seen = []
    labkit.spawn(lambda: seen.append(duplicate.level)).join()
    assert seen == [1]                                  # another greenlet: __init__ again


def test_all_local_dicts_for_greenlet_lists_the_greenlets_namespaces():
    from labkit.local import all_local_dicts_for_greenlet, local
    data = local()
    data.x = 1
    [((kind, ident), namespace)] = [entry for entry in all_local_dicts_for_greenlet(
        labkit.getcurrent()) if entry[0][1] == id(data)]
    assert kind is local and namespace == {"x": 1}
