#!/bin/sh
# manifest-hash.sh ARTIFACT < manifest.json: prints the hex SHA-256 of ARTIFACT's whole file,
# the baseline's seed-003 way (grep, no JSON parser, no signature check). Sourced by the
# baseline /init, and run on the host by bench-smoke against make release's manifest, so a
# manifest change that breaks it fails make test (manifest v2's `chunks` list holds
# "sha256:..." strings too: only the `hash` key is the file's).
tr -d ' \n' | grep -o "\"$1\":{[^}]*}" | grep -o '"hash":"sha256:[0-9a-f]*"' | cut -d: -f3 | tr -d '"'
