"""labkit._ident.IdentRegistry: gevent's minimal_ident numbers, and what
they cost the garbage collector (one tracked object per numbered object:
a console numbers every greenlet of a program at once, and those
references live as long as the greenlets)."""
import gc
import sys

from labkit._ident import IdentRegistry


class Thing:
    pass


def test_numbers_are_the_smallest_free_and_come_back_when_their_object_dies():
    registry = IdentRegistry()
    things = [Thing() for _ in range(4)]
    assert [registry.get_ident(t) for t in things] == [0, 1, 2, 3]
    assert registry.get_ident(things[2]) == 2          # asked again: the same
    del things[1]
    gc.collect()
    assert len(registry) == 3
    fresh = Thing()
    assert registry.get_ident(fresh) == 1              # the freed number
    assert registry.get_ident(Thing()) == 4           # none free: the next


def test_a_numbered_object_costs_one_tracked_object():
    registry = IdentRegistry()
    things = [Thing() for _ in range(1000)]
    gc.collect()
    before = len(gc.get_objects())
    for t in things:
        registry.get_ident(t)
    gc.collect()
    made = len(gc.get_objects()) - before
    # the weak reference that carries the number (a closure per object
    # made ~7: a function, its cells, a tuple, the entry tuple)
    assert made <= 1000 + 10, made


def test_objects_outliving_their_registry_die_quietly(monkeypatch):
    raised = []
    monkeypatch.setattr(sys, "unraisablehook", raised.append)
    registry = IdentRegistry()
    things = [Thing() for _ in range(3)]
    for t in things:
        registry.get_ident(t)
    del registry
    gc.collect()
    del things      # their references' callback finds no registry: nothing to do
    gc.collect()
    assert raised == []
