"""Validates every GroupBanPolicy in the given YAML files against the CRD.

Usage: validate_examples.py CRD_YAML FILE...
Prints a JSON report {"valid": [...], "invalid": [...]}; exits 1 if any
policy is invalid. Other kinds are skipped.
"""
import json
import sys

import yaml

from validate_crd_schema import crd_validator

validator = crd_validator(sys.argv[1])
report = {"valid": [], "invalid": []}
for path in sys.argv[2:]:
    for document in yaml.safe_load_all(open(path)):
        if not document or document.get("kind") != "GroupBanPolicy":
            continue
        errors = [e.message for e in validator.iter_errors(document)]
        name = f"{path}:{document['metadata']['name']}"
        (report["invalid"] if errors else report["valid"]).append({"name": name, "errors": errors})
print(json.dumps(report))
sys.exit(1 if report["invalid"] else 0)
