#!/bin/sh
# Refreshes the vendored Swagger UI and ReDoc that /docs and /redoc serve (so both work with no
# network). Set the versions below, then, from the repository root:
#
#   sh app/api/docs_assets/refresh.sh
#
# It takes each package from the npm registry with `npm pack` (which checks the tarball against
# the registry's sha512 integrity), copies the files the pages load with their licences, and
# rewrites VERSIONS. Check /docs and /redoc (tests/api/test_docs.py renders both), then commit.
set -eu

# swagger-ui-dist: Swagger UI's prebuilt bundle (what FastAPI's /docs loads, major 5).
SWAGGER_UI=5.35.0
# redoc's standalone bundle, major 2 (what FastAPI's /redoc loads; 3.x is 2.3 MB, twice the size).
REDOC=2.5.4

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "swagger-ui-dist@$SWAGGER_UI" "redoc@$REDOC" > /dev/null
mkdir swagger-ui redoc
tar -xzf "swagger-ui-dist-$SWAGGER_UI.tgz" -C swagger-ui
tar -xzf "redoc-$REDOC.tgz" -C redoc

mkdir -p "$here/swagger-ui" "$here/redoc"
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css \
    favicon-32x32.png LICENSE NOTICE; do
    cp "swagger-ui/package/$file" "$here/swagger-ui/$file"
done
cp redoc/package/bundles/redoc.standalone.js redoc/package/bundles/redoc.standalone.js.LICENSE.txt \
    redoc/package/LICENSE "$here/redoc/"

{
    echo "# The vendored documentation assets (written by refresh.sh; do not edit by hand)."
    echo "# package version npm-integrity"
    echo "swagger-ui-dist $SWAGGER_UI $(npm view "swagger-ui-dist@$SWAGGER_UI" dist.integrity)"
    echo "redoc $REDOC $(npm view "redoc@$REDOC" dist.integrity)"
} > "$here/VERSIONS"
echo "vendored swagger-ui-dist $SWAGGER_UI and redoc $REDOC into $here"
