"""Every public async member has a sync twin with the same (mapped) signature and docstring."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

import loyaltylayer._async._client as async_client
import loyaltylayer._async._resources as async_resources
import loyaltylayer._sync as sync

# Written out here rather than taken from the generator, so a wrong mapping there fails here.
NAMES = {
    "AsyncLoyaltyLayer": "LoyaltyLayer",
    "AsyncCards": "Cards",
    "AsyncPasses": "Passes",
    "AsyncLoyaltyLayerWithRawResponse": "LoyaltyLayerWithRawResponse",
    "AsyncCardsWithRawResponse": "CardsWithRawResponse",
    "AsyncPassesWithRawResponse": "PassesWithRawResponse",
    "AsyncIterator": "Iterator",
    "AsyncIterable": "Iterable",
}
METHODS = {"__aenter__": "__enter__", "__aexit__": "__exit__"}
DROPPED = {("AsyncLoyaltyLayer", "__init__"): {"session", "trace_configs"}}

PAIRS = [
    (async_client.AsyncLoyaltyLayer, sync.LoyaltyLayer),
    (async_resources.AsyncCards, sync.Cards),
    (async_resources.AsyncPasses, sync.Passes),
    (async_client.AsyncLoyaltyLayerWithRawResponse, sync.LoyaltyLayerWithRawResponse),
    (async_resources.AsyncCardsWithRawResponse, sync.CardsWithRawResponse),
    (async_resources.AsyncPassesWithRawResponse, sync.PassesWithRawResponse),
]
IDS = [a.__name__ for a, _ in PAIRS]


def _mapped(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return annotation
    tree = ast.parse(annotation, mode="eval").body
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = NAMES.get(node.id, node.id)
    members: list[str] = []

    def flatten(node: ast.expr) -> None:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            flatten(node.left)
            flatten(node.right)
        elif ast.unparse(node) not in members:
            members.append(ast.unparse(node))

    flatten(tree)
    return " | ".join(members)


def _public(cls: type) -> dict[str, Any]:
    return {
        METHODS.get(name, name): value
        for name, value in vars(cls).items()
        if not name.startswith("_") or name in {*METHODS, *METHODS.values(), "__init__", "__repr__"}
    }


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=IDS)
def test_the_same_public_members(async_cls: type, sync_cls: type) -> None:
    expected = set(_public(async_cls))
    if async_cls.__name__ != "AsyncLoyaltyLayer":
        expected.discard("__init__")  # resources are made by their client, never by users
    assert set(_public(sync_cls)) - {"__repr__"} == expected - {"__repr__"}


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=IDS)
def test_the_same_signatures_and_docstrings(async_cls: type, sync_cls: type) -> None:
    sync_members = _public(sync_cls)
    for name, member in _public(async_cls).items():
        if name == "__init__" and async_cls.__name__ != "AsyncLoyaltyLayer":
            continue
        twin = sync_members[name]
        if isinstance(member, property):
            assert isinstance(twin, property), name
            member, twin = member.fget, twin.fget
        elif isinstance(member, classmethod):
            assert type(twin) is type(member), name
            member, twin = member.__func__, twin.__func__
        assert twin.__doc__ == member.__doc__, name
        if name == "__repr__":
            continue
        expected = inspect.signature(member)
        dropped = DROPPED.get((async_cls.__name__, name), set())
        parameters = [
            p.replace(annotation=_mapped(p.annotation))
            for p in expected.parameters.values()
            if p.name not in dropped
        ]
        assert inspect.signature(twin) == expected.replace(
            parameters=parameters, return_annotation=_mapped(expected.return_annotation)
        ), name
