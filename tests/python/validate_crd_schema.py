"""Validates GroupBanPolicy objects against the CRD's openAPIV3Schema.

Usage: validate_crd_schema.py CRD_YAML OBJECTS_JSON
OBJECTS_JSON is a kubectl-style List; every item must validate. Then
variants of the first item that break a schema rule must each be rejected.
Prints a JSON report; exits 1 if anything is unexpected.

OpenAPI's `nullable: true` becomes a JSON-schema "null" type; the
x-kubernetes-* extensions have no JSON-schema meaning and are dropped
(so `x-kubernetes-list-type: set`, i.e. no duplicates, is enforced by the
API server and by the operator's own validation, not here).
"""
import copy
import json
import sys

import jsonschema
import yaml


def to_json_schema(node):
    if isinstance(node, dict):
        out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if out.pop("nullable", False) and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [to_json_schema(v) for v in node]
    return node


def crd_validator(path):
    """A JSON-schema validator for the CRD at `path`."""
    crd = yaml.safe_load(open(path))
    (version,) = crd["spec"]["versions"]
    return jsonschema.Draft7Validator(to_json_schema(version["schema"]["openAPIV3Schema"]))


def main():
    validator = crd_validator(sys.argv[1])
    items = json.load(open(sys.argv[2]))["items"]

    report = {"valid": [], "unexpected": []}
    for item in items:
        errors = [e.message for e in validator.iter_errors(item)]
        name = item["metadata"]["name"]
        (report["unexpected"] if errors else report["valid"]).append({"name": name, "errors": errors})


    def variant(change):
        obj = copy.deepcopy(items[0])
        change(obj)
        return obj


    broken = {
        "groupId too long": variant(lambda o: o["spec"].update(groupId="g" * 49)),
        "groupId empty": variant(lambda o: o["spec"].update(groupId="")),
        "groupId not printable ASCII": variant(lambda o: o["spec"].update(groupId="caf\u00e9")),
        "groupId missing": variant(lambda o: o["spec"].pop("groupId")),
        "member too long": variant(lambda o: o["spec"].update(unbannedMembers=["m" * 33])),
        "member empty": variant(lambda o: o["spec"].update(unbannedMembers=[""])),
        "member with a tab": variant(lambda o: o["spec"].update(unbannedMembers=["a\tb"])),
        "5001 members": variant(lambda o: o["spec"].update(unbannedMembers=[f"m{i}" for i in range(5001)])),
        "suspend not a boolean": variant(lambda o: o["spec"].update(suspend="yes")),
        "secret ref without name": variant(lambda o: o["spec"].update(credentialsSecretRef={})),
        "summary count negative": variant(lambda o: o["status"]["summary"].update(desired=-1)),
    }
    report["rejected"] = []
    for label, obj in broken.items():
        if validator.is_valid(obj):
            report["unexpected"].append({"name": label, "errors": ["accepted, should be rejected"]})
        else:
            report["rejected"].append(label)

    print(json.dumps(report))
    sys.exit(1 if report["unexpected"] else 0)


if __name__ == "__main__":
    main()
