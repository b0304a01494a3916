#!/usr/bin/env python3
"""The image's SBOM: cargo-cyclonedx's CycloneDX document of the Rust crates
in the binary, plus the Debian packages of the root (from the control files
assemble-root recorded), stamped with the image's digest and the build's
time instead of the moment and a random serial, so it is reproducible too.

    sbom.py CARGO_SBOM STATUS_DIR --image-digest D --version V --created T
"""
import argparse
import json
import os
import sys
import uuid


def control_fields(path):
    """The fields of one dpkg control file (continuation lines dropped)."""
    fields = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cargo_sbom")
    parser.add_argument("status_dir")
    parser.add_argument("--image-digest", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--created", required=True)
    args = parser.parse_args()

    with open(args.cargo_sbom, encoding="utf-8") as f:
        text = f.read()
    # cargo-cyclonedx names the crate by its checkout's path: a build
    # machine's layout, and different in every clone.
    checkout = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".."))
    text = text.replace("path+file://" + checkout, "path+file:///build")
    bom = json.loads(text)

    bom["serialNumber"] = "urn:uuid:%s" % uuid.uuid5(uuid.NAMESPACE_URL, "groupban-operator@" + args.image_digest)
    metadata = bom.setdefault("metadata", {})
    metadata["timestamp"] = args.created
    metadata.setdefault("properties", []).append({"name": "oci:image:digest", "value": args.image_digest})

    for name in sorted(os.listdir(args.status_dir)):
        fields = control_fields(os.path.join(args.status_dir, name))
        package, version, arch = fields.get("Package"), fields.get("Version"), fields.get("Architecture", "all")
        if not package or not version:
            sys.exit("no Package or Version in %s" % name)
        purl = "pkg:deb/debian/%s@%s?arch=%s&distro=debian-12" % (package, version, arch)
        bom["components"].append({
            "type": "library",
            "bom-ref": purl,
            "name": package,
            "version": version,
            "description": fields.get("Description", ""),
            "purl": purl,
            "properties": [{"name": "source", "value": "Debian 12 package in the image's root"}],
        })
    json.dump(bom, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
