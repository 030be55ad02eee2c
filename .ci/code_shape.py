"""The shape of the library's code: size, long functions, wide signatures, exports, shared names,
private names imported across modules. `python .ci/code_shape.py [CHECKOUT] [--json]` prints it;
tests/test_code_shape.py holds the rules (issue 23): no function over 80 lines (docstring aside), no
public function with more than 12 parameters, no private name imported across modules."""

import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "jcausal"


def _modules(root=ROOT):
    for path in sorted(root.rglob("*.py")):
        yield path, ".".join(path.relative_to(root.parent).with_suffix("").parts)


def _body_lines(node):
    """Lines of a function without its docstring."""
    first = node.body[0]
    start = node.lineno
    if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
            and isinstance(first.value.value, str):
        n_doc = first.end_lineno - first.lineno + 1
    else:
        n_doc = 0
    return node.end_lineno - start + 1 - n_doc


def _n_params(node):
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names = [n for n in names if n not in ("self", "cls")]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)


def _public(qualname, module):
    return not any(p.startswith("_") for p in qualname.split(".")) and not any(
        p.startswith("_") and p != "__init__" for p in module.split(".")[1:])


def _deprecated(node):
    """A deprecation alias (its body warns ``DeprecationWarning``) does not define a second meaning."""
    return any(isinstance(n, ast.Name) and n.id == "DeprecationWarning" for n in ast.walk(node))


def _functions(tree, module):
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                q = prefix + child.name
                out.append({"name": f"{module}:{q}", "lines": _body_lines(child),
                            "params": _n_params(child), "public": _public(q, module)})
                visit(child, q + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
    visit(tree, "")
    return out


def measure(root=ROOT):
    lines = functions = 0
    funcs, private_imports = [], []
    exports, definitions = {}, defaultdict(set)
    for path, module in _modules(root):
        text = path.read_text()
        lines += len(text.splitlines())
        tree = ast.parse(text)
        package = module.rsplit(".", 1)[0] if not path.name == "__init__.py" else module

        found = _functions(tree, module)
        functions += len(found)
        funcs += found
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                if not any(p.startswith("_") for p in module.split(".")[1:]) and not _deprecated(node):
                    definitions[node.name].add(module)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                    for t in node.targets):
                try:
                    exports[module] = len(ast.literal_eval(node.value))
                except ValueError:
                    pass
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and (
                    node.level or node.module.startswith("jcausal")):
                src = node.module if not node.level else ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [node.module])
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and src != module:
                        private_imports.append(f"{module} imports {src}.{alias.name}")
    dup = {k: sorted(v) for k, v in definitions.items()
           if len({m.split(".")[1] if m.count(".") else m for m in v}) > 1}
    return {
        "lines": lines, "functions": functions,
        "over_60": sorted([(f["name"], f["lines"]) for f in funcs if f["lines"] > 60], key=lambda t: -t[1]),
        "over_80": sorted([(f["name"], f["lines"]) for f in funcs if f["lines"] > 80], key=lambda t: -t[1]),
        "widest_public": sorted([(f["name"], f["params"]) for f in funcs
                                 if f["public"] and f["params"] >= 10], key=lambda t: -t[1]),
        "public_over_12": [(f["name"], f["params"]) for f in funcs if f["public"] and f["params"] > 12],
        "exports": exports, "duplicated_names": dup, "private_imports": private_imports,
    }


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    m = measure(Path(args[0]).resolve() / "jcausal" if args else ROOT)
    if "--json" in sys.argv:
        print(json.dumps(m, indent=1))
        return
    print(f"lines {m['lines']}, functions {m['functions']}, over 60 lines {len(m['over_60'])}, "
          f"over 80 lines {len(m['over_80'])}, public with >12 params {len(m['public_over_12'])}, "
          f"public with >=10 params {len(m['widest_public'])}")
    print("longest:", ", ".join(f"{n} {k}" for n, k in m["over_60"][:8]))
    print("widest:", ", ".join(f"{n} {k}" for n, k in m["widest_public"][:8]))
    print("exports:", ", ".join(f"{k} {v}" for k, v in sorted(m["exports"].items())))
    print("names defined in more than one package:", ", ".join(
        f"{k} ({', '.join(v)})" for k, v in sorted(m["duplicated_names"].items())))
    print(f"private imports across modules: {len(m['private_imports'])}")
    for p in m["private_imports"]:
        print("  ", p)


if __name__ == "__main__":
    main()
