"""What a query may ask for, checked before it runs: depth, cost, aliases, tokens, introspection.

Depth, aliases and tokens are strawberry's own validation extensions. Cost is ours (strawberry has none):
every field selected costs 1, and a paginated field (one with a ``first`` argument) multiplies the cost of
what it selects by the page size asked for (the default page when absent), so ``usage(first: 200) { edges
{ node { ... } } }`` weighs what it can return, not what it spells.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    VariableNode,
)
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from gateway.graphql_config import GraphQLConfig

DEFAULT_PAGE = 50
MAX_PAGE = 200


def _page(field: FieldNode, variables: dict[str, Any]) -> int:
    """The page size ``field`` asks for with ``first`` (a literal or a variable), else the default."""
    for argument in field.arguments or ():
        if argument.name.value != "first":
            continue
        value = argument.value
        if isinstance(value, IntValueNode):
            return max(0, min(int(value.value), MAX_PAGE))
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            return max(0, min(given, MAX_PAGE)) if isinstance(given, int) else MAX_PAGE
        return MAX_PAGE
    return DEFAULT_PAGE if any(a.name.value == "after" for a in field.arguments or ()) else 1


def query_cost(
    selections: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
    seen: frozenset[str] = frozenset(),
) -> int:
    """The static cost of a selection set (see the module docstring)."""
    if selections is None:
        return 0
    cost = 0
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            inner = query_cost(selection.selection_set, fragments, variables, seen)
            cost += 1 + _page(selection, variables) * inner
        elif isinstance(selection, InlineFragmentNode):
            cost += query_cost(selection.selection_set, fragments, variables, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = fragments.get(name)
            if fragment is not None and name not in seen:  # cycles are another rule's error
                cost += query_cost(fragment.selection_set, fragments, variables, seen | {name})
    return cost


def cost_rule(max_cost: int) -> type[ValidationRule]:
    """A validation rule refusing any operation whose :func:`query_cost` exceeds ``max_cost``."""

    class MaxCost(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            context: ValidationContext = self.context
            fragments = {
                d.name.value: d for d in context.document.definitions if isinstance(d, FragmentDefinitionNode)
            }
            # Variables are not visible to validation; a variable page size counts as the maximum page.
            cost = query_cost(node.selection_set, fragments, {})
            if cost > max_cost:
                self.report_error(
                    GraphQLError(
                        f"The query costs {cost}, more than the limit of {max_cost} "
                        "(features.graphql.max_cost): ask for fewer fields or smaller pages.",
                        node,
                        extensions={"code": "QUERY_TOO_COSTLY", "cost": cost, "maxCost": max_cost},
                    )
                )

    return MaxCost


def extensions(config: GraphQLConfig) -> list[Callable[[], SchemaExtension]]:
    """Factories of the schema extensions enforcing ``config``'s limits (strawberry builds each request's
    own extensions from them)."""
    cost = cost_rule(config.max_cost)
    chosen: list[Callable[[], SchemaExtension]] = [
        partial(MaxTokensLimiter, config.max_tokens),
        partial(MaxAliasesLimiter, config.max_aliases),
        partial(QueryDepthLimiter, config.max_depth),
        partial(AddValidationRules, [cost]),
    ]
    if not config.introspection:
        chosen.append(DisableIntrospection)
    return chosen
