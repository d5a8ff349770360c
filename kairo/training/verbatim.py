"""Whether a chat template writes each message's content as it is, whatever the content: read from its syntax tree.

`kairo.training.render.Shapes` renders a conversation shape once with placeholders and puts each
conversation's contents in their places. That is the template's own render only when the template never
looks into a content: it writes it out (alone or joined to other strings with `+` or `~`) and does nothing
else with it, no filter (`| trim`), no test (`is string`), no comparison, no call, no assignment. A template
of which that holds, read from its Jinja syntax tree, needs no render of each conversation to check it.

The rule is deliberately narrow: the messages are read only through one `{% for message in messages %}`
loop, `message` only through a constant key or attribute; anything else (`messages[0]['content']`,
`message.get(…)`, a macro, a `{% set %}` or `{% filter %}` block) answers False, and Shapes then renders every conversation for
real and compares, as before.
"""

from __future__ import annotations

from typing import Any


def writes_contents_verbatim(environment: Any, source: str) -> bool:
    """True when the template (Jinja `source`, parsed by `environment`) writes contents only as they are."""
    from jinja2 import nodes

    if environment.autoescape or environment.finalize is not None:
        return False  # output would be escaped or converted
    tree = environment.parse(source)
    for block in tree.find_all((nodes.Macro, nodes.CallBlock, nodes.FilterBlock, nodes.AssignBlock)):
        # Output captured and then used (filtered, assigned, returned by a macro) is not written as it is;
        # transformers' {% generation %} block returns its body unchanged.
        call = getattr(block, "call", None)
        if not (isinstance(block, nodes.CallBlock) and isinstance(call, nodes.Call)
                and isinstance(call.node, nodes.ExtensionAttribute) and call.node.name == "_generation_support"):
            return False
    if any(isinstance(call.node, nodes.Name) and call.node.name == "strftime_now" for call in tree.find_all(nodes.Call)):
        return False  # renders change with the clock, not only with the roles
    loops = [loop for loop in tree.find_all(nodes.For)
             if isinstance(loop.iter, nodes.Name) and loop.iter.name == "messages"]
    if len(loops) != 1 or not isinstance(loops[0].target, nodes.Name):
        return False
    loop, message = loops[0], loops[0].target.name
    parents: dict[int, Any] = {}
    for node in [tree, *tree.find_all(nodes.Node)]:
        for child in node.iter_child_nodes():
            parents[id(child)] = node
    for name in tree.find_all(nodes.Name):
        if name.name == "messages" and name is not loop.iter:
            return False
        if name.name != message or name is loop.target:
            continue
        if name.ctx != "load":
            return False  # the loop variable assigned to
        read = parents.get(id(name))
        key = (read.attr if isinstance(read, nodes.Getattr) else read.arg.value
               if isinstance(read, nodes.Getitem) and isinstance(read.arg, nodes.Const) else None)
        called = isinstance(parents.get(id(read)), nodes.Call) and parents[id(read)].node is read
        if key is None or called or (key == "content" and not _written(read, parents, nodes)):
            return False  # read other than by a constant key, a method called, or a content not just written
    return True


def _written(node: Any, parents: dict[int, Any], nodes: Any) -> bool:
    """Whether the node's value reaches the output unchanged: through `+` and `~` only, straight to an Output."""
    parent = parents.get(id(node))
    while isinstance(parent, (nodes.Add, nodes.Concat)):
        parent = parents.get(id(parent))
    return isinstance(parent, nodes.Output)
